"""Published BraVe checkpoints (`.npy` pickled dicts): load them into our model, and write ours.

Our Haiku module names equal the published ones, so loading is a shape check and
no renaming: the model is rebuilt from the checkpoint's `config` dict (and, for
what the dict does not say, from parameter shapes), its parameter tree is traced
with `jax.eval_shape`, and every path and shape must match.

  m = published.load('brave_va.npy')
  feats_BxD = m.embed_video(video_BxTxHxWx3)  # float32 in [0, 1]
  feats_BxD = m.embed_audio(log_mel_BxFxM)
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
from typing import Any, Callable, Mapping, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from brave_jax import config_base
from brave_jax import errors
from brave_jax import files
from brave_jax.models import brave
from brave_jax.models import tsm_resnet

IGNORED_ROOTS = ('shared_project_1',)  # In published checkpoints, never used by their loss.
REQUIRED_KEYS = ('params', 'state', 'config')
# The fields of the published `BraveConfig` dataclass: the published code builds it with
# `BraveConfig(**checkpoint['config'])`, so a config dict with any other key cannot be loaded there.
PUBLISHED_CONFIG_FIELDS = (
    'include_video_in_broad_view', 'include_audio_in_broad_view', 'num_frames_narrow',
    'image_size_narrow', 'step_broad', 'num_frames_broad', 'image_size_broad', 'step_narrow',
    'output_dims', 'tsm_resnet_width_multiplier', 'num_spectrogram_bins', 'fft_step',
    'dataset_shards', 'input_video_sample_rate', 'input_audio_sample_rate')
# Top-level key of our own settings the published config cannot hold (e.g. `bn_eps`); the
# published loader reads only 'params', 'state' and 'config', so it never sees this one.
EXTRAS_KEY = 'brave_jax'


class PublishedCheckpointError(errors.RunError, ValueError):
  """A checkpoint file does not hold a model brave_jax can rebuild (printed as one line by CLIs)."""


@dataclasses.dataclass(frozen=True)
class PublishedModel:
  """A loaded checkpoint: its arrays, the model they fit, and jitted inference functions."""
  path: str
  params: hk.Params
  state: hk.State
  config: dict[str, Any]  # The checkpoint's own config dict, as stored.
  model_config: ml_collections.ConfigDict  # Our config.model that rebuilds it.
  broad_modalities: tuple[str, ...]
  model: brave.Model = dataclasses.field(repr=False)
  _embed_fns: dict[str, Callable[..., jax.Array]] = dataclasses.field(
      repr=False, default_factory=dict)

  def embed_video(self, video_BxTxHxWx3: Any) -> jax.Array:
    """Narrow-backbone features of RGB clips, float32 in [0, 1] (inference-mode batch norm)."""
    video = _as_float_input(video_BxTxHxWx3, 'video', self.path)
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f'embed_video wants RGB clips [B, T, H, W, 3], got shape {video.shape}')
    return self._embed('narrow', self.model.embed_narrow)(self.params, self.state, video)

  def embed_audio(self, log_mel_BxFxM: Any) -> jax.Array:
    """Broad audio-backbone features of log-mel spectrograms [B, frames, mel_bins]."""
    return self.embed_broad('audio', log_mel_BxFxM)

  def embed_broad(self, modality: str, x: Any) -> jax.Array:
    """Features of one broad backbone ('video', 'rc', 'flow' or 'audio')."""
    if modality not in self.model.embed_broad:
      raise ValueError(f'{self.path} has no broad_{modality}_embedding backbone; it was trained '
                       f'with broad modalities {self.broad_modalities}')
    x = _as_float_input(x, modality, self.path)
    return self._embed(modality, self.model.embed_broad[modality])(self.params, self.state, x)

  def _embed(self, key: str, fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    if key not in self._embed_fns:
      self._embed_fns[key] = jax.jit(fn)
    return self._embed_fns[key]


def _as_float_input(x: Any, what: str, path: str) -> np.ndarray | jax.Array:
  if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer):
    raise ValueError(f'{path}: {what} is {x.dtype}; the published model takes float32 '
                     '(video scaled to [0, 1]); convert with x.astype(np.float32) / 255')
  return jnp.asarray(x, jnp.float32)


def _flatten(tree: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  return {f'{module}/{name}': value for module, leaves in tree.items()
          for name, value in leaves.items()}


def _drop_ignored(tree: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  return {module: dict(leaves) for module, leaves in tree.items()
          if module.split('/')[0] not in IGNORED_ROOTS}


def _roots(tree: Mapping[str, Any]) -> set[str]:
  return {module.split('/')[0] for module in tree}


def _shape(flat: Mapping[str, Any], path: str, where: str) -> tuple[int, ...]:
  if path not in flat:
    raise PublishedCheckpointError(f'{where}: parameter {path} is missing; it is needed to '
                                   'rebuild the model (is this a BraVe checkpoint?)')
  return tuple(np.shape(flat[path]))


def _infer_depth(flat: Mapping[str, Any], unit_re: str, where: str) -> int:
  """Depth from the blocks per unit and whether blocks have a third conv (bottleneck)."""
  blocks: dict[int, int] = {}
  bottleneck = False
  for path in flat:
    match = re.match(unit_re, path)
    if match:
      unit, block = int(match.group(1)), int(match.group(2))
      blocks[unit] = max(blocks.get(unit, 0), block + 1)
      bottleneck |= '/conv_2/' in path
  counts = tuple(blocks[u] for u in sorted(blocks))
  for depth, spec in tsm_resnet.DEPTHS.items():
    if spec.blocks_per_unit == counts and spec.bottleneck == bottleneck:
      return depth
  raise PublishedCheckpointError(
      f'{where}: parameters matching {unit_re!r} have blocks per unit {counts} '
      f'({"bottleneck" if bottleneck else "basic"} blocks), which is no supported ResNet depth '
      f'({sorted(tsm_resnet.DEPTHS)})')


def _infer_width(stem_channels: int, hint: float | None) -> float:
  """Width multiplier from the stem's channels; prefers the config's value when it agrees."""
  if hint is not None and tsm_resnet.scaled(tsm_resnet.STEM_CHANNELS, float(hint)) == stem_channels:
    return float(hint)
  return stem_channels / tsm_resnet.STEM_CHANNELS


def _tsm_backbone(flat: Mapping[str, Any], root: str, width: float | None,
                  where: str) -> ml_collections.ConfigDict:
  """Depth from the block structure; width from the config when given, else from the stem."""
  stem = _shape(flat, f'{root}/TSMResNetV2/tsm_resnet_stem/w', where)
  depth = _infer_depth(flat, rf'^{root}/TSMResNetV2/tsm_resnet_unit_(\d+)/block_(\d+)/', where)
  if width is None:
    width = _infer_width(stem[-1], None)
  elif tsm_resnet.scaled(tsm_resnet.STEM_CHANNELS, float(width)) != stem[-1]:
    raise PublishedCheckpointError(
        f'{where}: parameter {root}/TSMResNetV2/tsm_resnet_stem/w has shape {stem}, but the '
        f"config's tsm_resnet_width_multiplier={width} needs "
        f'{tsm_resnet.scaled(tsm_resnet.STEM_CHANNELS, float(width))} output channels')
  return ml_collections.ConfigDict(dict(depth=depth, width_multiplier=width))


def _broad_modalities(config: Mapping[str, Any], roots: set[str]) -> tuple[str, ...]:
  flags = {'video': config.get('include_video_in_broad_view'),
           'audio': config.get('include_audio_in_broad_view')}
  modalities = []
  for m in config_base.BROAD_MODALITIES:
    flag = flags.get(m)
    present = brave.embedding_name('broad', m) in roots if flag is None else bool(flag)
    if present:
      modalities.append(m)
  return tuple(modalities)


def model_config_from_checkpoint(
    params: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any],
    where: str = 'checkpoint', extras: Mapping[str, Any] | None = None,
) -> tuple[ml_collections.ConfigDict, tuple[str, ...]]:
  """(config.model, broad modalities) that rebuild a published checkpoint's model.

  `extras` (the file's EXTRAS_KEY dict, written by `save`) may set `bn_eps`; a
  published file has none and gets the published 1e-5.
  """
  flat = _flatten(params)
  roots = _roots(params)
  modalities = _broad_modalities(config, roots)
  if not modalities:
    raise PublishedCheckpointError(
        f'{where}: no broad view: the config sets neither include_video_in_broad_view nor '
        f'include_audio_in_broad_view, and no broad_*_embedding parameters exist (roots: '
        f'{sorted(roots)})')
  mc = config_base.base_config().model
  width = config.get('tsm_resnet_width_multiplier')
  mc.narrow_backbone = _tsm_backbone(flat, 'narrow_video_embedding', width, where)
  for m in ('video', 'rc', 'flow'):
    root = brave.embedding_name('broad', m)
    if m in modalities and root in roots:
      # Published files use one width for both video backbones; ours may differ, so the broad
      # one takes the config's width only where its stem agrees.
      stem = _shape(flat, f'{root}/TSMResNetV2/tsm_resnet_stem/w', where)
      mc.broad_video_backbone = _tsm_backbone(flat, root, _infer_width(stem[-1], width), where)
      break
  if 'audio' in modalities and 'broad_audio_embedding' in roots:
    stem = _shape(flat, 'broad_audio_embedding/res_net_v2/~/initial_conv/w', where)
    mc.audio_backbone.depth = _infer_depth(
        flat, r'^broad_audio_embedding/res_net_v2/~/block_group_(\d+)/block_(\d+)/', where)
    mc.audio_backbone.width_multiplier = _infer_width(stem[-1], None)
    if not tsm_resnet.depth_spec(mc.audio_backbone.depth).bottleneck:  # Ours: depth 18/34.
      conv_0 = _shape(flat, 'broad_audio_embedding/res_net_v2/~/block_group_0/block_0/~/conv_0/w',
                      where)
      mc.audio_backbone.basic_block = 'published' if conv_0[0] == 1 else 'two_3x3'
  mc.shared_head = 'shared_project' in roots
  head = 'shared_project' if mc.shared_head else 'narrow_video_project'
  mc.hidden_dim = _shape(flat, f'{head}/projector/linear/w', where)[-1]
  mc.projection_dim = int(config.get('output_dims')
                          or _shape(flat, f'{head}/projector/linear_1/w', where)[-1])
  # Files written before `bn_eps` moved out of the published config keep it there.
  mc.bn_eps = float(dict(extras or {}).get('bn_eps', config.get('bn_eps', mc.bn_eps)))
  return mc, modalities


def _shape_batch(modalities: Sequence[str], mel_bins: int) -> dict[str, Any]:
  """Smallest batch that traces the model: parameter shapes do not depend on clip sizes."""
  video = jax.ShapeDtypeStruct((1, 2, 32, 32, 3), jnp.float32)
  broad = {m: (jax.ShapeDtypeStruct((1, 32, mel_bins), jnp.float32) if m == 'audio' else
               jax.ShapeDtypeStruct((1, 2, 32, 32, brave.INPUT_CHANNELS[m]), jnp.float32))
           for m in modalities}
  return {'narrow': {'video': video}, 'broad': broad}


def _check_paths(kind: str, expected: Mapping[str, Any], found: Mapping[str, Any],
                 where: str, described: str) -> None:
  exp, got = _flatten(expected), _flatten(found)
  for path in sorted(exp):
    if path not in got:
      raise PublishedCheckpointError(
          f'{where}: {kind} {path} with shape {tuple(exp[path].shape)} is missing; {described}')
    if tuple(np.shape(got[path])) != tuple(exp[path].shape):
      raise PublishedCheckpointError(
          f'{where}: {kind} {path} has shape {tuple(np.shape(got[path]))}, the model expects '
          f'{tuple(exp[path].shape)}; {described}')
  extra = sorted(set(got) - set(exp))
  if extra:
    raise PublishedCheckpointError(
        f'{where}: unexpected {kind} {extra[0]} (and {len(extra) - 1} more) that the rebuilt model '
        f'does not use; {described}')


def _describe(mc: ml_collections.ConfigDict, modalities: Sequence[str]) -> str:
  return (f'rebuilt model: narrow TSM-ResNet-{mc.narrow_backbone.depth} '
          f'x{mc.narrow_backbone.width_multiplier}, broad {tuple(modalities)}, '
          f'{"shared" if mc.shared_head else "per-view"} heads {mc.hidden_dim}->'
          f'{mc.projection_dim}. Was the file written for another model?')


def _cast_like(tree: Mapping[str, Mapping[str, Any]], like: Mapping[str, Mapping[str, Any]]):
  return {module: {name: jnp.asarray(np.asarray(value), like[module][name].dtype)
                   for name, value in leaves.items()}
          for module, leaves in tree.items()}


def load(path: str) -> PublishedModel:
  """Reads a published-format `.npy`; raises PublishedCheckpointError naming the first bad path."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'published checkpoint {path!r} not found')
  try:
    raw = np.load(path, allow_pickle=True).item()
  except (ValueError, OSError, EOFError, AttributeError, ImportError, pickle.UnpicklingError) as e:
    raise PublishedCheckpointError(
        f'{path}: not a pickled-dict .npy checkpoint ({e}); expected np.save of a dict with keys '
        f'{REQUIRED_KEYS}') from e
  if not isinstance(raw, Mapping) or any(k not in raw for k in REQUIRED_KEYS):
    keys = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
    raise PublishedCheckpointError(
        f'{path}: holds {keys}, expected a dict with keys {REQUIRED_KEYS}')
  return from_arrays(raw['params'], raw['state'], raw['config'], where=path,
                     extras=raw.get(EXTRAS_KEY))


def from_arrays(params: Mapping[str, Mapping[str, Any]], state: Mapping[str, Mapping[str, Any]],
                config: Mapping[str, Any] | None, where: str = '<arrays>',
                extras: Mapping[str, Any] | None = None) -> PublishedModel:
  """Like `load`, for a checkpoint's contents already in memory; `where` names it in errors."""
  config = dict(config or {})
  params, state = _drop_ignored(params), _drop_ignored(state)
  mc, modalities = model_config_from_checkpoint(params, config, where=where, extras=extras)
  described = _describe(mc, modalities)
  try:
    model = brave.build_model(mc, modalities, axis_name=None)
  except config_base.ConfigError as e:
    raise PublishedCheckpointError(f'{where}: {e}; {described}') from e
  batch = _shape_batch(modalities, int(config.get('num_spectrogram_bins', 80)))
  expected_params, expected_state = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
  _check_paths('parameter', expected_params, params, where, described)
  _check_paths('state', expected_state, state, where, described)
  return PublishedModel(path=where, params=_cast_like(params, expected_params),
                        state=_cast_like(state, expected_state), config=config, model_config=mc,
                        broad_modalities=modalities, model=model)


def published_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The published `config` dict for one of our run configs: exactly PUBLISHED_CONFIG_FIELDS."""
  d, m = config.data, config.model
  return dict(
      image_size_narrow=d.narrow.image_size, num_frames_narrow=d.narrow.num_frames,
      step_narrow=d.narrow.frame_step, image_size_broad=d.broad.image_size,
      num_frames_broad=d.broad.num_frames, step_broad=d.broad.frame_step,
      include_video_in_broad_view='video' in d.broad_modalities,
      include_audio_in_broad_view='audio' in d.broad_modalities,
      output_dims=m.projection_dim,
      tsm_resnet_width_multiplier=m.narrow_backbone.width_multiplier,
      num_spectrogram_bins=d.audio.num_mel_bins, fft_step=d.audio.frame_step,
      input_video_sample_rate=d.video_fps, input_audio_sample_rate=d.audio_sample_rate,
      dataset_shards=d.train_shards)


def published_extras(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Our model settings the published config has no field for (stored under EXTRAS_KEY)."""
  return dict(bn_eps=config.model.bn_eps)


def save(path: str, params: hk.Params, state: hk.State, config: Mapping[str, Any],
         extras: Mapping[str, Any] | None = None) -> str:
  """Writes params/state/config as the published `.npy` pickled dict; returns `path`.

  `config` is the published-style dict (see `published_config`); a key the
  published `BraveConfig` lacks is refused, since the published code could not
  load the file. `extras` (see `published_extras`) go under the top-level
  EXTRAS_KEY, which the published loader never reads and `load` does.
  """
  unknown = sorted(set(config) - set(PUBLISHED_CONFIG_FIELDS))
  if unknown:
    raise ValueError(
        f'{path}: config keys {unknown} are not fields of the published BraveConfig, so the '
        f'published code could not load the file; pass them in `extras` instead (fields: '
        f'{PUBLISHED_CONFIG_FIELDS})')
  to_numpy = lambda tree: {module: {name: np.asarray(jax.device_get(v))
                                    for name, v in leaves.items()}
                           for module, leaves in tree.items()}
  payload = {'params': to_numpy(params), 'state': to_numpy(state), 'config': dict(config)}
  if extras:
    payload[EXTRAS_KEY] = dict(extras)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  buffer = io.BytesIO()  # np.save(path) would append '.npy' to other names.
  np.save(buffer, np.array(payload, dtype=object), allow_pickle=True)
  return files.write_atomic(path, buffer.getvalue())
