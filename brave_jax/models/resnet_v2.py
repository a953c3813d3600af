"""ResNet-v2 over a log-mel spectrogram, the broad audio backbone.

The spectrogram [B, frames, mel_bins] is treated as a one-channel image
(ARCHITECTURE.md, "ResNet-v2-50"). Submodules are built where the published
model built them, so names match its checkpoints: convolutions and block groups
in `__init__` (hence the `~` in `res_net_v2/~/block_group_0/block_0/~/conv_0/w`),
blocks and batch norms in `__call__`.
"""
from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from brave_jax.models import tsm_resnet
from brave_jax.models.tsm_resnet import BatchNorm, BnConfig

STEM_CHANNELS = tsm_resnet.STEM_CHANNELS
UNIT_STRIDES = tsm_resnet.UNIT_STRIDES


def output_dim(depth: int, width_multiplier: float) -> int:
  """Feature size: 2048*w for depth >= 50, 512*w for 18/34."""
  return tsm_resnet.output_dim(depth, width_multiplier)


def _conv(channels: int, kernel: int, stride: int, name: str) -> hk.Conv2D:
  return tsm_resnet.Conv2D(channels, kernel, stride=stride, with_bias=False, padding='SAME',
                           name=name)


class ResNetV2Block(hk.Module):
  """Pre-activation block: (bn -> relu -> conv) x3 (bottleneck) or x2 (basic), plus shortcut.

  Bottleneck: 1x1, 3x3 (strided), 1x1. Basic ('published'): 1x1, then 3x3 (strided), as the
  published resnet.py builds depth 18/34; 'two_3x3': 3x3 (strided), 3x3.
  """

  def __init__(self, channels: int, inner_channels: int, stride: int, use_projection: bool,
               bottleneck: bool, bn_config: BnConfig, name: str, basic_block: str = 'published'):
    super().__init__(name=name)
    self._bn_config = bn_config
    if bottleneck:
      self._convs = (_conv(inner_channels, 1, 1, 'conv_0'),
                     _conv(inner_channels, 3, stride, 'conv_1'),
                     _conv(channels, 1, 1, 'conv_2'))
    elif basic_block == 'published':  # As the published resnet.py's depth-18/34 block.
      self._convs = (_conv(channels, 1, 1, 'conv_0'), _conv(channels, 3, stride, 'conv_1'))
    elif basic_block == 'two_3x3':
      self._convs = (_conv(channels, 3, stride, 'conv_0'), _conv(channels, 3, 1, 'conv_1'))
    else:
      raise ValueError(f'config.model.audio_backbone.basic_block must be one of '
                       f"('published', 'two_3x3'), got {basic_block!r}")
    self._shortcut = _conv(channels, 1, stride, 'shortcut_conv') if use_projection else None

  def __call__(self, x_BxHxWxC: jax.Array, is_training: bool) -> jax.Array:
    shortcut = x_BxHxWxC
    r = x_BxHxWxC
    for i, conv in enumerate(self._convs):
      r = jax.nn.relu(BatchNorm(**self._bn_config)(r, is_training))
      if i == 0 and self._shortcut is not None:
        shortcut = self._shortcut(r)
      r = conv(r)
    return shortcut + r


class BlockGroup(hk.Module):
  """A stage; only its first block strides, and projects when its shape changes."""

  def __init__(self, channels: int, inner_channels: int, num_blocks: int, stride: int,
               bottleneck: bool, bn_config: BnConfig, remat: bool, name: str,
               basic_block: str = 'published'):
    super().__init__(name=name)
    self._args = (channels, inner_channels, num_blocks, stride, bottleneck)
    self._bn_config = bn_config
    self._remat = remat
    self._basic_block = basic_block

  def __call__(self, x_BxHxWxC: jax.Array, is_training: bool) -> jax.Array:
    channels, inner, num_blocks, stride, bottleneck = self._args
    for i in range(num_blocks):
      first = i == 0
      use_projection = first and (x_BxHxWxC.shape[-1] != channels or stride != 1)
      block = ResNetV2Block(channels, inner, stride if first else 1, use_projection, bottleneck,
                            self._bn_config, name=f'block_{i}', basic_block=self._basic_block)
      x_BxHxWxC = tsm_resnet.apply_block(block, x_BxHxWxC, is_training, self._remat)
    return x_BxHxWxC


class ResNetV2(hk.Module):
  """[B, frames, mel_bins] log-mel -> [B, 2048*w] features (depth >= 50; 512*w for 18/34)."""

  def __init__(self, depth: int = 50, width_multiplier: float = 1.0,
               bn_config: BnConfig | None = None, remat: bool = False,
               name: str = 'res_net_v2', basic_block: str = 'published'):
    super().__init__(name=name)
    spec = tsm_resnet.depth_spec(depth)
    self._bn_config = dict(bn_config if bn_config is not None else tsm_resnet.make_bn_config())
    self._initial_conv = _conv(tsm_resnet.scaled(STEM_CHANNELS, width_multiplier), 7, 2,
                               'initial_conv')
    self._block_groups = [
        BlockGroup(channels, inner, num_blocks, stride, spec.bottleneck, self._bn_config, remat,
                   name=f'block_group_{i}', basic_block=basic_block)
        for i, ((channels, inner), num_blocks, stride) in enumerate(
            zip(tsm_resnet.unit_channels(depth, width_multiplier), spec.blocks_per_unit,
                UNIT_STRIDES))
    ]

  def __call__(self, log_mel_BxFxM: jax.Array, is_training: bool) -> jax.Array:
    if log_mel_BxFxM.ndim != 3:
      raise ValueError(f'ResNetV2 wants a log-mel spectrogram [B, frames, mel_bins], got shape '
                       f'{log_mel_BxFxM.shape}')
    x = self._initial_conv(log_mel_BxFxM[..., None])
    x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding='SAME')
    for group in self._block_groups:
      x = group(x, is_training)
    x = jax.nn.relu(BatchNorm(**self._bn_config)(x, is_training))
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
