"""TSM-ResNet-v2: a 2-D ResNet over frames whose only temporal operation is a channel shift.

Frames are folded into the batch, so a video backbone costs what an image
backbone costs; 1/8 of the channels look one frame back and 1/8 one frame
ahead in every block, with the published channel reorder (`temporal_shift`;
docs/design.md, "Backbones"). Module and parameter
names equal the published checkpoints' (`TSMResNetV2/tsm_resnet_unit_0/block_0/conv_0/w`).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from brave_jax import config_base
from brave_jax.models import batch_norm_grad

BnConfig = Mapping[str, Any]


def make_bn_config(decay_rate: float = 0.9, eps: float = 1e-5,
              cross_replica_axis: str | None = None) -> dict[str, Any]:
  """BatchNorm kwargs shared by every normalisation (published: 0.9, 1e-5, scale+offset)."""
  return dict(create_scale=True, create_offset=True, decay_rate=decay_rate, eps=eps,
              cross_replica_axis=cross_replica_axis)


class BatchNorm(hk.BatchNorm):
  """Backbone batch norm: its own class so a mixed-precision policy can keep it in f32, and
  so a training step can take its gradient written out (`backward='analytic'`,
  `batch_norm_grad`) rather than autodiff's of hk.BatchNorm (`'autodiff'`, as published).

  Named 'batch_norm' like hk.BatchNorm, so parameter and state paths are unchanged.
  """

  def __init__(self, name: str | None = 'batch_norm', backward: str = 'analytic', **kwargs):
    super().__init__(name=name, **kwargs)
    if backward not in config_base.BN_BACKWARDS:
      raise ValueError(f'config.model.bn_backward: {backward!r} is not one of '
                       f'{config_base.BN_BACKWARDS}')
    self._backward = backward

  def __call__(self, inputs: jax.Array, is_training: bool, test_local_stats: bool = False,
               scale: jax.Array | None = None, offset: jax.Array | None = None) -> jax.Array:
    if (self._backward == 'autodiff' or not is_training or self.axis is not None
        or not (self.create_scale and self.create_offset)
        or self.channel_index not in (-1, inputs.ndim - 1)):
      return super().__call__(inputs, is_training, test_local_stats, scale, offset)
    axes = tuple(range(inputs.ndim - 1))
    w_shape = [1] * (inputs.ndim - 1) + [inputs.shape[-1]]
    scale = hk.get_parameter('scale', w_shape, inputs.dtype, self.scale_init)
    offset = hk.get_parameter('offset', w_shape, inputs.dtype, self.offset_init)
    groups = self.cross_replica_axis_index_groups
    out, mean, var = batch_norm_grad.normalize(
        inputs, scale, offset, self.eps, axes, self.cross_replica_axis,
        None if groups is None else tuple(tuple(g) for g in groups))
    self.mean_ema(mean)
    self.var_ema(var)
    return out


class DepthSpec(NamedTuple):
  blocks_per_unit: tuple[int, ...]
  bottleneck: bool


DEPTHS: dict[int, DepthSpec] = {
    18: DepthSpec((2, 2, 2, 2), False),
    34: DepthSpec((3, 4, 6, 3), False),
    50: DepthSpec((3, 4, 6, 3), True),
    101: DepthSpec((3, 4, 23, 3), True),
    152: DepthSpec((3, 8, 36, 3), True),
    200: DepthSpec((3, 24, 36, 3), True),
}
STEM_CHANNELS = 64
UNIT_STRIDES = (1, 2, 2, 2)
# Inner widths per unit: a bottleneck block outputs 4x these, a basic block outputs these.
BOTTLENECK_WIDTHS = (64, 128, 256, 512)


def depth_spec(depth: int) -> DepthSpec:
  """Blocks per unit and block kind for a ResNet depth; raises naming the supported depths."""
  if depth not in DEPTHS:
    raise ValueError(f'ResNet depth {depth} is not supported; choose from {sorted(DEPTHS)}')
  return DEPTHS[depth]


def scaled(channels: int, width_multiplier: float) -> int:
  """Channel count under a width multiplier: int(c * w), at least 1."""
  return max(1, int(channels * width_multiplier))


def unit_channels(depth: int, width_multiplier: float) -> tuple[tuple[int, int], ...]:
  """(block output, block inner width) per unit."""
  spec = depth_spec(depth)
  out = []
  for c in BOTTLENECK_WIDTHS:
    inner = scaled(c, width_multiplier)
    out.append((scaled(4 * c, width_multiplier), inner) if spec.bottleneck else (inner, inner))
  return tuple(out)


def output_dim(depth: int, width_multiplier: float) -> int:
  """Feature size of the backbone: 2048*w for depth >= 50, 512*w for 18/34."""
  return unit_channels(depth, width_multiplier)[-1][0]


def temporal_shift(x_NxHxWxC: jax.Array, num_frames: int) -> jax.Array:
  """The published temporal shift: 1/8 of the channels from the next frame, 1/8 from the previous,
  and the two shifted groups SWAP places along the channel axis.

  With n = int(C / 8), the output at frame t is the concatenation
  [x[t+1][C-n:C], x[t][n:C-n], x[t-1][0:n]]: its first n channels are the last n
  of frame t+1 (zeros at the last frame), its last n channels are the first n of
  frame t-1 (zeros at the first frame). The swap changes nothing for a network
  trained from scratch (the next 1x1 conv can permute its inputs), but published
  checkpoints were trained with it, so their features need it
  (docs/design.md, "Backbones"; tests/testdata/temporal_shift.npz).
  Frames are folded into the batch: N = B * num_frames, frame-major within a clip.
  """
  n_frames_total, h, w, c = x_NxHxWxC.shape
  n = int(c / 8)
  if n == 0:
    return x_NxHxWxC
  x_BxTxHxWxC = x_NxHxWxC.reshape(n_frames_total // num_frames, num_frames, h, w, c)
  no_pad = (0, 0)
  from_next = jnp.pad(x_BxTxHxWxC[:, 1:, ..., c - n:], (no_pad, (0, 1), no_pad, no_pad, no_pad))
  middle = x_BxTxHxWxC[..., n:c - n]
  from_prev = jnp.pad(x_BxTxHxWxC[:, :-1, ..., :n], (no_pad, (1, 0), no_pad, no_pad, no_pad))
  shifted = jnp.concatenate([from_next, middle, from_prev], axis=-1)
  return shifted.reshape(x_NxHxWxC.shape)


def same_conv_as_matmul(x_NxHxWxC: jax.Array, w_KxKxCxO: jax.Array, stride: int) -> jax.Array:
  """A 'SAME' convolution written as shifted slices and one matmul (im2col), no conv op.

  Equals lax.conv_general_dilated(x, w, stride, 'SAME') up to summation order.
  """
  _, h, w, c = x_NxHxWxC.shape
  k_h, k_w = w_KxKxCxO.shape[:2]
  out_h, out_w = -(-h // stride), -(-w // stride)
  pads = []
  for size, out, k in ((h, out_h, k_h), (w, out_w, k_w)):
    total = max((out - 1) * stride + k - size, 0)
    pads.append((total // 2, total - total // 2))
  x = jnp.pad(x_NxHxWxC, ((0, 0), pads[0], pads[1], (0, 0)))
  taps = [x[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride, :]
          for i in range(k_h) for j in range(k_w)]
  patches_NxHoxWoxKKC = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
  return patches_NxHoxWoxKKC @ w_KxKxCxO.reshape(k_h * k_w * c, -1)


class Conv2D(hk.Conv2D):
  """hk.Conv2D (same parameters), computed as a matmul when the image is smaller than the kernel.

  When a kernel covers more pixels than the image (3x3 kernels on the 2x2 maps of
  the last stage at 64 px input), XLA swaps the operands of the convolution or its
  gradient and adds a window reversal, which XLA:CPU then runs as a naive loop:
  at 64 px that took more than half of the TSM-ResNet-50 step. Slices and a
  matmul have no such case.
  """

  def __call__(self, inputs: jax.Array, *, precision=None) -> jax.Array:
    k_h, k_w = self.kernel_shape
    h, w = inputs.shape[1:3]
    stride = self.stride[0]
    out_area = -(-h // stride) * -(-w // stride)
    small = k_h * k_w > min(h * w, out_area)
    if (not small or self.padding != 'SAME' or self.with_bias or self.mask is not None
        or self.feature_group_count != 1 or self.channel_index != -1
        or len(set(self.stride)) != 1 or inputs.ndim != 4):
      return super().__call__(inputs, precision=precision)
    w_shape = self.kernel_shape + (inputs.shape[-1], self.output_channels)
    w_init = self.w_init
    if w_init is None:  # As hk.ConvND: truncated normal, stddev 1/sqrt(fan_in).
      w_init = hk.initializers.TruncatedNormal(stddev=1. / np.sqrt(np.prod(w_shape[:-1])))
    w_param = hk.get_parameter('w', w_shape, inputs.dtype, init=w_init)
    return same_conv_as_matmul(inputs, w_param, stride)


def apply_block(block: hk.Module, x: jax.Array, is_training: bool, remat: bool) -> jax.Array:
  """Runs a residual block, rematerialised (recomputed in the backward pass) when asked."""
  if remat:
    return hk.remat(lambda y: block(y, is_training))(x)
  return block(x, is_training)


def _conv(channels: int, kernel: int, stride: int, name: str) -> hk.Conv2D:
  return Conv2D(channels, kernel, stride=stride, with_bias=False, padding='SAME', name=name)


class TSMBlock(hk.Module):
  """Pre-activation residual block; the residual branch sees temporally shifted input."""

  def __init__(self, channels: int, inner_channels: int, stride: int, use_projection: bool,
               bottleneck: bool, num_frames: int, bn_config: BnConfig, name: str):
    super().__init__(name=name)
    self._channels = channels
    self._inner = inner_channels
    self._stride = stride
    self._use_projection = use_projection
    self._bottleneck = bottleneck
    self._num_frames = num_frames
    self._bn_config = bn_config

  def __call__(self, x_NxHxWxC: jax.Array, is_training: bool) -> jax.Array:
    bn = lambda: BatchNorm(**self._bn_config)
    preact = jax.nn.relu(bn()(x_NxHxWxC, is_training))
    if self._use_projection:
      shortcut = _conv(self._channels, 1, self._stride, 'shortcut_conv')(preact)
    else:
      shortcut = x_NxHxWxC
    r = temporal_shift(preact, self._num_frames)
    if self._bottleneck:
      r = _conv(self._inner, 1, 1, 'conv_0')(r)
      r = jax.nn.relu(bn()(r, is_training))
      r = _conv(self._inner, 3, self._stride, 'conv_1')(r)
      r = jax.nn.relu(bn()(r, is_training))
      r = _conv(self._channels, 1, 1, 'conv_2')(r)
    else:
      r = _conv(self._channels, 3, self._stride, 'conv_0')(r)
      r = jax.nn.relu(bn()(r, is_training))
      r = _conv(self._channels, 3, 1, 'conv_1')(r)
    return shortcut + r


class TSMUnit(hk.Module):
  """A stage of blocks; the first block strides and always has a projection shortcut."""

  def __init__(self, channels: int, inner_channels: int, num_blocks: int, stride: int,
               bottleneck: bool, num_frames: int, bn_config: BnConfig, remat: bool, name: str):
    super().__init__(name=name)
    self._args = (channels, inner_channels, num_blocks, stride, bottleneck, num_frames)
    self._bn_config = bn_config
    self._remat = remat

  def __call__(self, x_NxHxWxC: jax.Array, is_training: bool) -> jax.Array:
    channels, inner, num_blocks, stride, bottleneck, num_frames = self._args
    for i in range(num_blocks):
      block = TSMBlock(channels, inner, stride if i == 0 else 1, use_projection=(i == 0),
                       bottleneck=bottleneck, num_frames=num_frames, bn_config=self._bn_config,
                       name=f'block_{i}')
      x_NxHxWxC = apply_block(block, x_NxHxWxC, is_training, self._remat)
    return x_NxHxWxC


class TSMResNetV2(hk.Module):
  """[B, T, H, W, C] video (any C: 3 for RGB, 2 for flow) -> [B, 2048*w] features (depth >= 50)."""

  def __init__(self, depth: int = 50, width_multiplier: float = 1.0,
               bn_config: BnConfig | None = None, remat: bool = False,
               name: str = 'TSMResNetV2'):
    super().__init__(name=name)
    self._spec = depth_spec(depth)
    self._channels = unit_channels(depth, width_multiplier)
    self._stem_channels = scaled(STEM_CHANNELS, width_multiplier)
    self._bn_config = dict(bn_config if bn_config is not None else make_bn_config())
    self._remat = remat

  def __call__(self, x_BxTxHxWxC: jax.Array, is_training: bool) -> jax.Array:
    if x_BxTxHxWxC.ndim != 5:
      raise ValueError(f'TSMResNetV2 wants video [B, T, H, W, C], got shape {x_BxTxHxWxC.shape}')
    b, t, h, w, c = x_BxTxHxWxC.shape
    x = x_BxTxHxWxC.reshape(b * t, h, w, c)
    x = _conv(self._stem_channels, 7, 2, 'tsm_resnet_stem')(x)
    x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding='SAME')
    for i, ((channels, inner), num_blocks, stride) in enumerate(
        zip(self._channels, self._spec.blocks_per_unit, UNIT_STRIDES)):
      x = TSMUnit(channels, inner, num_blocks, stride, self._spec.bottleneck, t, self._bn_config,
                  self._remat, name=f'tsm_resnet_unit_{i}')(x, is_training)
    x = jax.nn.relu(BatchNorm(**self._bn_config)(x, is_training))
    feats_NxD = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
    return jnp.mean(feats_NxD.reshape(b, t, -1), axis=1).astype(x.dtype)
