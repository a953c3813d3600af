"""Decoding only the sampled JPEG frames, straight into the crop each view needs.

Training crops are decoded with tf.io.decode_and_crop_jpeg (libjpeg skips the
columns outside the window), and when the view is at least 2x smaller than the
crop, libjpeg's DCT-domain downscaling (ratio 2/4/8) does most of the resize,
so a 112-px broad view never pays for a full-size decode. One crop window per
clip: all frames of a view share it.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

RATIOS = (1, 2, 4, 8)  # Scale denominators libjpeg supports in decode_jpeg(ratio=...).
_DCT_METHOD = 'INTEGER_FAST'  # ~15% faster decodes than the default on this CPU class.
# Flow values are vectors, not pixels: the fast DCT adds up to ~3 levels (0.5 px) of error
# on top of the stored quantisation, the accurate one none that matters.
FLOW_DCT_METHOD = 'INTEGER_ACCURATE'
# Training crops may be decoded at a reduced scale that leaves them up to 1.25x
# smaller than the view (then upsampled): for the 112-px broad view this turns
# about half of the full-size decodes into half-size ones (~30% cheaper each),
# at a loss of detail far below the view's own blur (sigma up to 2 px).
TRAIN_MAX_UPSCALE = 1.25
_MAX_UNROLLED_FRAMES = 128  # Static clips up to this length decode as separate ops.


def jpeg_shape(jpeg: tf.Tensor) -> tf.Tensor:
  """int32 [height, width] from the JPEG header only (no decode)."""
  return tf.image.extract_jpeg_shape(jpeg)[:2]


def random_crop_window(image_hw: tf.Tensor, area_range: Sequence[float],
                       aspect_range: Sequence[float], seed: tf.Tensor) -> tf.Tensor:
  """int32 [y, x, h, w]: random-resized-crop window (area fraction, aspect w/h) in the image.

  Uses the same sampler as Inception/SimCLR crops (up to 10 attempts, the
  whole image if none fits).
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([image_hw, [3]], 0), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range), max_attempts=10, use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def choose_ratio(crop_hw: tf.Tensor, out_hw: tf.Tensor | Sequence[int],
                 max_upscale: float = 1.0) -> tf.Tensor:
  """Index into RATIOS of the largest downscale that leaves >= out / max_upscale pixels a side."""
  crop = tf.cast(crop_hw, tf.int32)
  out = tf.cast(tf.math.ceil(tf.cast(out_hw, tf.float32) / max_upscale), tf.int32)
  fits = [tf.reduce_all(crop // r >= out) for r in RATIOS]
  return tf.reduce_sum(tf.cast(tf.stack(fits), tf.int32)) - 1


def _decode_all(jpegs_T: tf.Tensor, window: tf.Tensor | None, ratio: int,
                dct_method: str = _DCT_METHOD) -> tf.Tensor:
  """uint8 [T, h, w, 3]: every frame decoded at 1/ratio scale, cropped to `window` if given."""
  def one(jpeg):
    if window is None:
      return tf.io.decode_jpeg(jpeg, channels=3, ratio=ratio, dct_method=dct_method)
    return tf.io.decode_and_crop_jpeg(jpeg, window, channels=3, ratio=ratio,
                                      dct_method=dct_method)
  num_frames = jpegs_T.shape[0]
  if num_frames is not None and num_frames <= _MAX_UNROLLED_FRAMES:
    # Independent decode ops: no while-loop bookkeeping per frame, and the
    # executor is free to run them in any order.
    return tf.stack([one(jpegs_T[i]) for i in range(num_frames)])
  return tf.map_fn(one, jpegs_T, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
                   parallel_iterations=4)


def decode_crop(jpegs_T: tf.Tensor, window: tf.Tensor, out_hw,
                max_upscale: float = 1.0, dct_method: str = _DCT_METHOD) -> tf.Tensor:
  """uint8 [T, h, w, 3]: `window` ([y, x, h, w], full-image px) of each frame, downscaled by the
  largest libjpeg ratio that keeps h, w >= out_hw / max_upscale. (libjpeg takes the crop
  offsets in the scaled image.)"""
  window = tf.cast(window, tf.int32)
  ratio_index = choose_ratio(window[2:], out_hw, max_upscale)

  def branch(r):
    def fn():
      w = tf.maximum(window // r, [0, 0, 1, 1])
      return _decode_all(jpegs_T, w, r, dct_method)
    return fn
  return tf.switch_case(ratio_index, [branch(r) for r in RATIOS])


def decode_crop_resize(jpegs_T: tf.Tensor, window: tf.Tensor, size: int,
                       max_upscale: float = 1.0, dct_method: str = _DCT_METHOD) -> tf.Tensor:
  """float32 [T, size, size, 3] in [0, 255]: the window of each frame resized to the view size."""
  frames = decode_crop(jpegs_T, window, [size, size], max_upscale, dct_method)
  return tf.image.resize(frames, [size, size], method='bilinear')


def decode_random_crop(jpegs_T: tf.Tensor, size: int, area_range: Sequence[float],
                       aspect_range: Sequence[float], seed: tf.Tensor,
                       max_upscale: float = TRAIN_MAX_UPSCALE) -> tf.Tensor:
  """float32 [T, size, size, 3] in [0, 255]: one random-resized crop shared by all frames."""
  window = random_crop_window(jpeg_shape(jpegs_T[0]), area_range, aspect_range, seed)
  return decode_crop_resize(jpegs_T, window, size, max_upscale)


def decode_resize_short_side(jpegs_T: tf.Tensor, short_side: int) -> tf.Tensor:
  """float32 [T, H', W', 3] in [0, 255] with min(H', W') == short_side (aspect kept)."""
  hw = jpeg_shape(jpegs_T[0])
  scale = short_side / tf.cast(tf.reduce_min(hw), tf.float64)
  out_hw = tf.cast(tf.round(tf.cast(hw, tf.float64) * scale), tf.int32)
  out_hw = tf.maximum(out_hw, short_side)
  full = tf.stack([0, 0, hw[0], hw[1]])
  frames = decode_crop(jpegs_T, full, out_hw)
  return tf.image.resize(frames, out_hw, method='bilinear')


def spatial_crops(frames_TxHxWxC: tf.Tensor, size: int, num_crops: int) -> tf.Tensor:
  """[num_crops, T, size, size, C]: crops evenly spaced along the long side (left/centre/right
  for landscape, top/centre/bottom for portrait), centred on the short side."""
  shape = tf.shape(frames_TxHxWxC)
  h, w = shape[1], shape[2]
  landscape = w >= h
  long_free = tf.where(landscape, w - size, h - size)
  short_free = tf.where(landscape, h - size, w - size)
  if num_crops == 1:
    along = [long_free // 2]
  else:
    along = [(long_free * i) // (num_crops - 1) for i in range(num_crops)]
  crops = []
  for a in along:
    y = tf.where(landscape, short_free // 2, a)
    x = tf.where(landscape, a, short_free // 2)
    crops.append(frames_TxHxWxC[:, y:y + size, x:x + size, :])
  return tf.ensure_shape(tf.stack(crops), [num_crops, None, size, size, None])


def flow_to_unit(flow_TxHxWx3: tf.Tensor) -> tf.Tensor:
  """float32 [T, H, W, 2] in [-1, 1] from stored flow images in [0, 255] (DMVR: x*2/255 - 1)."""
  return flow_TxHxWx3[..., :2] * (2.0 / 255.0) - 1.0


def scale_flow_to_view(flow_TxHxWx2: tf.Tensor, window: tf.Tensor, size: int) -> tf.Tensor:
  """Flow in [-1, 1] of a crop `window` ([y, x, h, w]) resized to size x size.

  Flow values are displacements in stored pixels (value = px / 20), so stretching
  the window to the view stretches them too: x by size / w, y by size / h.
  Clipped back to [-1, 1], the stored range.
  """
  hw = tf.cast(window[2:4], tf.float32)
  scale_xy = tf.stack([size / hw[1], size / hw[0]])
  return tf.clip_by_value(flow_TxHxWx2 * scale_xy, -1.0, 1.0)
