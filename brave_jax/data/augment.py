"""Per-view augmentations in the published order, each drawn once per clip for all its frames.

The published chain for an RGB view (docs/design.md, "Augmentation"): scale to [0, 1]
-> Gaussian blur -> horizontal flip -> with p = 0.8 colour jitter as tf.image
does it, in the fixed order random_brightness -> random_saturation ->
random_contrast -> random_hue, then clip to [0, 1] -> with p = 0.2 greyscale
(tf.image.rgb_to_grayscale tiled to 3 channels); a broad RGB view is then
randomly convolved. Every function takes a whole clip `x_TxHxWxC` and an
explicit stateless seed, so a clip's frames share one draw and a run is
reproducible from (seed, example index).

Fast paths, each held to the published op by a test on random inputs
(tests/test_data_decode_augment.py, tolerances there):
- Blur: the published separable filter (view size / 10 taps normalised over the
  full kernel, depthwise, zero 'SAME' padding, horizontal then vertical) as
  XLA-fused shifted sums over [T, H, W*C] (a long innermost axis vectorises),
  with the 1/255 scaling folded into the taps and the taps beyond 5 sigma
  (together < 1.1e-7 of the kernel's weight) skipped; equal to float rounding.
- Colour: tf.image.adjust_saturation and adjust_hue are per-pixel HSV kernels;
  `color_jitter` computes the same formulas (TF's CPU kernels) in one XLA
  program with brightness, contrast (per-frame channel means, as
  adjust_contrast), the clip, and the flip and greyscale around them, on
  channel planes, instead of six separate passes.
- Random convolution: by FFT from FFT_MIN_KERNEL_SIZE on, where it costs a third
  of the direct k = 11 tf.nn.conv2d; equal to float rounding.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import ml_collections
import tensorflow as tf

# tf.image.rgb_to_grayscale's weights.
_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
# TF's he_normal draws a normal truncated at 2 stddev and rescales by this so the
# variance is 2 / fan_in (keras VarianceScaling, 'truncated_normal').
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def _split(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _uniform(seed: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed, minval=lo, maxval=hi)


def _coin(seed: tf.Tensor, prob: float) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed) < prob


def to_unit_range(x: tf.Tensor) -> tf.Tensor:
  """float32 in [0, 1] from pixel values in [0, 255] (uint8 or float), as published: x * (1/255)."""
  return tf.cast(x, tf.float32) * (1.0 / 255.0)


# ---------------------------------------------------------------------------
# Blur.

def blur_kernel_size(image_size: int) -> int:
  """Published: kernel_size = width // 10, made odd as radius = kernel_size // 2, 2 radius + 1."""
  return 2 * ((image_size // 10) // 2) + 1


def gaussian_kernel(sigma: tf.Tensor, radius: int) -> tf.Tensor:
  """Normalised 1-D Gaussian taps [2*radius + 1]: exp(-d^2 / (2 sigma^2)) / sum (published)."""
  d = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-tf.pow(d, 2.0) / (2.0 * tf.pow(tf.cast(sigma, tf.float32), 2.0)))
  return k / tf.reduce_sum(k)


# Taps further than this many sigmas out are skipped: for every sigma in (0.1, 2) and kernel of
# 3, 11 or 23 taps they hold at most 1.1e-7 of the kernel's weight, so no output in [0, 1]
# moves by more than float32 rounding.
_BLUR_SIGMAS = 5.0


def _separable_blur(x_TxHxWxC: tf.Tensor, taps_w: tf.Tensor, taps_h: tf.Tensor,
                    radius: int) -> tf.Tensor:
  """Zero-padded filtering along width, then height, as shifted sums over [T, H, W*C]."""
  t, h, w, c = x_TxHxWxC.shape
  x = tf.reshape(x_TxHxWxC, [t, h, w * c])  # Width shifts are shifts by c along one long axis.
  p = tf.pad(x, [[0, 0], [0, 0], [radius * c, radius * c]])
  acc = p[:, :, 0:w * c] * taps_w[0]
  for i in range(1, 2 * radius + 1):
    acc += p[:, :, i * c:i * c + w * c] * taps_w[i]
  p = tf.pad(acc, [[0, 0], [radius, radius], [0, 0]])
  out = p[:, 0:h] * taps_h[0]
  for i in range(1, 2 * radius + 1):
    out += p[:, i:i + h] * taps_h[i]
  return tf.reshape(out, [t, h, w, c])


@tf.function(jit_compile=True)
def _blur_xla(x_TxHxWxC: tf.Tensor, sigma: tf.Tensor, max_radius: int,
              scale: float) -> tf.Tensor:
  """Published blur of scale * x: taps normalised over the full kernel, the negligible ones skipped."""
  taps = gaussian_kernel(sigma, max_radius)
  radius = tf.clip_by_value(tf.cast(tf.math.ceil(_BLUR_SIGMAS * sigma), tf.int32), 1, max_radius)

  def branch(r: int):
    inner = taps[max_radius - r:max_radius + r + 1]
    return lambda: _separable_blur(x_TxHxWxC, inner * scale, inner, r)
  return tf.switch_case(radius - 1, [branch(r) for r in range(1, max_radius + 1)])


def gaussian_blur(x_TxHxWxC: tf.Tensor, sigma: tf.Tensor, kernel_size: int,
                  scale: float = 1.0) -> tf.Tensor:
  """The published blur of every frame of scale * x (full separable Gaussian kernel, zero
  'SAME' padding); scale = 1/255 folds the published scaling to [0, 1] into the taps."""
  if kernel_size % 2 != 1:
    raise ValueError(f'blur kernel size must be odd, got {kernel_size}')
  if kernel_size == 1:
    return x_TxHxWxC * scale
  return _blur_xla(tf.cast(x_TxHxWxC, tf.float32), tf.cast(sigma, tf.float32), kernel_size // 2,
                   float(scale))


# ---------------------------------------------------------------------------
# Flip.

def flip_left_right(x_TxHxWxC: tf.Tensor) -> tf.Tensor:
  """Mirrors every frame."""
  return tf.reverse(x_TxHxWxC, [2])


def random_flip(x_TxHxWxC: tf.Tensor, prob: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(clip, flipped?) with every frame mirrored left-right with probability `prob` (flow views;
  RGB views flip inside `flip_and_color`)."""
  flip = _coin(seed, prob)
  return tf.cond(flip, lambda: flip_left_right(x_TxHxWxC), lambda: x_TxHxWxC), flip


# ---------------------------------------------------------------------------
# Colour: tf.image's formulas (its CPU kernels), written as tensor ops that XLA fuses.

def adjust_saturation(r: tf.Tensor, g: tf.Tensor, b: tf.Tensor,
                      factor: tf.Tensor) -> list[tf.Tensor]:
  """tf.image.adjust_saturation on channel planes: to HSV, s = clip(s * factor, 0, 1), back.

  Hue and value are kept, so in RGB every channel moves from the max by the
  ratio of the new to the old saturation: out = v - (v - x) * min(factor, v / range).
  Where v <= 0 TF's kernel takes s = 0: the pixel becomes grey at v.
  """
  v = tf.maximum(r, tf.maximum(g, b))
  value_range = v - tf.minimum(r, tf.minimum(g, b))
  safe_range = tf.where(value_range > 0, value_range, tf.ones_like(value_range))
  ratio = tf.minimum(tf.cast(factor, tf.float32), v / safe_range)
  ratio = tf.where((v > 0) & (value_range > 0), ratio, tf.zeros_like(ratio))
  return [v - (v - x) * ratio for x in (r, g, b)]


def adjust_hue(r: tf.Tensor, g: tf.Tensor, b: tf.Tensor, delta: tf.Tensor) -> list[tf.Tensor]:
  """tf.image.adjust_hue on channel planes: hue in [0, 6) shifted by 6 * delta, min and max kept.

  TF's CPU kernel (rgb_to_hv_range / hv_range_to_rgb): the hue of the channel
  order (ties go to its r < g test), then every channel is min + range * f(hue)
  with f the HSV trapezoid of that channel (1 where it is the max, 0 where the
  min, linear between).
  """
  v_max = tf.maximum(r, tf.maximum(g, b))
  v_min = tf.minimum(r, tf.minimum(g, b))
  value_range = v_max - v_min
  safe_range = tf.where(value_range > 0, value_range, tf.ones_like(value_range))
  r_is_max = tf.equal(v_max, r) & tf.logical_not(r < g)
  g_is_max = tf.logical_not(r_is_max) & tf.equal(v_max, g)
  numerator = tf.where(r_is_max, g - b, tf.where(g_is_max, b - r, r - g))  # One division, not 3.
  offset = tf.where(r_is_max, 0.0, tf.where(g_is_max, 2.0, 4.0))
  h = numerator / safe_range + offset
  h = tf.where(value_range > 0, h, tf.zeros_like(h)) + tf.cast(delta, tf.float32) * 6.0
  h = tf.where(h < 0, h + 6.0, h)  # Both wraps, as the kernel's two loops.
  h = tf.where(h >= 6.0, h - 6.0, h)
  f_r = tf.clip_by_value(tf.abs(h - 3.0) - 1.0, 0.0, 1.0)
  f_g = tf.clip_by_value(2.0 - tf.abs(h - 2.0), 0.0, 1.0)
  f_b = tf.clip_by_value(2.0 - tf.abs(h - 4.0), 0.0, 1.0)
  return [v_min + value_range * f for f in (f_r, f_g, f_b)]


def _gray(r: tf.Tensor, g: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """tf.image.rgb_to_grayscale's weighted sum."""
  w_r, w_g, w_b = _GRAY_WEIGHTS
  return r * w_r + g * w_g + b * w_b


def _planes(x_TxHxWx3: tf.Tensor, flip: tf.Tensor) -> list[tf.Tensor]:
  """The three channel planes [T, H, W] of the clip, mirrored when `flip` (a read, not a pass)."""
  x = tf.where(flip, tf.reverse(x_TxHxWx3, [2]), x_TxHxWx3)
  return tf.unstack(tf.transpose(x, [3, 0, 1, 2]))


def _interleave(planes: Sequence[tf.Tensor], gray: tf.Tensor) -> tf.Tensor:
  """[T, H, W, 3] from channel planes, or their greyscale on all three when `gray`."""
  y = _gray(*planes)
  return tf.stack([tf.where(gray, y, p) for p in planes], -1)


@tf.function(jit_compile=True)
def _flip_jitter_gray(x_TxHxWx3: tf.Tensor, flip: tf.Tensor, brightness_delta: tf.Tensor,
                      saturation_factor: tf.Tensor, contrast_factor: tf.Tensor,
                      hue_delta: tf.Tensor, gray: tf.Tensor) -> tf.Tensor:
  r, g, b = [p + tf.cast(brightness_delta, tf.float32) for p in _planes(x_TxHxWx3, flip)]
  planes = adjust_saturation(r, g, b, saturation_factor)
  means = [tf.reduce_mean(p, axis=[1, 2], keepdims=True) for p in planes]  # adjust_contrast's.
  factor = tf.cast(contrast_factor, tf.float32)
  planes = [(p - m) * factor + m for p, m in zip(planes, means)]
  planes = adjust_hue(*planes, hue_delta)
  return _interleave([tf.clip_by_value(p, 0.0, 1.0) for p in planes], gray)


@tf.function(jit_compile=True)
def _flip_gray(x_TxHxWx3: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
  """Greyscale (on all three channels), mirrored when `flip`."""
  w_r, w_g, w_b = _GRAY_WEIGHTS
  gray = x_TxHxWx3[..., 0] * w_r + x_TxHxWx3[..., 1] * w_g + x_TxHxWx3[..., 2] * w_b
  gray = tf.where(flip, tf.reverse(gray, [2]), gray)
  return tf.stack([gray, gray, gray], -1)


def color_jitter(x_TxHxWx3: tf.Tensor, brightness_delta: tf.Tensor, saturation_factor: tf.Tensor,
                 contrast_factor: tf.Tensor, hue_delta: tf.Tensor) -> tf.Tensor:
  """The published jitter with given strengths: brightness -> saturation -> contrast -> hue -> clip.

  Equals tf.image.adjust_brightness/saturation/contrast/hue applied in turn and
  tf.clip_by_value(., 0, 1), to float rounding (tests hold it to that).
  """
  no = tf.constant(False)
  return _flip_jitter_gray(x_TxHxWx3, no, brightness_delta, saturation_factor, contrast_factor,
                           hue_delta, no)


class ColorDraw(NamedTuple):
  """One clip's colour draws: jitter?, its four strengths, greyscale?"""
  jitter: tf.Tensor
  strengths: tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]
  gray: tf.Tensor


def draw_color(aug: ml_collections.ConfigDict, seed: tf.Tensor) -> ColorDraw:
  """Jitter with p = color_jitter_prob (strengths uniform in the config's ranges, as tf.image's
  random_* draw them), greyscale with p = grayscale_prob."""
  s_coin, s_b, s_s, s_c, s_h, s_gray = _split(seed, 6)
  strengths = (_uniform(s_b, -aug.brightness, aug.brightness),
               _uniform(s_s, aug.saturation_range[0], aug.saturation_range[1]),
               _uniform(s_c, aug.contrast_range[0], aug.contrast_range[1]),
               _uniform(s_h, -aug.hue, aug.hue))
  return ColorDraw(_coin(s_coin, aug.color_jitter_prob), strengths,
                   _coin(s_gray, aug.grayscale_prob))


def flip_and_color(x_TxHxWx3: tf.Tensor, flip: tf.Tensor, draw: ColorDraw) -> tf.Tensor:
  """Mirror when `flip`, then the drawn jitter and greyscale: one XLA pass (two with jitter),
  none for a clip that is neither jittered, greyed nor flipped."""
  def no_jitter():
    return tf.cond(draw.gray, lambda: _flip_gray(x_TxHxWx3, flip),
                   lambda: tf.cond(flip, lambda: flip_left_right(x_TxHxWx3),
                                   lambda: x_TxHxWx3))
  return tf.cond(draw.jitter,
                 lambda: _flip_jitter_gray(x_TxHxWx3, flip, *draw.strengths, draw.gray),
                 no_jitter)


# ---------------------------------------------------------------------------
# Random convolution.

# Direct convolution costs 9k^2 multiply-adds per pixel, a zero-padded FFT about
# the same for every k: for a 64x112x112 clip on one thread the FFT takes less
# CPU from k = 7 on (17 vs 20 ms; 17 vs 45 ms at k = 11; bench/random_convolve.py).
FFT_MIN_KERNEL_SIZE = 7


def _fft_length(n: int) -> int:
  """Smallest 2^a 3^b 5^c >= n (sizes the FFT handles fastest)."""
  while True:
    m = n
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1


@tf.function(jit_compile=True)
def conv_same_fft(x_TxHxWxC: tf.Tensor, kernel_kxkxCxO: tf.Tensor) -> tf.Tensor:
  """tf.nn.conv2d(x, kernel, 1, 'SAME') (a cross-correlation with zero padding) via 2-D FFTs.

  Padding each side to >= size + k // 2 keeps the circular wrap-around inside the
  zero border, so the result equals the direct one up to float rounding (~1e-5).
  """
  k = int(kernel_kxkxCxO.shape[0])
  h, w = int(x_TxHxWxC.shape[1]), int(x_TxHxWxC.shape[2])
  ph, pw = _fft_length(h + k // 2), _fft_length(w + k // 2)
  x_spec = tf.signal.rfft2d(tf.transpose(x_TxHxWxC, [0, 3, 1, 2]), fft_length=[ph, pw])
  # Cross-correlation = convolution with the flipped kernel, centred on the origin.
  flipped = tf.transpose(kernel_kxkxCxO[::-1, ::-1], [2, 3, 0, 1])  # [C, O, k, k]
  padded = tf.pad(flipped, [[0, 0], [0, 0], [0, ph - k], [0, pw - k]])
  k_spec = tf.signal.rfft2d(tf.roll(padded, shift=[-(k // 2), -(k // 2)], axis=[2, 3]))
  y_spec = tf.reduce_sum(x_spec[:, :, None] * k_spec[None], axis=1)  # [T, O, ph, pw//2+1]
  y = tf.signal.irfft2d(y_spec, fft_length=[ph, pw])[:, :, :h, :w]
  return tf.transpose(y, [0, 2, 3, 1])


def conv_same(x_TxHxWxC: tf.Tensor, kernel_kxkxCxO: tf.Tensor) -> tf.Tensor:
  """SAME convolution of every frame by one kernel of static size, by the cheaper method."""
  if int(kernel_kxkxCxO.shape[0]) >= FFT_MIN_KERNEL_SIZE:
    return conv_same_fft(x_TxHxWxC, kernel_kxkxCxO)
  return tf.nn.conv2d(x_TxHxWxC, kernel_kxkxCxO, 1, 'SAME')


def he_normal_kernel(k: int, channels: int, seed: tf.Tensor) -> tf.Tensor:
  """k x k x C x C kernel as TF's he_normal draws it: normal truncated at 2 stddev, with
  stddev sqrt(2 / fan_in) / 0.8796 so the variance is 2 / fan_in (fan_in = k * k * C)."""
  stddev = math.sqrt(2.0 / (k * k * channels)) / _TRUNCATED_NORMAL_STDDEV
  return tf.random.stateless_truncated_normal([k, k, channels, channels], seed, stddev=stddev)


def draw_random_conv(kernel_sizes: Sequence[int], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(index into kernel_sizes, drawn uniformly; the seed of the kernel's weights)."""
  s_k, s_w = _split(seed, 2)
  return tf.random.stateless_uniform([], s_k, 0, len(kernel_sizes), dtype=tf.int32), s_w


def random_convolve(x_TxHxWx3: tf.Tensor, kernel_sizes: Sequence[int], seed: tf.Tensor,
                    is_gray: tf.Tensor | bool = False) -> tf.Tensor:
  """Convolves every frame with one random k x k x 3 x 3 he_normal kernel, k drawn uniformly from
  kernel_sizes (published: 1, 3, ..., 11), SAME (zero) padding: BraVe's randomly convolved view.

  When the clip is known to be grey (all channels equal) the same result is
  computed from one input channel with the kernel summed over its inputs: 3x
  less work for the most expensive op of the broad view. Each k is its own
  branch so the convolution sees a static kernel shape (and large k go by FFT).
  """
  index, s_w = draw_random_conv(kernel_sizes, seed)
  gray = tf.convert_to_tensor(is_gray)

  def branch(k: int):
    def fn():
      kernel = he_normal_kernel(k, 3, s_w)
      return tf.cond(
          gray,
          lambda: conv_same(x_TxHxWx3[..., :1], tf.reduce_sum(kernel, 2, keepdims=True)),
          lambda: conv_same(x_TxHxWx3, kernel))
    return fn
  return tf.switch_case(index, [branch(int(k)) for k in kernel_sizes])


# ---------------------------------------------------------------------------
# The chain.

class ViewDraw(NamedTuple):
  """Every random choice of one view's chain, drawn once per clip."""
  blur: tf.Tensor  # Blur at all? (published: always)
  sigma: tf.Tensor
  flip: tf.Tensor
  color: ColorDraw
  rc_seed: tf.Tensor  # Kernel size and weights of the random convolution (`draw_random_conv`).


def draw_view(aug: ml_collections.ConfigDict, seed: tf.Tensor) -> ViewDraw:
  """The draws of `augment_clip` for one clip (exposed so tests can replay them)."""
  s_blur, s_sigma, s_flip, s_color, s_rc = _split(seed, 5)
  return ViewDraw(blur=_coin(s_blur, aug.blur_prob),
                  sigma=_uniform(s_sigma, aug.blur_sigma_range[0], aug.blur_sigma_range[1]),
                  flip=_coin(s_flip, aug.flip_prob), color=draw_color(aug, s_color), rc_seed=s_rc)


def apply_view(x_TxHxWx3: tf.Tensor, draw: ViewDraw, aug: ml_collections.ConfigDict, *,
               blur: bool = True, random_conv: bool = False) -> tf.Tensor:
  """The published per-view chain with given draws on pixels in [0, 255]: scale to [0, 1],
  blur (kernel = view size / 10), flip, colour jitter + clip, greyscale, and (broad RGB views
  only) random convolution."""
  x = tf.cast(x_TxHxWx3, tf.float32)
  if blur:  # The scaling to [0, 1] is folded into the blur's taps.
    blurred = lambda: gaussian_blur(x, draw.sigma, blur_kernel_size(int(x.shape[2])), 1.0 / 255.0)
    x = blurred() if aug.blur_prob >= 1.0 else tf.cond(draw.blur, blurred,
                                                        lambda: to_unit_range(x))
  else:
    x = to_unit_range(x)
  x = flip_and_color(x, draw.flip, draw.color)
  if random_conv:
    x = random_convolve(x, aug.rc_kernel_sizes, draw.rc_seed, is_gray=draw.color.gray)
  return x


def augment_clip(x_TxHxWx3: tf.Tensor, aug: ml_collections.ConfigDict, seed: tf.Tensor, *,
                 blur: bool = True, random_conv: bool = False) -> tf.Tensor:
  """`apply_view` with this clip's draws: all frames alike, reproducible from the seed."""
  return apply_view(x_TxHxWx3, draw_view(aug, seed), aug, blur=blur, random_conv=random_conv)
