"""Projector and predictor MLPs that map backbone features into the space where views regress.

Names follow the published checkpoints: `<head>/projector/{linear,batch_norm,linear_1,batch_norm_1}`
and `<head>/predictor/{linear,batch_norm,linear_1}`.
"""
from __future__ import annotations

import haiku as hk
import jax

from brave_jax.models.tsm_resnet import BnConfig


def _mlp(x_BxD: jax.Array, hidden_dim: int, output_dim: int, bn_config: BnConfig,
         is_training: bool) -> jax.Array:
  """Linear hidden -> BN -> ReLU -> Linear d, named inside the calling module (linear, linear_1)."""
  x = hk.Linear(hidden_dim)(x_BxD)
  x = jax.nn.relu(hk.BatchNorm(**bn_config)(x, is_training))
  return hk.Linear(output_dim)(x)


class Projector(hk.Module):
  """Linear hidden -> BN -> ReLU -> Linear d -> BN: the target space of every view."""

  def __init__(self, hidden_dim: int, output_dim: int, bn_config: BnConfig,
               name: str = 'projector'):
    super().__init__(name=name)
    self._hidden_dim = hidden_dim
    self._output_dim = output_dim
    self._bn_config = bn_config

  def __call__(self, feats_BxD: jax.Array, is_training: bool) -> jax.Array:
    x = _mlp(feats_BxD, self._hidden_dim, self._output_dim, self._bn_config, is_training)
    return hk.BatchNorm(**self._bn_config)(x, is_training)


class Predictor(hk.Module):
  """Linear hidden -> BN -> ReLU -> Linear d: predicts another view's projection."""

  def __init__(self, hidden_dim: int, output_dim: int, bn_config: BnConfig,
               name: str = 'predictor'):
    super().__init__(name=name)
    self._hidden_dim = hidden_dim
    self._output_dim = output_dim
    self._bn_config = bn_config

  def __call__(self, z_BxK: jax.Array, is_training: bool) -> jax.Array:
    return _mlp(z_BxK, self._hidden_dim, self._output_dim, self._bn_config, is_training)


class ProjectAndPredict(hk.Module):
  """Projector + predictor of one view (or of all views when shared): feats -> (z, h)."""

  def __init__(self, hidden_dim: int, output_dim: int, bn_config: BnConfig, name: str):
    super().__init__(name=name)
    self._args = (hidden_dim, output_dim, bn_config)

  def __call__(self, feats_BxD: jax.Array, is_training: bool) -> tuple[jax.Array, jax.Array]:
    z_BxK = Projector(*self._args)(feats_BxD, is_training)
    h_BxK = Predictor(*self._args)(z_BxK, is_training)
    return z_BxK, h_BxK
