"""Per-view augmentations, each drawn once per clip and applied to all its frames alike.

Every function takes a whole clip `x_TxHxWxC` and an explicit stateless seed,
so a clip's frames share one flip/colour/blur and a run is reproducible from
(seed, example index).

Speed (bench/input_pipeline.py): a 16x224x224 clip is 2.4M pixels, and on a
2-core host every full pass over it costs ~2 ms, so the chain is built to make
few passes:
- Colour jitter (p = color_jitter_prob) applies brightness, contrast,
  saturation and hue in a random order per clip, as SimCLR/BraVe do. All four
  are affine colour maps (saturation blends with the luma image, the
  PIL/torchvision definition; hue rotates chroma in YIQ space by hue*2*pi;
  contrast scales deviations from the per-frame channel mean, as
  tf.image.adjust_contrast), as is greyscale (luma on all channels, p =
  grayscale_prob) and the scaling to [0, 1]. Their composition is therefore
  one 3x3 matrix plus a per-frame offset, applied in a single XLA-fused pass
  together with the flip. Difference from applying tf.image.adjust_* one at a
  time: we clip to [0, 1] once at the end instead of after every op.
- Gaussian blur: kernel = view size / 10 (radius size // 20) as published,
  separable, zero padded; taps beyond 3 sigma (< 0.3% of the weight) are
  dropped and the rest renormalised (`truncate=True`, used in training), which
  changes no pixel by more than ~0.005 and saves half the blur for the typical
  sigma. Computed as XLA-fused shifted sums, ~3x faster than depthwise_conv2d.
- Random convolution (broad RGB views): direct for small kernels, by FFT from
  FFT_MIN_KERNEL_SIZE on, where it costs a third of the direct k = 11 pass.
"""
from __future__ import annotations

import math
from typing import Sequence

import ml_collections
import numpy as np
import tensorflow as tf

_LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights, as tf.image.rgb_to_grayscale.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.595716, -0.274453, -0.321263],
                        [0.211456, -0.522591, 0.311135]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_BLUR_TRUNCATE_SIGMAS = 3.0


def _split(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _uniform(seed: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed, minval=lo, maxval=hi)


def _coin(seed: tf.Tensor, prob: float) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed) < prob


def to_unit_range(x: tf.Tensor) -> tf.Tensor:
  """float32 in [0, 1] from pixel values in [0, 255] (uint8 or float)."""
  return tf.cast(x, tf.float32) * (1.0 / 255.0)


# ---------------------------------------------------------------------------
# Flip.

def flip_left_right(x_TxHxWxC: tf.Tensor) -> tf.Tensor:
  """Mirrors every frame."""
  return tf.reverse(x_TxHxWxC, [2])


def random_flip(x_TxHxWxC: tf.Tensor, prob: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(clip, flipped?) with every frame mirrored left-right with probability `prob`."""
  flip = _coin(seed, prob)
  return tf.cond(flip, lambda: flip_left_right(x_TxHxWxC), lambda: x_TxHxWxC), flip


# ---------------------------------------------------------------------------
# Colour as an affine map: x_now = P @ x0 + q + R @ mean(x0), per frame.
# Each op below maps (P, q, R) to the state after applying it.

ColorState = tuple[tf.Tensor, tf.Tensor, tf.Tensor]


def identity_color(scale: float = 1.0) -> ColorState:
  """The state of an untouched clip, times `scale` (1/255 to map pixels to [0, 1])."""
  return scale * tf.eye(3), tf.zeros([3]), tf.zeros([3, 3])


def brightness_op(state: ColorState, delta: tf.Tensor) -> ColorState:
  """Adds delta to every channel (tf.image.adjust_brightness)."""
  p, q, r = state
  return p, q + delta, r


def contrast_op(state: ColorState, factor: tf.Tensor) -> ColorState:
  """(x - mean) * factor + mean, mean per frame and channel (tf.image.adjust_contrast)."""
  p, q, r = state
  return factor * p, q, (p + r) - factor * p


def matrix_op(state: ColorState, m_3x3: tf.Tensor) -> ColorState:
  """Applies a linear colour map to the current colours."""
  p, q, r = state
  return m_3x3 @ p, tf.linalg.matvec(m_3x3, q), m_3x3 @ r


def saturation_matrix(factor: tf.Tensor) -> tf.Tensor:
  """3x3 map blending each pixel with its luma: factor 0 = grey, 1 = identity."""
  luma = tf.constant(_LUMA, tf.float32)[None, :]
  factor = tf.cast(factor, tf.float32)
  return factor * tf.eye(3) + (1.0 - factor) * tf.tile(luma, [3, 1])


def hue_matrix(delta: tf.Tensor) -> tf.Tensor:
  """3x3 map rotating chroma (I, Q in YIQ) by delta turns; delta 0 = identity."""
  theta = tf.cast(delta, tf.float32) * (2.0 * math.pi)
  cos, sin = tf.cos(theta), tf.sin(theta)
  one, zero = tf.ones([]), tf.zeros([])
  rot = tf.stack([tf.stack([one, zero, zero]), tf.stack([zero, cos, -sin]),
                  tf.stack([zero, sin, cos])])
  return tf.constant(_YIQ_TO_RGB) @ rot @ tf.constant(_RGB_TO_YIQ)


def grayscale_matrix() -> tf.Tensor:
  """3x3 map putting the luma on all three channels (tf.image.rgb_to_grayscale, tiled)."""
  return tf.tile(tf.constant(_LUMA, tf.float32)[None, :], [3, 1])


def color_jitter_ops(state: ColorState, aug: ml_collections.ConfigDict, seed: tf.Tensor,
                     random_order: bool = True) -> ColorState:
  """Brightness, contrast, saturation, hue with clip-wide random strengths, in random order."""
  s_b, s_c, s_s, s_h, s_order = _split(seed, 5)
  brightness = _uniform(s_b, -aug.brightness, aug.brightness)
  contrast = _uniform(s_c, aug.contrast_range[0], aug.contrast_range[1])
  saturation = _uniform(s_s, aug.saturation_range[0], aug.saturation_range[1])
  hue = _uniform(s_h, -aug.hue, aug.hue)
  ops = [lambda s: brightness_op(s, brightness), lambda s: contrast_op(s, contrast),
         lambda s: matrix_op(s, saturation_matrix(saturation)),
         lambda s: matrix_op(s, hue_matrix(hue))]
  if not random_order:
    for op in ops:
      state = op(state)
    return state
  order = tf.argsort(tf.random.stateless_uniform([4], s_order))
  for i in range(4):
    state = tf.switch_case(order[i], [lambda op=op, s=state: op(s) for op in ops])
  return state


def random_color_state(aug: ml_collections.ConfigDict, seed: tf.Tensor,
                       scale: float = 1.0 / 255.0) -> tuple[ColorState, tf.Tensor]:
  """(state, greyed?): scale, colour jitter with p = color_jitter_prob, then greyscale with
  p = grayscale_prob."""
  s_jit_coin, s_jit, s_gray = _split(seed, 3)
  state = identity_color(scale)
  state = tf.cond(_coin(s_jit_coin, aug.color_jitter_prob),
                  lambda: color_jitter_ops(state, aug, s_jit), lambda: state)
  gray = _coin(s_gray, aug.grayscale_prob)
  return tf.cond(gray, lambda: matrix_op(state, grayscale_matrix()), lambda: state), gray


@tf.function(jit_compile=True)
def apply_color(x_TxHxWx3: tf.Tensor, p: tf.Tensor, q: tf.Tensor, r: tf.Tensor,
                flip: tf.Tensor) -> tf.Tensor:
  """clip(P x + q + R mean_t(x), 0, 1), optionally mirrored: one fused pass over the clip.

  The 3x3 mix is written as per-channel multiply-adds (not a dot) so XLA fuses
  it with the flip, offset and clip; the frame means are only computed when a
  contrast change made R non-zero.
  """
  x = tf.where(flip, tf.reverse(x_TxHxWx3, [2]), x_TxHxWx3)
  num_frames = tf.shape(x_TxHxWx3)[0]
  mean_Tx3 = tf.cond(tf.reduce_any(tf.not_equal(r, 0.0)),
                     lambda: tf.reduce_mean(x_TxHxWx3, axis=[1, 2]),
                     lambda: tf.zeros([num_frames, 3]))
  bias_Tx3 = q[None, :] + tf.einsum('ij,tj->ti', r, mean_Tx3)
  channels = [x[..., j:j + 1] for j in range(3)]
  out = [channels[0] * p[i, 0] + channels[1] * p[i, 1] + channels[2] * p[i, 2]
         + bias_Tx3[:, None, None, i:i + 1] for i in range(3)]
  return tf.clip_by_value(tf.concat(out, -1), 0.0, 1.0)


def to_grayscale(x_TxHxWx3: tf.Tensor) -> tf.Tensor:
  """Luma copied to all three channels."""
  return tf.einsum('thwj,ij->thwi', x_TxHxWx3, grayscale_matrix())


# ---------------------------------------------------------------------------
# Blur.

def blur_kernel_size(image_size: int) -> int:
  """Odd kernel of about a tenth of the view side (SimCLR/BraVe: radius = size // 20)."""
  return 2 * (image_size // 20) + 1


def gaussian_kernel(sigma: tf.Tensor, radius: int) -> tf.Tensor:
  """Normalised 1-D Gaussian taps [2*radius + 1]."""
  d = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-tf.square(d) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
  return k / tf.reduce_sum(k)


def _separable_blur(x_TxHxWxC: tf.Tensor, taps: tf.Tensor, radius: int) -> tf.Tensor:
  """Zero-padded separable filtering as shifted sums (XLA fuses them into one loop per axis)."""
  h, w = x_TxHxWxC.shape[1], x_TxHxWxC.shape[2]
  p = tf.pad(x_TxHxWxC, [[0, 0], [0, 0], [radius, radius], [0, 0]])
  acc = p[:, :, 0:w] * taps[0]
  for i in range(1, 2 * radius + 1):
    acc += p[:, :, i:i + w] * taps[i]
  p = tf.pad(acc, [[0, 0], [radius, radius], [0, 0], [0, 0]])
  out = p[:, 0:h] * taps[0]
  for i in range(1, 2 * radius + 1):
    out += p[:, i:i + h] * taps[i]
  return out


@tf.function(jit_compile=True)
def _blur_xla(x_TxHxWxC: tf.Tensor, sigma: tf.Tensor, max_radius: int,
              truncate: bool) -> tf.Tensor:
  if not truncate:
    return _separable_blur(x_TxHxWxC, gaussian_kernel(sigma, max_radius), max_radius)
  radius = tf.clip_by_value(tf.cast(tf.math.ceil(_BLUR_TRUNCATE_SIGMAS * sigma), tf.int32),
                            1, max_radius)
  branches = [lambda r=r: _separable_blur(x_TxHxWxC, gaussian_kernel(sigma, r), r)
              for r in range(1, max_radius + 1)]
  return tf.switch_case(radius - 1, branches)


def gaussian_blur(x_TxHxWxC: tf.Tensor, sigma: tf.Tensor, kernel_size: int,
                  truncate: bool = False) -> tf.Tensor:
  """Separable Gaussian blur with zero ('SAME') padding, one kernel for every frame."""
  if kernel_size % 2 != 1:
    raise ValueError(f'blur kernel size must be odd, got {kernel_size}')
  if kernel_size == 1:
    return x_TxHxWxC
  return _blur_xla(x_TxHxWxC, tf.cast(sigma, tf.float32), kernel_size // 2, truncate)


def random_blur(x_TxHxWxC: tf.Tensor, prob: float, sigma_range: Sequence[float],
                seed: tf.Tensor, truncate: bool = True) -> tf.Tensor:
  """Blur with probability `prob`, sigma uniform in sigma_range, kernel = view size / 10."""
  s_coin, s_sigma = _split(seed, 2)
  kernel_size = blur_kernel_size(int(x_TxHxWxC.shape[2]))
  sigma = _uniform(s_sigma, sigma_range[0], sigma_range[1])
  return tf.cond(_coin(s_coin, prob),
                 lambda: gaussian_blur(x_TxHxWxC, sigma, kernel_size, truncate),
                 lambda: x_TxHxWxC)


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


def random_convolve(x_TxHxWx3: tf.Tensor, kernel_sizes: Sequence[int], seed: tf.Tensor,
                    is_gray: tf.Tensor | bool = False) -> tf.Tensor:
  """Convolves every frame with one random k x k x 3 x 3 He-normal kernel (std sqrt(2/(k*k*3))),
  k drawn uniformly from kernel_sizes, SAME (zero) padding: BraVe's randomly convolved view.

  When the clip is known to be grey (all channels equal) the same result is
  computed from one input channel with the kernel summed over its inputs: 3x
  less work for the most expensive op of the broad view. Each k is its own
  branch so the convolution sees a static kernel shape (and large k go by FFT).
  """
  s_k, s_w = _split(seed, 2)
  index = tf.random.stateless_uniform([], s_k, 0, len(kernel_sizes), dtype=tf.int32)
  gray = tf.convert_to_tensor(is_gray)

  def branch(k: int):
    def fn():
      stddev = math.sqrt(2.0 / (k * k * 3))
      kernel = tf.random.stateless_normal([k, k, 3, 3], s_w) * stddev
      return tf.cond(
          gray,
          lambda: conv_same(x_TxHxWx3[..., :1], tf.reduce_sum(kernel, 2, keepdims=True)),
          lambda: conv_same(x_TxHxWx3, kernel))
    return fn
  return tf.switch_case(index, [branch(int(k)) for k in kernel_sizes])


# ---------------------------------------------------------------------------
# The chain.

def augment_clip(x_TxHxWx3: tf.Tensor, aug: ml_collections.ConfigDict, seed: tf.Tensor, *,
                 blur: bool = True, random_conv: bool = False) -> tf.Tensor:
  """The per-view chain on pixels in [0, 255] -> [0, 1]: flip, colour jitter, greyscale (one
  fused pass), blur, and (broad RGB views only) random convolution. All frames alike."""
  s_flip, s_color, s_blur, s_rc = _split(seed, 4)
  (p, q, r), gray = random_color_state(aug, s_color)
  flip = _coin(s_flip, aug.flip_prob)
  x = apply_color(tf.cast(x_TxHxWx3, tf.float32), p, q, r, flip)
  if blur:
    x = random_blur(x, aug.blur_prob, aug.blur_sigma_range, s_blur)
  if random_conv:
    x = random_convolve(x, aug.rc_kernel_sizes, s_rc, is_gray=gray)
  return x
