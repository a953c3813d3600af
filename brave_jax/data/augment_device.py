"""The per-view augmentations in jax.numpy, so they can run inside the jitted training step.

The host input pipeline spends most of its CPU on the view chain of
`augment.py` (blur and colour at 224 px, random convolution of 64 broad
frames). Here the same chain is split in two:

- host (TF, in tf.data): `draw_view` makes every random choice of a clip with
  the TF stateless calls `augment.draw_view` makes, from the same seed, and
  returns them as small fixed-shape tensors (`ViewDraws`); the random
  convolution's kernel is drawn there too (TF's stateless truncated normal has
  no JAX twin), zero-padded to the largest configured size;
- device (JAX, under jit / pmap / vmap): `apply_view` runs the published chain
  on one clip with those draws, `apply_views` on a batch of clips.

Wired in by config.data.augment_on='device': the input pipeline ships each
RGB view's crops (`shipped_frames`, float32 or uint8) and its draws under
batch[DRAWS]; the pmapped training and fine-tuning steps run `batch_preparer`'s
function (`augment_batch`) on each device's batch before the model. The
pretraining pipeline also ships the broad audio view as its waveform
(`ships_broad_audio_waveform`), and the pretraining step's preparer
(`pretraining_batch_preparer`) turns it into the log-mel (`log_mel_of_broad_audio`,
with `spectrogram_device`): the host's log-mel was about a tenth of its CPU per V/A clip.

Both paths consume identical draws, so a clip augmented on the device equals the
host's `augment.augment_clip` to float rounding (tests/test_augment_device.py
holds every op and the chain to the host's tolerances against the published ops).

Where the device differs from the host fast paths, it takes the published op:
the blur uses every tap of the kernel (the host skips those beyond 5 sigma), the
random convolution is a direct 'SAME' convolution with the drawn k x k kernel
centred in a zero K x K one (the host picks FFT or direct per k, and a 1-channel
shortcut for grey clips). Per-clip branches become selects under vmap, so the
device computes blur, jitter and greyscale for every clip and picks.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import tensorflow as tf

from brave_jax import config_base
from brave_jax.data import augment
from brave_jax.data import resize_device
from brave_jax.data import spectrogram_device

_GRAY_WEIGHTS = augment._GRAY_WEIGHTS  # tf.image.rgb_to_grayscale's. pylint: disable=protected-access


# One clip's draws (on the device, every field has a leading [B] when batched): a plain dict so
# the input pipeline's tf.nest maps (fill bad rows, split over devices, to numpy) and jax's
# trees take it as they take the batch, with no None where a view has no random convolution.
#   blur        bool     blur at all (published: always)
#   sigma       float32  the blur's standard deviation in pixels
#   flip        bool     mirror left-right
#   jitter      bool     apply the colour jitter
#   brightness  float32  delta, added
#   saturation  float32  factor
#   contrast    float32  factor
#   hue         float32  delta, in turns of the colour wheel
#   gray        bool     replace by greyscale on all three channels
#   rc_kernel   float32 [K, K, 3, 3], K = max(rc_kernel_sizes): the drawn k x k kernel
#               centred, zeros around; only in the draws of randomly convolved views
ViewDraws = Mapping[str, Any]
VIEW_DRAW_KEYS = frozenset(('blur', 'sigma', 'flip', 'jitter', 'brightness', 'saturation',
                            'contrast', 'hue', 'gray'))
# Where a batch augmented on the device carries its draws: batch[DRAWS] mirrors the batch, a
# ViewDraws at the path of each RGB view (e.g. batch[DRAWS]['broad']['rc'] for
# batch['broad']['rc']); views without draws (flow, audio) are left as they are.
DRAWS = 'draws'


# ---------------------------------------------------------------------------
# Host: the draws, from the same TF stateless calls as augment.draw_view.

def drawn_rc_kernel(kernel_sizes: Sequence[int], rc_seed: tf.Tensor) -> tf.Tensor:
  """float32 [K, K, 3, 3]: the kernel `augment.random_convolve` draws from `rc_seed`, centred in
  zeros of the largest size K so every clip's kernel has one static shape."""
  size = max(int(k) for k in kernel_sizes)
  index, weights_seed = augment.draw_random_conv(kernel_sizes, rc_seed)

  def branch(k: int):
    pad = (size - k) // 2
    return lambda: tf.pad(augment.he_normal_kernel(k, 3, weights_seed),
                          [[pad, pad], [pad, pad], [0, 0], [0, 0]])
  return tf.ensure_shape(tf.switch_case(index, [branch(int(k)) for k in kernel_sizes]),
                         [size, size, 3, 3])


def draw_view(aug: ml_collections.ConfigDict, seed: tf.Tensor, *,
              random_conv: bool = False) -> dict[str, tf.Tensor]:
  """The draws `augment.augment_clip(x, aug, seed, random_conv=...)` makes, as tensors to ship
  (keys as `ViewDraws`)."""
  draw = augment.draw_view(aug, seed)
  brightness, saturation, contrast, hue = draw.color.strengths
  draws = dict(blur=draw.blur, sigma=draw.sigma, flip=draw.flip,
               jitter=draw.color.jitter, brightness=brightness, saturation=saturation,
               contrast=contrast, hue=hue, gray=draw.color.gray)
  if random_conv:
    draws['rc_kernel'] = drawn_rc_kernel(aug.rc_kernel_sizes, draw.rc_seed)
  return draws


# ---------------------------------------------------------------------------
# Device: the published ops in jax.numpy, on one clip x_TxHxWxC.

def to_unit_range(x: jax.Array) -> jax.Array:
  """float32 in [0, 1] from pixel values in [0, 255] (uint8 or float), as published: x * (1/255)."""
  return x.astype(jnp.float32) * (1.0 / 255.0)


def gaussian_taps(sigma: jax.Array, radius: int) -> jax.Array:
  """Normalised 1-D Gaussian taps [2*radius + 1]: exp(-d^2 / (2 sigma^2)) / sum (published)."""
  d = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigma = jnp.asarray(sigma, jnp.float32)
  k = jnp.exp(-d * d / (2.0 * sigma * sigma))
  return k / jnp.sum(k)


def gaussian_blur(x_TxHxWxC: jax.Array, sigma: jax.Array, kernel_size: int,
                  scale: float = 1.0) -> jax.Array:
  """The published blur of every frame of scale * x: the separable kernel along width, then
  height, zero 'SAME' padding; shifted sums over [T, H, W*C] that XLA fuses into two passes."""
  if kernel_size % 2 != 1:
    raise ValueError(f'blur kernel size must be odd, got {kernel_size}')
  x = x_TxHxWxC.astype(jnp.float32)
  if kernel_size == 1:
    return x * scale
  radius = kernel_size // 2
  taps = gaussian_taps(sigma, radius)
  taps_w = taps * scale
  t, h, w, c = x.shape
  p = jnp.pad(x.reshape(t, h, w * c), ((0, 0), (0, 0), (radius * c, radius * c)))
  acc = p[:, :, 0:w * c] * taps_w[0]
  for i in range(1, kernel_size):
    acc = acc + p[:, :, i * c:i * c + w * c] * taps_w[i]
  p = jnp.pad(acc, ((0, 0), (radius, radius), (0, 0)))
  out = p[:, 0:h] * taps[0]
  for i in range(1, kernel_size):
    out = out + p[:, i:i + h] * taps[i]
  return out.reshape(t, h, w, c)


def random_flip(x_TxHxWxC: jax.Array, flip: jax.Array) -> jax.Array:
  """Every frame mirrored left-right where `flip`."""
  return jnp.where(flip, x_TxHxWxC[:, :, ::-1], x_TxHxWxC)


def adjust_saturation(r: jax.Array, g: jax.Array, b: jax.Array,
                      factor: jax.Array) -> list[jax.Array]:
  """tf.image.adjust_saturation on channel planes (the formula of `augment.adjust_saturation`:
  hue and value kept, each channel moves from the max by min(factor, v / range))."""
  v = jnp.maximum(r, jnp.maximum(g, b))
  value_range = v - jnp.minimum(r, jnp.minimum(g, b))
  safe_range = jnp.where(value_range > 0, value_range, 1.0)
  ratio = jnp.minimum(jnp.asarray(factor, jnp.float32), v / safe_range)
  ratio = jnp.where((v > 0) & (value_range > 0), ratio, 0.0)
  return [v - (v - x) * ratio for x in (r, g, b)]


def adjust_hue(r: jax.Array, g: jax.Array, b: jax.Array, delta: jax.Array) -> list[jax.Array]:
  """tf.image.adjust_hue on channel planes (TF's CPU kernel, as `augment.adjust_hue`): hue in
  [0, 6) shifted by 6 * delta, min and max kept, each channel on its HSV trapezoid."""
  v_max = jnp.maximum(r, jnp.maximum(g, b))
  v_min = jnp.minimum(r, jnp.minimum(g, b))
  value_range = v_max - v_min
  safe_range = jnp.where(value_range > 0, value_range, 1.0)
  r_is_max = (v_max == r) & ~(r < g)
  g_is_max = ~r_is_max & (v_max == g)
  numerator = jnp.where(r_is_max, g - b, jnp.where(g_is_max, b - r, r - g))
  offset = jnp.where(r_is_max, 0.0, jnp.where(g_is_max, 2.0, 4.0))
  h = numerator / safe_range + offset
  h = jnp.where(value_range > 0, h, 0.0) + jnp.asarray(delta, jnp.float32) * 6.0
  h = jnp.where(h < 0, h + 6.0, h)
  h = jnp.where(h >= 6.0, h - 6.0, h)
  f_r = jnp.clip(jnp.abs(h - 3.0) - 1.0, 0.0, 1.0)
  f_g = jnp.clip(2.0 - jnp.abs(h - 2.0), 0.0, 1.0)
  f_b = jnp.clip(2.0 - jnp.abs(h - 4.0), 0.0, 1.0)
  return [v_min + value_range * f for f in (f_r, f_g, f_b)]


def color_jitter(x_TxHxWx3: jax.Array, brightness: jax.Array, saturation: jax.Array,
                 contrast: jax.Array, hue: jax.Array) -> jax.Array:
  """The published jitter: brightness -> saturation -> contrast (per-frame channel means, as
  tf.image.adjust_contrast) -> hue -> clip to [0, 1]."""
  x = x_TxHxWx3.astype(jnp.float32)
  planes = [x[..., i] + jnp.asarray(brightness, jnp.float32) for i in range(3)]
  planes = adjust_saturation(*planes, saturation)
  factor = jnp.asarray(contrast, jnp.float32)
  means = [jnp.mean(p, axis=(1, 2), keepdims=True) for p in planes]
  planes = [(p - m) * factor + m for p, m in zip(planes, means)]
  planes = adjust_hue(*planes, hue)
  return jnp.stack([jnp.clip(p, 0.0, 1.0) for p in planes], -1)


def to_grayscale(x_TxHxWx3: jax.Array) -> jax.Array:
  """tf.image.rgb_to_grayscale tiled to three channels (the published colour drop)."""
  w_r, w_g, w_b = _GRAY_WEIGHTS
  gray = x_TxHxWx3[..., 0] * w_r + x_TxHxWx3[..., 1] * w_g + x_TxHxWx3[..., 2] * w_b
  return jnp.stack([gray, gray, gray], -1)


def random_convolve(x_TxHxWx3: jax.Array, kernel_KxKx3x3: jax.Array) -> jax.Array:
  """tf.nn.conv2d(x, kernel, 1, 'SAME') of every frame at full float32 precision (the default
  on GPU and TPU would round the inputs to TF32 or bfloat16)."""
  return jax.lax.conv_general_dilated(
      x_TxHxWx3.astype(jnp.float32), kernel_KxKx3x3.astype(jnp.float32), (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=jax.lax.Precision.HIGHEST)


# ---------------------------------------------------------------------------
# The chain.

def apply_view(x_TxHxWx3: jax.Array, draws: ViewDraws, *, blur: bool = True) -> jax.Array:
  """The published per-view chain on one clip of pixels in [0, 255] with given draws: scale to
  [0, 1], blur (kernel = view size / 10), flip, colour jitter + clip, greyscale, and random
  convolution when the draws carry a kernel (broad RGB views). `augment.apply_view`'s twin.
  When the draws carry resize tables (data.narrow.resize_on='device'), `x` is the clip's
  flattened crop [T, pixels, 3], first resized as the host would have (data/resize_device.py).
  """
  if resize_device.has_crop_to_resize(draws):
    x_TxHxWx3 = resize_device.resize_flat_crop(x_TxHxWx3, draws)
  if blur:  # The scaling to [0, 1] is folded into the blur's taps, as on the host.
    blurred = gaussian_blur(x_TxHxWx3, draws['sigma'],
                            augment.blur_kernel_size(int(x_TxHxWx3.shape[2])), 1.0 / 255.0)
    x = jnp.where(draws['blur'], blurred, to_unit_range(x_TxHxWx3))
  else:
    x = to_unit_range(x_TxHxWx3)
  x = random_flip(x, draws['flip'])
  x = jnp.where(draws['jitter'], color_jitter(x, draws['brightness'], draws['saturation'],
                                              draws['contrast'], draws['hue']), x)
  x = jnp.where(draws['gray'], to_grayscale(x), x)
  if 'rc_kernel' in draws:
    x = random_convolve(x, draws['rc_kernel'])
  return x


def apply_views(x_BxTxHxWx3: jax.Array, draws_B: ViewDraws, *, blur: bool = True) -> jax.Array:
  """`apply_view` on each clip of a batch, each with its own draws (leading [B] on every field).

  The random convolution runs as one convolution per clip, not vmapped: vmap makes the
  clips' own kernels one grouped convolution, which XLA:CPU ran 2.7x slower than the same
  convolutions one by one (V/V at 64 px, 8 clips: 464 against 175 ms, equal outputs).
  Unrolled rather than a lax.map, whose loop body XLA's cost analysis counts once (the TPU
  plan's FLOPs would miss the other clips').
  """
  chain_draws = {k: v for k, v in draws_B.items() if k != 'rc_kernel'}
  x = jax.vmap(lambda x, d: apply_view(x, d, blur=blur))(x_BxTxHxWx3, chain_draws)
  if 'rc_kernel' not in draws_B:
    return x
  kernels = draws_B['rc_kernel']
  return jnp.stack([random_convolve(x[i], kernels[i]) for i in range(x.shape[0])])


# ---------------------------------------------------------------------------
# Host: what a clip ships instead of its augmented view.

def shipped_frames(frames_TxHxWx3: tf.Tensor, dtype: str) -> tf.Tensor:
  """Cropped, resized pixels in [0, 255] as shipped (config.data.shipped_frames_dtype):
  'float32' as they are (exact), 'uint8' rounded to the nearest level (4x fewer bytes)."""
  if dtype == 'float32':
    return tf.cast(frames_TxHxWx3, tf.float32)
  if dtype == 'uint8':
    return tf.cast(tf.clip_by_value(tf.round(frames_TxHxWx3), 0.0, 255.0), tf.uint8)
  raise ValueError(f"shipped frames dtype must be 'float32' or 'uint8', got {dtype!r}")


# ---------------------------------------------------------------------------
# Device: a whole batch, inside the pmapped step.

def _is_view_draws(tree: Any) -> bool:
  return isinstance(tree, Mapping) and VIEW_DRAW_KEYS <= set(tree)


def _augment_views(views: Any, draws: Any, blur: bool, path: str) -> Any:
  """`views` with each clip batch that `draws` mirrors augmented by `apply_views`."""
  if _is_view_draws(draws):
    return apply_views(views, draws, blur=blur)
  if not isinstance(views, Mapping) or not isinstance(draws, Mapping):
    raise ValueError(f'batch[{DRAWS!r}]{path} does not mirror the batch: no view to augment')
  missing = sorted(set(draws) - set(views))
  if missing:
    raise ValueError(f'batch[{DRAWS!r}]{path} has draws for {missing}, which the batch lacks')
  return {k: _augment_views(v, draws[k], blur, f'{path}[{k!r}]') if k in draws else v
          for k, v in views.items()}


def augment_batch(batch: Mapping[str, Any], *, blur: bool) -> dict[str, Any]:
  """The batch (one device's [B, ...] share) with every view that has draws augmented, and the
  draws dropped: what the model sees, equal to the batch the host would have augmented.

  `blur` as `apply_view`'s: True for pretraining views, False for the linear protocol's and
  fine-tuning's clips (which the host makes without blur too).
  """
  if DRAWS not in batch:
    raise ValueError(f'config.data.augment_on is \'device\' but the batch has no {DRAWS!r}: '
                     'its input pipeline augmented on the host (or ships no draws)')
  rest = {k: v for k, v in batch.items() if k != DRAWS}
  return _augment_views(rest, batch[DRAWS], blur, '')


def batch_preparer(config: ml_collections.ConfigDict, *,
                   blur: bool) -> Callable[[Mapping[str, Any]], Any] | None:
  """What the fine-tuning step runs on each device's batch before the model: `augment_batch` when
  config.data.augment_on is 'device', None (the batch as it comes) when it is 'host'.
  Pretraining batches take `pretraining_batch_preparer` (their audio too)."""
  if not config_base.augments_on_device(config):
    return None

  def augment_views(batch: Mapping[str, Any]) -> dict[str, Any]:
    return augment_batch(batch, blur=blur)
  return augment_views


# ---------------------------------------------------------------------------
# The broad audio view: shipped as its waveform, its log-mel made in the step.

def ships_broad_audio_waveform(config: ml_collections.ConfigDict) -> bool:
  """True when the pretraining pipeline ships batch['broad']['audio'] as the broad window's
  waveform [S] rather than its log-mel [F, M]: augment_on='device' with a broad audio view. The
  one rule the pipeline (what it ships) and `pretraining_batch_preparer` (what it expects) share."""
  return (config_base.augments_on_device(config)
          and 'audio' in tuple(config.data.broad_modalities))


def log_mel_of_broad_audio(batch: Mapping[str, Any],
                           config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The batch with its broad audio waveforms [B, S] replaced by their log-mels [B, F, M]
  (`spectrogram_device.from_config`): the model's input, `pipeline.batch_shapes`'."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (pipeline imports us)
  num_samples = pipeline.audio_num_samples(config)
  broad = batch.get('broad')
  audio = broad.get('audio') if isinstance(broad, Mapping) else None
  if audio is None:
    raise ValueError("batch['broad']['audio'] is missing: config.data.broad_modalities has "
                     "'audio', so the pretraining pipeline ships its waveform there")
  if audio.ndim != 2 or audio.shape[-1] != num_samples:
    raise ValueError(
        f"batch['broad']['audio'] has shape {tuple(audio.shape)}, not the broad window's waveforms "
        f'[batch, {num_samples}] (pipeline.audio_num_samples) that config.data.augment_on='
        "'device' ships; a batch made with augment_on='host' carries log-mels instead, or the "
        'batch comes from a pipeline with other config.data audio or broad window settings')
  return dict(batch, broad=dict(broad, audio=spectrogram_device.from_config(audio, config.data)))


def pretraining_batch_preparer(
    config: ml_collections.ConfigDict) -> Callable[[Mapping[str, Any]], Any] | None:
  """What the pretraining step runs on each device's batch before the model: with
  augment_on='device', the views' chain (`augment_batch`, blurred as published) and, when the
  pipeline shipped the broad audio as a waveform, its log-mel (`log_mel_of_broad_audio`);
  None (the batch as it comes) with 'host'."""
  augment_views = batch_preparer(config, blur=True)
  if augment_views is None:
    return None
  if not ships_broad_audio_waveform(config):
    return augment_views

  def augment_views_and_log_mel(batch: Mapping[str, Any]) -> dict[str, Any]:
    return log_mel_of_broad_audio(augment_views(batch), config)
  return augment_views_and_log_mel
