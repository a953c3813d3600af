"""TEST DOUBLE of brave_jax.models.brave: a tiny BatchNorm MLP with the same init/loss signature.

Lets the train/ tests run in a second on CPU and without the real model. It
keeps the properties the training code relies on: Haiku params *and* state,
cross-replica BatchNorm on `axis_name`, a 'predictor' module (for the LR
multiplier), and `loss(params, state, rng, batch) -> (loss, (state, metrics))`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Iterator

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

FEATURES = 6
PER_EXAMPLE_SHAPE = {'narrow': {'video': (2, 4, 4, 3)}, 'broad': {'audio': (4, 3)}}


@dataclasses.dataclass(frozen=True)
class TestDoubleModel:
  """Quacks like brave.build_model(...)'s result for init and loss."""
  init: Callable[..., Any]
  loss: Callable[..., Any]


def build_test_double_model(axis_name: str | None = 'i') -> TestDoubleModel:
  """A two-view regression model with BN + projector/predictor, shaped like BraVe's heads."""

  def embed(x_BxF, name):
    with hk.experimental.name_scope(name):
      h = hk.Linear(8, name='linear')(x_BxF)
      h = hk.BatchNorm(True, True, decay_rate=0.9, cross_replica_axis=axis_name,
                       name='batch_norm')(h, is_training=True)
      return jax.nn.relu(h)

  def forward(batch):
    narrow_BxF = batch['narrow']['video'].reshape(batch['narrow']['video'].shape[0], -1)
    broad_BxF = batch['broad']['audio'].reshape(batch['broad']['audio'].shape[0], -1)
    n_BxD = embed(narrow_BxF, 'narrow_video_embedding')
    b_BxD = embed(broad_BxF, 'broad_audio_embedding')
    projector = hk.Linear(4, name='projector')
    predictor = hk.Linear(4, name='predictor')
    pred_n_BxK = predictor(projector(n_BxD))
    target_b_BxK = jax.lax.stop_gradient(projector(b_BxD))
    pred_b_BxK = predictor(projector(b_BxD))
    target_n_BxK = jax.lax.stop_gradient(projector(n_BxD))
    l1 = jnp.mean(jnp.sum((pred_n_BxK - target_b_BxK) ** 2, -1))
    l2 = jnp.mean(jnp.sum((pred_b_BxK - target_n_BxK) ** 2, -1))
    return l1 + l2, {'loss/narrow_to_audio': l1, 'loss/audio_to_narrow': l2}

  transformed = hk.transform_with_state(forward)

  def loss(params, state, rng, batch):
    (total, metrics), new_state = transformed.apply(params, state, rng, batch)
    metrics = dict(metrics, loss=total)
    return total, (new_state, metrics)

  return TestDoubleModel(init=transformed.init, loss=loss)


def make_view_draws(rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
  """Per-clip draws shaped as the pipeline ships them with augment_on='device' (augment_device
  ViewDraws, a leading [N]), drawn in numpy: the step only needs their shapes and dtypes."""
  def coins(p):
    return rng.uniform(size=batch_size) < p

  def uniform(lo, hi):
    return rng.uniform(lo, hi, size=batch_size).astype(np.float32)
  return dict(blur=coins(1.0), sigma=uniform(0.1, 2.0), flip=coins(0.5), jitter=coins(0.8),
              brightness=uniform(-0.125, 0.125), saturation=uniform(0.6, 1.4),
              contrast=uniform(0.6, 1.4), hue=uniform(-0.2, 0.2), gray=coins(0.2))


def make_global_batch(step: int, batch_size: int, seed: int = 0,
                      nan: bool = False, draws: bool = False,
                      audio_samples: int | None = None) -> dict[str, Any]:
  """A flat [N, ...] batch that is a pure function of (seed, step), like the real pipeline's;
  `draws`: the narrow video as pixels in [0, 255] plus its draws, and with `audio_samples`
  (pipeline.audio_num_samples of the config) the broad audio as waveforms [N, audio_samples]:
  as the pretraining pipeline ships them for the device (config.data.augment_on='device')."""
  rng = np.random.default_rng([seed, step])
  batch = jax.tree.map(
      lambda shape: rng.uniform(size=(batch_size,) + shape).astype(np.float32),
      PER_EXAMPLE_SHAPE, is_leaf=lambda x: isinstance(x, tuple))
  if nan:
    batch['narrow']['video'][0, 0, 0, 0, 0] = np.nan
  batch['label'] = np.full((batch_size,), -1, np.int32)
  if draws:
    batch['narrow']['video'] *= 255.0
    batch['draws'] = {'narrow': {'video': make_view_draws(rng, batch_size)}}
  if audio_samples is not None:
    batch['broad']['audio'] = rng.uniform(-1.0, 1.0, (batch_size, audio_samples)).astype(
        np.float32)
  return batch


def make_batch_iterator_fn(batch_size: int, num_devices: int, seed: int = 0,
                           nan_at_step: int | None = None,
                           draws: bool = False,
                           audio_samples: int | None = None) -> Callable[[int], Iterator[Any]]:
  """make_batch_iterator(start_step) for train.loop.train: in-memory, resumable at any step."""
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  def make(start_step: int) -> Iterator[Any]:
    s = start_step
    while True:
      yield step_lib.shard_batch(
          make_global_batch(s, batch_size, seed, nan=(s == nan_at_step), draws=draws,
                            audio_samples=audio_samples),
          num_devices)
      s += 1

  return make


def tree_digest(tree) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes: equal digests = identical trees."""
  h = hashlib.sha256()
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    x = np.ascontiguousarray(np.asarray(x))
    h.update(f'{jax.tree_util.keystr(path)}|{x.dtype}|{x.shape}'.encode())
    h.update(x.tobytes())
  return h.hexdigest()
