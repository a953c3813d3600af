"""BraVe: a narrow view and each broad view predict each other's projection.

`build_model` turns a model config into pure functions (Haiku
`transform_with_state`): `init`, the training `loss`, and inference-mode
`embed_narrow` / `embed_broad[modality]` for evaluation. Module names equal the
published checkpoints', so `brave_jax.published` loads them without renaming.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import jmp
import ml_collections

from brave_jax import config_base
from brave_jax.models import heads
from brave_jax.models import losses
from brave_jax.models import resnet_v2
from brave_jax.models import tsm_resnet

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]
EmbedFn = Callable[[hk.Params, hk.State, jax.Array], jax.Array]
ProjectFn = Callable[[hk.Params, hk.State, jax.Array], tuple[jax.Array, jax.Array]]

INPUT_CHANNELS = {'video': 3, 'rc': 3, 'flow': 2}  # Video-like modalities -> TSM input channels.


class Model(NamedTuple):
  """The pure functions training and evaluation need; see module docstring."""
  init: Callable[[jax.Array, Batch], tuple[hk.Params, hk.State]]
  loss: Callable[[hk.Params, hk.State, jax.Array, Batch],
                 tuple[jax.Array, tuple[hk.State, Metrics]]]
  embed_narrow: EmbedFn
  embed_broad: Mapping[str, EmbedFn]
  # Inference-mode head of each view ('narrow' and every broad modality): backbone features ->
  # (projection z, prediction h), the vectors the loss pairs (h of one view regresses z of the other).
  project: Mapping[str, ProjectFn]


def embedding_name(view: str, modality: str) -> str:
  """Backbone module root, e.g. 'narrow_video_embedding', 'broad_audio_embedding'."""
  return f'{view}_{modality}_embedding'


def backbone_output_dim(model_config: ml_collections.ConfigDict, view: str, modality: str) -> int:
  """Feature size of one view's backbone (2048*w at depth 50)."""
  cfg = _backbone_config(model_config, view, modality)
  return tsm_resnet.output_dim(cfg.depth, cfg.width_multiplier)


def _backbone_config(model_config: ml_collections.ConfigDict, view: str,
                     modality: str) -> ml_collections.ConfigDict:
  if view == 'narrow':
    return model_config.narrow_backbone
  return model_config.audio_backbone if modality == 'audio' else model_config.broad_video_backbone


class Embedding(hk.Module):
  """One view's module root (`<view>_<modality>_embedding`): checks the input, runs a backbone."""

  def __init__(self, model_config: ml_collections.ConfigDict, view: str, modality: str,
               axis_name: str | None):
    super().__init__(name=embedding_name(view, modality))
    self._config = _backbone_config(model_config, view, modality)
    self._modality = modality
    self._bn_config = dict(tsm_resnet.make_bn_config(model_config.bn_decay, model_config.bn_eps,
                                                     axis_name),
                           backward=model_config.get('bn_backward', 'analytic'))
    self._remat = bool(model_config.remat)

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    kwargs = dict(depth=self._config.depth, width_multiplier=self._config.width_multiplier,
                  bn_config=self._bn_config, remat=self._remat)
    if self._modality == 'audio':
      if x.ndim != 3:
        raise ValueError(f'{self.module_name}: audio must be a log-mel spectrogram '
                         f'[B, frames, mel_bins], got shape {x.shape}')
      return resnet_v2.ResNetV2(basic_block=self._config.get('basic_block', 'published'),
                                **kwargs)(x, is_training)
    channels = INPUT_CHANNELS[self._modality]
    if x.ndim != 5 or x.shape[-1] != channels:
      raise ValueError(f'{self.module_name}: {self._modality!r} must be [B, T, H, W, {channels}], '
                       f'got shape {x.shape}')
    return tsm_resnet.TSMResNetV2(**kwargs)(x, is_training)


@contextlib.contextmanager
def precision(compute_dtype: str) -> Iterator[None]:
  """bf16 backbones (f32 params, f32 outputs) with f32 batch norm; heads and loss stay f32."""
  if compute_dtype == 'float32':
    yield
    return
  if compute_dtype != 'bfloat16':
    raise config_base.ConfigError(
        f"config.model.compute_dtype: must be 'float32' or 'bfloat16', got {compute_dtype!r}")
  f32, bf16 = jnp.float32, jnp.bfloat16
  backbone_policy = jmp.Policy(param_dtype=f32, compute_dtype=bf16, output_dtype=f32)
  bn_policy = jmp.Policy(param_dtype=f32, compute_dtype=f32, output_dtype=bf16)
  with contextlib.ExitStack() as stack:
    for cls in (tsm_resnet.TSMResNetV2, resnet_v2.ResNetV2):
      stack.enter_context(hk.mixed_precision.push_policy(cls, backbone_policy))
    stack.enter_context(hk.mixed_precision.push_policy(tsm_resnet.BatchNorm, bn_policy))
    yield


def _view_input(batch: Batch, view: str, modality: str) -> jax.Array:
  try:
    return batch[view][modality]
  except (KeyError, TypeError):
    keys = {k: sorted(v) for k, v in batch.items() if isinstance(v, Mapping)}
    raise KeyError(f"batch has no [{view!r}][{modality!r}] array; the model was built for broad "
                   f'modalities that the batch lacks (batch keys: {keys})') from None


def _check_config(model_config: ml_collections.ConfigDict, modalities: Sequence[str]) -> None:
  if not modalities:
    raise config_base.ConfigError('data.broad_modalities: needs at least one broad modality')
  for m in modalities:
    if m not in config_base.BROAD_MODALITIES:
      raise config_base.ConfigError(f'data.broad_modalities: unknown modality {m!r}; choose from '
                                    f'{config_base.BROAD_MODALITIES}')
  if len(set(modalities)) != len(modalities):
    raise config_base.ConfigError(f'data.broad_modalities: lists a modality twice: {modalities}')
  if model_config.shared_head:
    narrow_dim = backbone_output_dim(model_config, 'narrow', 'video')
    for m in modalities:
      dim = backbone_output_dim(model_config, 'broad', m)
      if dim != narrow_dim:
        raise config_base.ConfigError(
            f'model.shared_head: one head cannot take narrow features of size {narrow_dim} and '
            f'broad {m!r} features of size {dim}; set model.shared_head=False or give the '
            'backbones equal output sizes (depth/width_multiplier)')


def head_order(modalities: Sequence[str]) -> tuple[str, ...]:
  """Broad views in the order the loss runs them through the heads: video-like, then audio.

  The published loss takes the broad video view before the broad audio one; ours
  follows `config_base.BROAD_MODALITIES` ('video', 'rc', 'flow', 'audio'), whatever
  order the config lists them in, so the shared head's BN averages do not depend on it.
  """
  return tuple(m for m in config_base.BROAD_MODALITIES if m in modalities)


def build_model(model_config: ml_collections.ConfigDict, broad_modalities: Sequence[str],
                axis_name: str | None = None) -> Model:
  """Pure init/loss/embed functions for `model_config` (config.model) and the given broad views.

  `axis_name` is the pmap axis that batch norm averages statistics over in
  `loss`; None outside pmap. `init` never needs the axis, so it runs in or out of pmap.
  """
  modalities = tuple(broad_modalities)
  _check_config(model_config, modalities)
  head_args = (model_config.hidden_dim, model_config.projection_dim)

  def make_heads(views: Sequence[str], axis: str | None) -> dict[str, heads.ProjectAndPredict]:
    """The head module of each view ('narrow' or a broad modality): one shared, or one per view."""
    head_bn = tsm_resnet.make_bn_config(model_config.bn_decay, model_config.bn_eps, axis)
    if model_config.shared_head:
      shared = heads.ProjectAndPredict(*head_args, head_bn, name='shared_project')
      return {v: shared for v in views}
    return {v: heads.ProjectAndPredict(
        *head_args, head_bn, name=('narrow_video_project' if v == 'narrow' else f'broad_{v}_project'))
            for v in views}

  def loss_forward(batch: Batch, axis: str | None) -> tuple[jax.Array, Metrics]:
    with precision(model_config.compute_dtype):
      feats = {'narrow': Embedding(model_config, 'narrow', 'video', axis)(
          _view_input(batch, 'narrow', 'video'), True)}
      for m in modalities:
        feats[m] = Embedding(model_config, 'broad', m, axis)(_view_input(batch, 'broad', m), True)
    view_heads = make_heads(tuple(feats), axis)
    metrics = {}
    for m in head_order(modalities):
      # As published: the broad view through the head first, then the narrow one (state
      # threaded), once per broad view; with a shared head the order sets its BN averages.
      z_b, h_b = view_heads[m](feats[m].astype(jnp.float32), True)
      z_n, h_n = view_heads['narrow'](feats['narrow'].astype(jnp.float32), True)
      metrics[f'loss/{m}_to_narrow'] = losses.normalized_regression_loss(h_b, z_n)
      metrics[f'loss/narrow_to_{m}'] = losses.normalized_regression_loss(h_n, z_b)
    total = jnp.mean(jnp.stack(list(metrics.values())))
    metrics['loss'] = total
    return total, metrics

  train = hk.transform_with_state(lambda batch: loss_forward(batch, axis_name))
  local = hk.transform_with_state(lambda batch: loss_forward(batch, None))

  def loss(params: hk.Params, state: hk.State, rng: jax.Array,
           batch: Batch) -> tuple[jax.Array, tuple[hk.State, Metrics]]:
    (total, metrics), new_state = train.apply(params, state, rng, batch)
    return total, (new_state, metrics)

  def make_embed(view: str, modality: str) -> EmbedFn:
    def forward(x: jax.Array) -> jax.Array:
      with precision(model_config.compute_dtype):
        feats = Embedding(model_config, view, modality, None)(x, False)
      return feats.astype(jnp.float32)

    transformed = hk.transform_with_state(forward)

    def embed(params: hk.Params, state: hk.State, x: jax.Array) -> jax.Array:
      feats, _ = transformed.apply(params, state, None, x)
      return feats

    embed.__doc__ = f'{embedding_name(view, modality)} features, inference-mode batch norm.'
    return embed

  def make_project(view: str) -> ProjectFn:
    transformed = hk.transform_with_state(
        lambda f_BxD: make_heads((view,), None)[view](f_BxD.astype(jnp.float32), False))

    def project(params: hk.Params, state: hk.State, feats_BxD: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
      (z_BxK, h_BxK), _ = transformed.apply(params, state, None, feats_BxD)
      return z_BxK, h_BxK

    project.__doc__ = f'(z, h) of the {view} view from its backbone features, inference-mode BN.'
    return project

  return Model(init=local.init, loss=loss, embed_narrow=make_embed('narrow', 'video'),
               embed_broad={m: make_embed('broad', m) for m in modalities},
               project={v: make_project(v) for v in ('narrow',) + modalities})
