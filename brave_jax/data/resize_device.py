"""The narrow view's bilinear resize, moved into the training step with its exact arithmetic.

Why: with the view chain on the device (config.data.augment_on='device') the host's
largest costs per V/A clip besides the published full JPEG decode were resizing the
16 crops to 224 px and moving them as float32 (0.6 MB a frame). A crop of a 256x340
frame holds at most 87 k pixels against the view's 50 k, but as uint8 it is at most 0.26 MB
(0.35 MB in the default buffer below). So the host ships the crop's pixels as they
were decoded, and the step resizes them: the same pixels as tf.image.resize, to float
rounding, not the 0.5/255 of shipping the resized view as uint8.

Crops differ in size from clip to clip, and a batch needs one shape, so a clip's crop
travels flattened, row after row, in a uint8 buffer of a fixed number of pixels
(config.data.narrow.crop_buffer_pixels; a crop never exceeds its frame). With it go
small index tables computed on the host with TF's float arithmetic: for each output
row and column, the two source rows / columns and the weight between them
(`resize_tables`). The device gathers the four neighbours of every output pixel and
blends them in TF's order (`resize_flat_crop`).

TF's ResizeBilinear (half-pixel centres, what tf.image.resize(..., 'bilinear') runs),
per output coordinate i of an axis of `in_size` source pixels and `out` outputs:
  scale = in_size / out;  src = (i + 0.5) * scale - 0.5
  lower = max(floor(src), 0);  upper = min(ceil(src), in_size - 1);  lerp = src - floor(src)
  top = tl + (tr - tl) * x_lerp;  bottom = bl + (br - bl) * x_lerp;  out = top + (bottom - top) * y_lerp
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import tensorflow as tf

# Keys of a clip's draws (augment_device.ViewDraws) that carry a crop to resize on the device:
#   resize_rows      int32 [size, 2]  flat offsets (row * crop width) of each output row's
#                                     upper and lower source rows
#   resize_row_lerp  float32 [size]   weight of the lower row
#   resize_cols      int32 [size, 2]  each output column's left and right source columns
#   resize_col_lerp  float32 [size]   weight of the right column
RESIZE_KEYS = ('resize_rows', 'resize_row_lerp', 'resize_cols', 'resize_col_lerp')


# ---------------------------------------------------------------------------
# Host (TF, in tf.data).

def _axis_table(in_size: tf.Tensor, out_size: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(int32 [out, 2] lower/upper source index, float32 [out] lerp) along one axis, in
  ResizeBilinear's float32 arithmetic (module docstring)."""
  scale = tf.cast(in_size, tf.float32) / float(out_size)
  src = (tf.range(out_size, dtype=tf.float32) + 0.5) * scale - 0.5
  floor = tf.floor(src)
  lower = tf.maximum(tf.cast(floor, tf.int32), 0)
  upper = tf.minimum(tf.cast(tf.math.ceil(src), tf.int32), tf.cast(in_size, tf.int32) - 1)
  return tf.stack([lower, upper], axis=1), src - floor


def resize_tables(crop_hw: tf.Tensor, size: int) -> dict[str, tf.Tensor]:
  """The index tables (RESIZE_KEYS) that resize a flattened crop of [h, w] to size x size."""
  crop_hw = tf.cast(crop_hw, tf.int32)
  rows, row_lerp = _axis_table(crop_hw[0], size)
  cols, col_lerp = _axis_table(crop_hw[1], size)
  return {'resize_rows': rows * crop_hw[1], 'resize_row_lerp': row_lerp,
          'resize_cols': cols, 'resize_col_lerp': col_lerp}


def flat_crop(crop_TxHxWx3: tf.Tensor, buffer_pixels: int, what: str = 'the crop') -> tf.Tensor:
  """uint8 [T, buffer_pixels, 3]: each frame's crop row after row, zeros after it. Raises (inside
  the op, so the pipeline counts the record as bad and names it) when the crop is larger."""
  shape = tf.shape(crop_TxHxWx3)
  pixels = shape[1] * shape[2]
  check = tf.debugging.assert_less_equal(
      pixels, buffer_pixels,
      message=f'{what} holds more pixels than config.data.narrow.crop_buffer_pixels='
              f'{buffer_pixels}; raise it to the largest frame height x width of the data, or '
              "set config.data.narrow.resize_on='host'")
  with tf.control_dependencies([check]):
    flat = tf.reshape(crop_TxHxWx3, [shape[0], pixels, 3])
  # A concat, not tf.pad: on a 16-frame 224-px crop tf.pad took 9.7 CPU ms, as long as the resize
  # this saves; the concat 1.4 (bench/README.md, "Input pipeline").
  zeros = tf.zeros([shape[0], buffer_pixels - pixels, 3], flat.dtype)
  return tf.ensure_shape(tf.concat([flat, zeros], axis=1),
                         [crop_TxHxWx3.shape[0], buffer_pixels, 3])


# ---------------------------------------------------------------------------
# Device (JAX, under jit / pmap / vmap).

def has_crop_to_resize(draws: Mapping[str, Any]) -> bool:
  return all(k in draws for k in RESIZE_KEYS)


def resize_flat_crop(pixels_TxPx3: jax.Array, draws: Mapping[str, Any]) -> jax.Array:
  """float32 [T, size, size, 3] in [0, 255]: one clip's flattened crop (`flat_crop`) resized as
  tf.image.resize(crop, [size, size], 'bilinear') resizes it, with its tables (`resize_tables`)."""
  x = pixels_TxPx3.astype(jnp.float32)
  rows, row_lerp = draws['resize_rows'], draws['resize_row_lerp']
  cols, col_lerp = draws['resize_cols'], draws['resize_col_lerp']
  size = rows.shape[0]

  def gather(row: jax.Array, col: jax.Array) -> jax.Array:  # [size] offsets x [size] columns.
    index = (row[:, None] + col[None, :]).reshape(-1)
    return jnp.take(x, index, axis=1, mode='clip').reshape(x.shape[0], size, size, 3)

  x_lerp = col_lerp[None, None, :, None]
  top_left, top_right = gather(rows[:, 0], cols[:, 0]), gather(rows[:, 0], cols[:, 1])
  top = top_left + (top_right - top_left) * x_lerp
  bottom_left, bottom_right = gather(rows[:, 1], cols[:, 0]), gather(rows[:, 1], cols[:, 1])
  bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
  return top + (bottom - top) * row_lerp[None, :, None, None]
