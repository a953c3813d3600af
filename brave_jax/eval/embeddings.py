"""Frozen-backbone embeddings of an eval iterator, batched on every local device, saved as .npz.

Embedding is the slow part of linear evaluation; the SVM fit is seconds. So
the forward pass is compiled once (every batch is padded to one shape, split
over local devices with pmap when there are several) and the features can be
saved, letting `brave_jax.evaluate --embeddings=...` re-fit without a device.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from brave_jax.train import step as step_lib

EmbedFn = Callable[..., Any]
"""`video -> feats_BxD`, or `(variables, video) -> feats_BxD` when `variables=` is given."""

SPLIT_KEYS = ('feats', 'labels', 'video_index')
_METADATA_KEY = '__metadata__'


def _pad_rows(x_NxR: np.ndarray, rows: int) -> np.ndarray:
  """Pads the leading axis to `rows` by repeating the last row (stays a valid input)."""
  if len(x_NxR) == rows:
    return x_NxR
  pad = np.repeat(x_NxR[-1:], rows - len(x_NxR), axis=0)
  return np.concatenate([x_NxR, pad], axis=0)


@functools.lru_cache(maxsize=8)
def _make_forward(embed_fn: EmbedFn, has_variables: bool, num_devices: int) -> Callable:
  """One compiled `(variables, *inputs) -> feats` over `num_devices` devices (pmap) or one (jit).

  Cached per embed_fn, so the train and test splits of one evaluation share a compilation.
  """
  def forward(variables, *inputs):
    feats = embed_fn(variables, *inputs) if has_variables else embed_fn(*inputs)
    return jax.tree.map(lambda f: jnp.asarray(f, jnp.float32), feats)
  if num_devices == 1:
    return jax.jit(forward)
  return jax.pmap(forward, axis_name='i', devices=jax.local_devices()[:num_devices])


def compute_embeddings(embed_fn: EmbedFn, iterator: Iterable[Mapping[str, np.ndarray]], *,
                       num_devices: int | None = None, variables: Any = None,
                       input_key: str | Sequence[str] = 'video', pad_to: int = 0,
                       total: int | None = None, desc: str = 'embedding',
                       extra_keys: Sequence[str] = (),
                       show_progress: bool = True) -> dict[str, np.ndarray]:
  """Runs `embed_fn` over every batch; returns {'feats' [N, D] f32, 'labels' [N], 'video_index' [N]}.

  The one embedding loop of every protocol and the kNN monitor. Several
  `input_key`s are passed to `embed_fn` in that order (e.g. retrieval's video
  and audio); an `embed_fn` that returns a dict of arrays gets one output
  entry per key instead of 'feats'. `extra_keys` are further batch fields
  returned alongside (e.g. 'clip_id', multi-hot 'labels' of multi-label data,
  which then replace the label column).

  Batches are padded to the largest batch seen, at least `pad_to` (the
  iterator's batch size), rounded up to a multiple of the device count, so the
  function compiles once; padded rows are dropped. Pass
  the network weights as `variables` (replicated here, not baked into the
  compiled program as constants) and `embed_fn(variables, x)` gets them.
  `num_devices` defaults to all local devices; 1 means a plain jit.
  `total` (batches) only sizes the progress bar.
  """
  num_devices = jax.local_device_count() if num_devices is None else int(num_devices)
  if not 1 <= num_devices <= jax.local_device_count():
    raise ValueError(f'num_devices={num_devices}: need 1..{jax.local_device_count()} '
                     '(jax.local_device_count())')
  has_variables = variables is not None
  forward = _make_forward(embed_fn, has_variables, num_devices)
  if has_variables:
    if num_devices > 1:
      variables = step_lib.replicate(variables, jax.local_devices()[:num_devices])
    else:
      variables = jax.device_put(variables)

  feats, labels, video_index = [], [], []
  extras: dict[str, list[np.ndarray]] = {k: [] for k in extra_keys}
  pending = None  # (device feats, rows to keep): read one batch late so the device stays busy.
  padded_rows = -(-int(pad_to) // num_devices) * num_devices
  num_clips = 0

  input_keys = (input_key,) if isinstance(input_key, str) else tuple(input_key)

  def collect(item):
    out, rows = item

    def keep(x):
      x = np.asarray(x)
      return x.reshape((-1,) + x.shape[2:])[:rows] if num_devices > 1 else x[:rows]
    feats.append(jax.tree.map(keep, out))

  with tqdm.tqdm(total=total, desc=desc, unit='batch', dynamic_ncols=True,
                 disable=not show_progress) as bar:
    for batch in iterator:
      for key in input_keys:
        if key not in batch:
          raise KeyError(f'compute_embeddings: batch has no {key!r} (keys {sorted(batch)}); '
                         'the eval iterator must yield it')
      xs = [np.asarray(batch[key]) for key in input_keys]
      rows = len(xs[0])
      if rows == 0:
        continue
      padded_rows = max(padded_rows, -(-rows // num_devices) * num_devices)
      xs = [_pad_rows(x, padded_rows) for x in xs]
      if num_devices > 1:
        xs = [x.reshape((num_devices, padded_rows // num_devices) + x.shape[1:]) for x in xs]
      if not num_clips and pending is None and show_progress:
        bar.write(f'{desc}: compiling the embedding function (XLA; up to minutes on CPU)...')
      out = forward(variables, *xs)
      if pending is not None:
        collect(pending)
      pending = (out, rows)
      labels.append(np.asarray(batch.get('label', np.full(rows, -1))).reshape(-1)[:rows])
      for k in extra_keys:
        if k not in batch:
          raise KeyError(f'compute_embeddings: batch has no {k!r} (keys {sorted(batch)})')
        extras[k].append(np.asarray(batch[k])[:rows])
      if 'video_index' in batch:
        video_index.append(np.asarray(batch['video_index']).reshape(-1)[:rows])
      else:  # One clip per video.
        video_index.append(np.arange(num_clips, num_clips + rows))
      num_clips += rows
      bar.update(1)
      bar.set_postfix(clips=num_clips)
    if pending is not None:
      collect(pending)

  if not feats:
    raise ValueError('compute_embeddings: the iterator yielded no clips; check the shards')
  if isinstance(feats[0], dict):
    out = {k: np.concatenate([f[k] for f in feats]).astype(np.float32) for k in feats[0]}
  else:
    out = {'feats': np.concatenate(feats).astype(np.float32)}
  out.update({
      'labels': np.concatenate(labels).astype(np.int64),
      'video_index': np.concatenate(video_index).astype(np.int64),
  })
  out.update({k: np.concatenate(v) for k, v in extras.items()})
  return out


def average_per_video(values_NxD: np.ndarray,
                      video_index_N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(videos_V ascending, float64 mean of each video's rows [V, D], first row of each video [V]).

  Every protocol that scores a video from several crops, windows or clips
  averages them here, so a video counts once whatever its number of rows.
  """
  video_index_N = np.asarray(video_index_N).reshape(-1)
  values_NxD = np.asarray(values_NxD)
  videos_V, first_V, group_N, counts_V = np.unique(
      video_index_N, return_index=True, return_inverse=True, return_counts=True)
  sums_VxD = np.zeros((len(videos_V),) + values_NxD.shape[1:], np.float64)
  np.add.at(sums_VxD, group_N, values_NxD.astype(np.float64))
  return videos_V, sums_VxD / counts_V.reshape((-1,) + (1,) * (values_NxD.ndim - 1)), first_V


def save_embeddings(path: str, splits: Mapping[str, Mapping[str, np.ndarray]],
                    metadata: Mapping[str, Any] | None = None) -> str:
  """Writes {'train': embeddings, 'test': embeddings} (+ JSON metadata) to one .npz, atomically."""
  arrays = {}
  for split, emb in splits.items():
    for key in SPLIT_KEYS:
      if key not in emb:
        raise KeyError(f'save_embeddings: split {split!r} lacks {key!r}')
      arrays[f'{split}/{key}'] = np.asarray(emb[key])
  arrays[_METADATA_KEY] = np.asarray(json.dumps(dict(metadata or {})))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


def load_embeddings(path: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
  """Reads what `save_embeddings` wrote: ({split: {feats, labels, video_index}}, metadata)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'embeddings file {path!r} not found (write one with --save_embeddings)')
  splits: dict[str, dict[str, np.ndarray]] = {}
  metadata: dict[str, Any] = {}
  with np.load(path, allow_pickle=False) as data:
    for name in data.files:
      if name == _METADATA_KEY:
        metadata = json.loads(str(data[name]))
        continue
      split, _, key = name.partition('/')
      splits.setdefault(split, {})[key] = data[name]
  for split, emb in splits.items():
    missing = [k for k in SPLIT_KEYS if k not in emb]
    if missing:
      raise ValueError(f'{path}: split {split!r} lacks {missing}; was it written by save_embeddings?')
  return splits, metadata
