"""Decoding only the sampled JPEG frames into the crop each view needs.

A training crop (one window per clip: all frames of a view share it) is made
in one of three ways, config.data.jpeg_decode:
- 'full' (default): the published pixels (tf.io.decode_jpeg of the whole frame,
  TF's default DCT, the window cut out, resized bilinearly by tf.image.resize),
  decoded through a widened window: tf.io.decode_and_crop_jpeg of the window
  grown to start on a 16-px boundary at least WINDOW_MARGIN px before it and to
  end WINDOW_MARGIN px after it, then the window cut out. libjpeg then skips the
  IDCT and colour conversion outside the widened window. A plain
  decode_and_crop_jpeg of the window is not the same: on chroma-subsampled JPEGs
  libjpeg upsamples the chroma at the window's bottom and right edges without the
  next row or column. With the margin the pixels equal the whole-frame decode's
  for every kind tested (tests/test_data_decode_augment.py;
  bench/jpeg_window_exactness.py: 4:4:4, 4:2:2, 4:2:0, progressive, greyscale,
  odd sizes, both DCT methods).
- 'full_frame': the published op sequence itself (whole frame, then the cut);
  the same pixels, kept to check 'full' against and for libjpeg builds not tested.
- 'reduced_scale' (ours, faster): tf.io.decode_and_crop_jpeg, and when the view
  is smaller than the crop libjpeg's DCT-domain downscaling (ratio 2/4/8) does
  most of the resize, so a 112-px broad view rarely pays for a full-size
  decode; not held to the published pixels (bench/README.md, "Input pipeline").
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from brave_jax import config_base

# decode_and_crop_jpeg over a window widened by this margin, from a 16-px boundary, gives the
# whole-frame decode's pixels (module docstring); 1 px sufficed in every test, 2 leaves room.
WINDOW_MARGIN = 2
_IMCU_ALIGN = 16  # The largest iMCU (a 4:2:0 MCU) of the JPEGs tested, in px.
RATIOS = (1, 2, 4, 8)  # Scale denominators libjpeg supports in decode_jpeg(ratio=...).
# TF's default DCT (dct_method=''), which the published decode_jpeg calls use, is this one:
# ~15% faster decodes than INTEGER_ACCURATE on this CPU class.
_DCT_METHOD = 'INTEGER_FAST'
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


_CROP_ATTEMPTS = 20  # Published: DEFAULT_MAX_RANDOM_SAMPLE_CROP_ATTEMPTS.
_CROP_FALLBACK_PADDING = 16  # Published: DEFAULT_PADDING_ON_FAIL.


def center_crop_window(image_hw: tf.Tensor, padding: int = _CROP_FALLBACK_PADDING) -> tf.Tensor:
  """int32 [y, x, h, w]: the centred square of side min(h, w) - 2 * padding (published fallback)."""
  image_hw = tf.cast(image_hw, tf.int32)
  side = tf.reduce_min(image_hw)
  offset = (image_hw - side) // 2 + padding
  size = tf.maximum(side - 2 * padding, 1)
  return tf.stack([offset[0], offset[1], size, size])


def random_crop_window(image_hw: tf.Tensor, area_range: Sequence[float],
                       aspect_range: Sequence[float], seed: tf.Tensor) -> tf.Tensor:
  """int32 [y, x, h, w]: random-resized-crop window (area fraction, aspect w/h) in the image.

  As published: tf.image's distorted-bounding-box sampler around the whole
  image (covering at least the minimum area, up to 20 attempts); when it comes
  back with the whole image (no attempt fitted) the window is the centred
  square inset by 16 px instead.
  """
  image_hw = tf.cast(image_hw, tf.int32)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([image_hw, [3]], 0), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed, min_object_covered=float(area_range[0]), aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range), max_attempts=_CROP_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  return tf.cond(tf.reduce_all(tf.equal(size[:2], image_hw)),
                 lambda: center_crop_window(image_hw), lambda: window)


def choose_ratio(crop_hw: tf.Tensor, out_hw: tf.Tensor | Sequence[int],
                 max_upscale: float = 1.0) -> tf.Tensor:
  """Index into RATIOS of the largest downscale that leaves >= out / max_upscale pixels a side;
  0 (full scale) when even that is fewer (a crop smaller than the view is upscaled from full
  scale: an index of -1 would make tf.switch_case run its last branch, 1/8 scale)."""
  crop = tf.cast(crop_hw, tf.int32)
  out = tf.cast(tf.math.ceil(tf.cast(out_hw, tf.float32) / max_upscale), tf.int32)
  fits = [tf.reduce_all(crop // r >= out) for r in RATIOS]
  return tf.maximum(tf.reduce_sum(tf.cast(tf.stack(fits), tf.int32)) - 1, 0)


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


def decode_full(jpegs_T: tf.Tensor, dct_method: str = _DCT_METHOD) -> tf.Tensor:
  """uint8 [T, H, W, 3]: every frame decoded at full scale (the published decode)."""
  return _decode_all(jpegs_T, None, 1, dct_method)


def crop(frames_TxHxWxC: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """`window` ([y, x, h, w]) of every frame; keeps the static frame count and channels."""
  y, x, h, w = tf.unstack(tf.cast(window, tf.int32))
  return frames_TxHxWxC[:, y:y + h, x:x + w, :]


def covering_window(windows: Sequence[tf.Tensor]) -> tf.Tensor:
  """int32 [y, x, h, w]: the smallest window that holds every one of `windows`."""
  w = tf.cast(tf.stack(windows), tf.int32)
  top_left = tf.reduce_min(w[:, :2], axis=0)
  bottom_right = tf.reduce_max(w[:, :2] + w[:, 2:], axis=0)
  return tf.concat([top_left, bottom_right - top_left], 0)


def exact_decode_window(window: tf.Tensor, image_hw: tf.Tensor,
                        margin: int = WINDOW_MARGIN) -> tf.Tensor:
  """int32 [y0, x0, h0, w0]: what to decode so that `window` cut from it is the full decode's.

  From the 16-px boundary at least `margin` px above and left of `window` to `margin` px
  below and right of it, clamped to the image (module docstring; `margin=0` is the
  negative control of the tests).
  """
  y, x, h, w = tf.unstack(tf.cast(window, tf.int32))
  height, width = tf.unstack(tf.cast(image_hw, tf.int32))
  y0 = tf.maximum(y - margin, 0) // _IMCU_ALIGN * _IMCU_ALIGN
  x0 = tf.maximum(x - margin, 0) // _IMCU_ALIGN * _IMCU_ALIGN
  y1 = tf.minimum(y + h + margin, height)
  x1 = tf.minimum(x + w + margin, width)
  return tf.stack([y0, x0, y1 - y0, x1 - x0])


def decode_for_windows(jpegs_T: tf.Tensor, windows: Sequence[tf.Tensor], jpeg_decode: str = 'full',
                       dct_method: str = _DCT_METHOD) -> tuple[tf.Tensor, tf.Tensor]:
  """(uint8 [T, h0, w0, 3], its origin [y0, x0]): every frame decoded (as published, 'full' or
  'full_frame') over enough of the image that each of `windows` can be cut from it (`cut`)."""
  if jpeg_decode == 'full_frame':
    return decode_full(jpegs_T, dct_method), tf.zeros([2], tf.int32)
  if jpeg_decode != 'full':
    raise ValueError(f"decode_for_windows: jpeg_decode 'full' or 'full_frame', got {jpeg_decode!r}")
  outer = exact_decode_window(covering_window(windows), jpeg_shape(jpegs_T[0]))
  return _decode_all(jpegs_T, outer, 1, dct_method), outer[:2]


def cut(frames_TxHxWxC: tf.Tensor, origin: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """`window` (image px) of frames decoded from `origin` on (`decode_for_windows`)."""
  window = tf.cast(window, tf.int32)
  return crop(frames_TxHxWxC, tf.concat([window[:2] - origin, window[2:]], 0))


def decode_full_crop(jpegs_T: tf.Tensor, window: tf.Tensor, dct_method: str = _DCT_METHOD,
                     jpeg_decode: str = 'full') -> tf.Tensor:
  """uint8 [T, h, w, 3]: `window` ([y, x, h, w]) of every frame, the full decode's pixels
  (through a widened window with 'full', of the whole frame with 'full_frame')."""
  frames, origin = decode_for_windows(jpegs_T, [window], jpeg_decode, dct_method)
  return cut(frames, origin, window)


def decode_train_crop_pixels(jpegs_T: tf.Tensor, window: tf.Tensor, size: int,
                             jpeg_decode: str = 'full', dct_method: str = _DCT_METHOD) -> tf.Tensor:
  """uint8 [T, h, w, 3]: `window` of each frame as `decode_train_crop` resizes it: the full decode's
  crop ('full'), or libjpeg's reduced-scale decode of it ('reduced_scale', h and w then smaller)."""
  if jpeg_decode in ('full', 'full_frame'):
    return decode_full_crop(jpegs_T, window, dct_method, jpeg_decode)
  if jpeg_decode == 'reduced_scale':
    return decode_crop(jpegs_T, window, [size, size], TRAIN_MAX_UPSCALE, dct_method)
  raise ValueError(f'config.data.jpeg_decode must be one of {config_base.JPEG_DECODES}, got {jpeg_decode!r}')


def decode_train_crop(jpegs_T: tf.Tensor, window: tf.Tensor, size: int, jpeg_decode: str = 'full',
                      dct_method: str = _DCT_METHOD) -> tf.Tensor:
  """float32 [T, size, size, 3] in [0, 255]: `window` of each frame resized to the view size,
  decoded as `jpeg_decode` says (module docstring: 'full' as published, or 'reduced_scale')."""
  return tf.image.resize(decode_train_crop_pixels(jpegs_T, window, size, jpeg_decode, dct_method),
                         [size, size], method='bilinear')


def decode_random_crop(jpegs_T: tf.Tensor, size: int, area_range: Sequence[float],
                       aspect_range: Sequence[float], seed: tf.Tensor,
                       jpeg_decode: str = 'full') -> tf.Tensor:
  """float32 [T, size, size, 3] in [0, 255]: one random-resized crop shared by all frames."""
  window = random_crop_window(jpeg_shape(jpegs_T[0]), area_range, aspect_range, seed)
  return decode_train_crop(jpegs_T, window, size, jpeg_decode)


def resized_short_side_shape(image_hw: tf.Tensor, short_side: int) -> tf.Tensor:
  """int32 [h', w'] as the published resize_min: max(S, h * S // w), max(S, w * S // h)."""
  h, w = tf.unstack(tf.cast(image_hw, tf.int32))
  return tf.stack([tf.maximum(short_side, (h * short_side) // w),
                   tf.maximum(short_side, (w * short_side) // h)])


def decode_resize_short_side(jpegs_T: tf.Tensor, short_side: int) -> tf.Tensor:
  """float32 [T, H', W', 3] in [0, 255], the short side resized to `short_side` as published:
  full decode, bilinear resize (when the size changes), cast back to uint8 (truncating)."""
  frames = _decode_all(jpegs_T, None, 1, dct_method='')  # '': libjpeg's default, as published.
  out_hw = resized_short_side_shape(tf.shape(frames)[1:3], short_side)
  resized = tf.cond(tf.reduce_any(tf.not_equal(tf.shape(frames)[1:3], out_hw)),
                    lambda: tf.cast(tf.image.resize(frames, out_hw, method='bilinear'), tf.uint8),
                    lambda: frames)
  return tf.cast(resized, tf.float32)


def linearly_spaced_offsets(length: tf.Tensor, size: int, num: int) -> tf.Tensor:
  """int32 [num] offsets int(linspace(0, length - size, num)) (published test crops)."""
  last = tf.cast(tf.maximum(tf.cast(length, tf.int32) - size, 0), tf.float32)
  return tf.cast(tf.linspace(0.0, last, num), tf.int32)


def spatial_crops(frames_TxHxWxC: tf.Tensor, size: int, num_crops: int) -> tf.Tensor:
  """[num_crops, T, size, size, C]: the published test crops, spaced evenly along BOTH axes at once
  (a diagonal: crop i at offset int(i / (n - 1) * free) in y and in x; one crop at the top left)."""
  shape = tf.shape(frames_TxHxWxC)
  ys = linearly_spaced_offsets(shape[1], size, num_crops)
  xs = linearly_spaced_offsets(shape[2], size, num_crops)
  crops = [frames_TxHxWxC[:, ys[i]:ys[i] + size, xs[i]:xs[i] + size, :] for i in range(num_crops)]
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
