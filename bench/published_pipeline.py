"""Our re-statement, in tf.data, of the published BraVe/DMVR training input chain: a yardstick.

The published code is not available to this project (no network, DMVR is not
on PyPI), so to compare our input pipeline's cost with the published one's
we wrote this chain ourselves, following the published pipeline op for op as
docs/design.md and docs/fidelity.md describe it and as the reference ops of
tests/test_data_decode_augment.py and tests/test_data_spectrogram.py state it:

  shard files (shuffled, repeated) -> tf.data.TFRecordDataset, interleaved ->
  shuffle buffer -> tf.io.parse_single_sequence_example -> the published
  sampler (brave_jax.data.sampling, held to the published sampler's golden
  draws by tests/test_published_sampler.py) -> per view: every sampled frame
  decoded at full scale by tf.image.decode_jpeg in a tf.map_fn (DMVR's
  decode_jpeg) -> distorted-bounding-box crop (centre square on failure) ->
  tf.image.resize bilinear -> x / 255 -> Gaussian blur as two
  tf.nn.depthwise_conv2d with every tap -> tf.image.flip_left_right ->
  tf.image.stateless_random_brightness / saturation / contrast / hue (one
  draw per clip), clip -> tf.image.rgb_to_grayscale tiled -> for a randomly
  convolved view, a He-normal k x k kernel (k in 1..11) and tf.nn.conv2d over
  every frame; audio: tf.signal.stft -> |.| -> mel matrix -> log(1 + 1e4 x)
  -> batch (drop remainder) -> prefetch, with AUTOTUNE parallelism in every
  map, as DMVR builds its datasets.

Used only as a yardstick by bench/pipeline_stages.py; nothing in brave_jax
imports it. Where it may differ from the real published pipeline:
- Random draws are stateless (tf.random.stateless_*, seeded per example)
  where the published code draws from TF's stateful generators; the ops and
  their costs are the same, the values not.
- DMVR's exact tf.data layout (the number of map stages, cycle_length,
  shuffle buffer, deterministic/experimental options, prefetch sizes) is
  written from memory of its builders: here shards are interleaved 16 at a
  time, the shuffle buffer holds `shuffle_buffer` records (DMVR's default is
  larger; it only moves the first batch, which the bench excludes, and
  memory), parsing and the per-example views are two AUTOTUNE maps.
- The published code has no optical flow: the flow view here is the geometry
  of an RGB view done with the same unfused ops (full decode in map_fn, crop,
  resize, scaling of the vectors, flip), our guess at how it would be written;
  it decodes flow with TF's default DCT, ours with the accurate one
  (brave_jax.data.decode.FLOW_DCT_METHOD), which costs more.
- TF's thread pools are left at TF's defaults (our pipeline caps each op at one
  thread, data.tf_intra_op_threads); the bench runs each pipeline in its own
  process so one's settings never reach the other.
"""
from __future__ import annotations

from typing import Any

import ml_collections
import tensorflow as tf

from brave_jax.data import dmvr_format
from brave_jax.data import reader
from brave_jax.data import sampling

_AUTOTUNE = tf.data.AUTOTUNE
_CYCLE_LENGTH = 16  # Shards read at once.
_CROP_ATTEMPTS = 20  # Published DEFAULT_MAX_RANDOM_SAMPLE_CROP_ATTEMPTS.
_CROP_FALLBACK_PADDING = 16  # Published DEFAULT_PADDING_ON_FAIL.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978  # Keras he_normal's rescaling of the truncation.


def parse(serialized: tf.Tensor, modalities: tuple[str, ...]) -> dict[str, tf.Tensor]:
  """tf.io.parse_single_sequence_example of the features the views need (DMVR's parser)."""
  sequence = {dmvr_format.IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string)}
  if 'flow' in modalities:
    sequence[dmvr_format.FLOW_KEY] = tf.io.FixedLenSequenceFeature([], tf.string)
  if 'audio' in modalities:
    sequence[dmvr_format.WAVEFORM_KEY] = tf.io.VarLenFeature(tf.float32)
  context = {dmvr_format.LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64)}
  ctx, seq = tf.io.parse_single_sequence_example(serialized, context_features=context,
                                                 sequence_features=sequence)
  out = {'video': seq[dmvr_format.IMAGE_KEY],
         'label': tf.cast(tf.sparse.to_dense(ctx[dmvr_format.LABEL_INDEX_KEY])[0], tf.int32)}
  if 'flow' in modalities:
    out['flow'] = seq[dmvr_format.FLOW_KEY]
  if 'audio' in modalities:
    out['audio'] = tf.reshape(tf.sparse.to_dense(seq[dmvr_format.WAVEFORM_KEY]), [-1])
  return out


def sample(ex: dict[str, tf.Tensor], config: ml_collections.ConfigDict,
           seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """The published sampler's windows: the JPEG strings of each view and the broad waveform."""
  d = config.data
  n = tf.shape(ex['video'])[0]
  win = sampling.train_windows(n, narrow_frames=d.narrow.num_frames,
                               narrow_step=d.narrow.frame_step, broad_frames=d.broad.num_frames,
                               broad_step=d.broad.frame_step, broad_start=d.broad_start, seed=seed)
  out = {'narrow': tf.gather(ex['video'], win['narrow']),
         'broad_video': tf.gather(ex['video'], win['broad']), 'label': ex['label']}
  if 'flow' in ex:
    out['flow'] = tf.gather(ex['flow'], tf.math.floormod(win['broad'], tf.shape(ex['flow'])[0]))
  if 'audio' in ex:
    num_samples = sampling.num_audio_samples(d.broad.num_frames, d.broad.frame_step, d.video_fps,
                                             d.audio_sample_rate)
    # Our cut (tile and slice). How the published code loops the waveform is not known
    # here; the cheapest way we know credits our pipeline nothing.
    out['audio'] = sampling.broad_audio_window(ex['audio'], win['broad_start'], num_samples, n,
                                               win['looped_frames'])
  return out



def decode_frames(jpegs_T: tf.Tensor) -> tf.Tensor:
  """uint8 [T, H, W, 3]: DMVR's decode_jpeg, every frame at full scale in a map_fn."""
  return tf.map_fn(lambda j: tf.image.decode_jpeg(j, channels=3), jpegs_T,
                   fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def crop_resize(frames_TxHxWxC: tf.Tensor, size: int, aug: ml_collections.ConfigDict,
                seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(float32 [T, size, size, C], window [y, x, h, w]): one distorted-bounding-box crop for all
  frames (the centred square inset by 16 px when no attempt fits), tf.image.resize bilinear."""
  shape = tf.shape(frames_TxHxWxC)
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape[1:], bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=float(aug.crop_area_range[0]),
      aspect_ratio_range=tuple(aug.crop_aspect_range), area_range=tuple(aug.crop_area_range),
      max_attempts=_CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
  side = tf.minimum(shape[1], shape[2])
  failed = tf.reduce_all(tf.equal(crop[:2], shape[1:3]))
  fallback_begin = tf.stack([(shape[1] - side) // 2, (shape[2] - side) // 2]) + \
      _CROP_FALLBACK_PADDING
  fallback_size = tf.maximum(side - 2 * _CROP_FALLBACK_PADDING, 1)
  y, x = tf.unstack(tf.where(failed, fallback_begin, begin[:2]))
  h, w = tf.unstack(tf.where(failed, tf.stack([fallback_size, fallback_size]), crop[:2]))
  cropped = frames_TxHxWxC[:, y:y + h, x:x + w, :]
  return tf.image.resize(cropped, [size, size], method='bilinear'), tf.stack([y, x, h, w])


def _coin(seed: tf.Tensor, prob: float) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed) < prob


def gaussian_blur(x_TxHxWxC: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
  """Two tf.nn.depthwise_conv2d (horizontal, vertical) with every tap, SAME zero padding."""
  radius = kernel_size // 2
  d = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  taps = tf.exp(-tf.pow(d, 2.0) / (2.0 * tf.pow(sigma, 2.0)))
  taps /= tf.reduce_sum(taps)
  channels = x_TxHxWxC.shape[-1]
  blur_h = tf.tile(tf.reshape(taps, [1, kernel_size, 1, 1]), [1, 1, channels, 1])
  blur_v = tf.tile(tf.reshape(taps, [kernel_size, 1, 1, 1]), [1, 1, channels, 1])
  x = tf.nn.depthwise_conv2d(x_TxHxWxC, blur_h, [1, 1, 1, 1], 'SAME')
  return tf.nn.depthwise_conv2d(x, blur_v, [1, 1, 1, 1], 'SAME')


def color_jitter(x: tf.Tensor, aug: ml_collections.ConfigDict, seed: tf.Tensor) -> tf.Tensor:
  """tf.image's random brightness -> saturation -> contrast -> hue on the whole clip, clipped."""
  s = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
  x = tf.image.stateless_random_brightness(x, aug.brightness, s[0])
  x = tf.image.stateless_random_saturation(x, *aug.saturation_range, s[1])
  x = tf.image.stateless_random_contrast(x, *aug.contrast_range, s[2])
  x = tf.image.stateless_random_hue(x, aug.hue, s[3])
  return tf.clip_by_value(x, 0.0, 1.0)


def random_convolve(x_TxHxWx3: tf.Tensor, kernel_sizes, seed: tf.Tensor) -> tf.Tensor:
  """A He-normal k x k x 3 x 3 kernel (k drawn from kernel_sizes), tf.nn.conv2d over every frame."""
  s_k, s_w = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  k = tf.gather(tf.constant(kernel_sizes, tf.int32),
                tf.random.stateless_uniform([], s_k, 0, len(kernel_sizes), dtype=tf.int32))
  stddev = tf.sqrt(2.0 / tf.cast(k * k * 3, tf.float32)) / _TRUNCATED_NORMAL_STDDEV
  kernel = tf.random.stateless_truncated_normal(tf.stack([k, k, 3, 3]), s_w, stddev=stddev)
  return tf.nn.conv2d(x_TxHxWx3, kernel, 1, 'SAME')


def augment_rgb(frames: tf.Tensor, aug: ml_collections.ConfigDict, seed: tf.Tensor, *,
                blur: bool, random_conv: bool) -> tf.Tensor:
  """The published view chain, unfused: scale, blur, flip, jitter + clip, grey (, convolve)."""
  s_blur, s_flip, s_coin, s_jitter, s_gray, s_rc = tf.unstack(
      tf.random.experimental.stateless_split(seed, 6))
  x = tf.cast(frames, tf.float32) * (1.0 / 255.0)
  size = int(x.shape[2])
  if blur:  # Published: always (blur_prob 1); a lower blur_prob is honoured too.
    s_blur, s_blur_coin = tf.unstack(tf.random.experimental.stateless_split(s_blur, 2))
    sigma = tf.random.stateless_uniform([], s_blur, *aug.blur_sigma_range)
    blurred = lambda: gaussian_blur(x, sigma, 2 * ((size // 10) // 2) + 1)
    x = blurred() if aug.blur_prob >= 1.0 else tf.cond(_coin(s_blur_coin, aug.blur_prob),
                                                       blurred, lambda: x)
  x = tf.cond(_coin(s_flip, aug.flip_prob), lambda: tf.image.flip_left_right(x), lambda: x)
  x = tf.cond(_coin(s_coin, aug.color_jitter_prob), lambda: color_jitter(x, aug, s_jitter),
              lambda: x)
  x = tf.cond(_coin(s_gray, aug.grayscale_prob),
              lambda: tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 1, 3]), lambda: x)
  if random_conv:
    x = random_convolve(x, tuple(aug.rc_kernel_sizes), s_rc)
  return x


def flow_view(frames: tf.Tensor, window: tf.Tensor, size: int, aug: ml_collections.ConfigDict,
              seed: tf.Tensor) -> tf.Tensor:
  """Flow in [-1, 1] scaled to the crop's stretch, flipped with the sign of x negated (ours: the
  published code has no flow; written with the same unfused ops)."""
  flow = frames[..., :2] * (2.0 / 255.0) - 1.0
  hw = tf.cast(window[2:4], tf.float32)
  flow = tf.clip_by_value(flow * tf.stack([size / hw[1], size / hw[0]]), -1.0, 1.0)
  return tf.cond(_coin(seed, aug.flip_prob),
                 lambda: tf.image.flip_left_right(flow) * tf.constant([-1.0, 1.0]), lambda: flow)


def log_mel(waveform_S: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
  """tf.signal.stft (Hann, end padded) -> magnitude -> mel matrix -> log(1 + 10000 mel)."""
  d, a = config.data, config.data.audio
  stft = tf.signal.stft(waveform_S, frame_length=a.frame_length, frame_step=a.frame_step,
                        fft_length=a.fft_length, window_fn=tf.signal.hann_window, pad_end=True)
  mel = tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=a.num_mel_bins, num_spectrogram_bins=a.fft_length // 2 + 1,
      sample_rate=float(d.audio_sample_rate), lower_edge_hertz=a.lower_edge_hz,
      upper_edge_hertz=a.upper_edge_hz)
  return tf.math.log(1.0 + 10000.0 * tf.matmul(tf.abs(stft), mel))


def make_views(sampled: dict[str, tf.Tensor], config: ml_collections.ConfigDict,
               seed: tf.Tensor) -> dict[str, Any]:
  """Every view of one example: decode, crop, resize, augment; audio as log-mel."""
  d = config.data
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
  narrow_frames, _ = crop_resize(decode_frames(sampled['narrow']), d.narrow.image_size, d.augment,
                                 seeds[0])
  narrow = augment_rgb(narrow_frames, d.augment, seeds[1], blur=True, random_conv=False)
  broad = {}
  for m in d.broad_modalities:
    if m in ('video', 'rc'):
      frames, _ = crop_resize(decode_frames(sampled['broad_video']), d.broad.image_size,
                              d.augment, seeds[2])
      broad[m] = augment_rgb(frames, d.augment, seeds[3], blur=True,
                             random_conv=m == 'rc' or bool(d.random_convolve_broad_video))
    elif m == 'flow':
      frames, window = crop_resize(decode_frames(sampled['flow']), d.broad.image_size,
                                   d.augment, seeds[4])
      broad[m] = flow_view(frames, window, d.broad.image_size, d.augment, seeds[5])
    elif m == 'audio':
      broad[m] = log_mel(sampled['audio'], config)
  return {'narrow': {'video': narrow}, 'broad': broad, 'label': sampled['label']}


def make_dataset(config: ml_collections.ConfigDict, shards: str, batch_size: int, *,
                 seed: int = 0, shuffle_buffer: int = 32) -> tf.data.Dataset:
  """Endless batches of the re-stated published chain from DMVR shards (module docstring)."""
  files = reader.list_shards(shards)
  modalities = tuple(config.data.broad_modalities)
  base_seed = tf.constant([seed, 1], tf.int64)
  ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(_CYCLE_LENGTH, len(files)),
                     block_length=1, num_parallel_calls=_AUTOTUNE)
  ds = ds.shuffle(shuffle_buffer, seed=seed)
  ds = ds.map(lambda s: parse(s, modalities), num_parallel_calls=_AUTOTUNE)
  ds = ds.enumerate()

  def views(index, ex):
    s_sample, s_views = tf.unstack(tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(base_seed, index), 2))
    return make_views(sample(ex, config, s_sample), config, s_views)
  ds = ds.map(views, num_parallel_calls=_AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=True).prefetch(_AUTOTUNE)

