"""The per-host tf.data pipelines for training and evaluation, yielding numpy batches.

Training: shards (this host's share) -> shuffled files -> parallel interleave
-> shuffled records -> repeat -> per example: parse only the needed features,
sample narrow/broad windows, decode only the sampled frames into their crops,
augment, spectrogram -> batch -> [local_devices, per_device, ...] -> prefetch.

Bad data. A record whose bytes do not parse, whose frames do not decode, or
that lacks audio when the config needs it raises inside the per-example map;
`ignore_errors` drops it. To *count* drops, every record carries its position
in the (deterministic) record stream, and a sequential `scan` after the drop
adds the gaps between consecutive surviving positions. The running count
rides along in each batch and is read by `DataIterator.skipped_records()`,
so it is exact for every batch delivered (no shared mutable state, no race
with prefetch threads).

Determinism. All randomness is stateless, keyed on (seed + process_index,
start_step, position in the record stream); shuffles are seeded from the
same triple and every parallel stage runs with deterministic ordering. So
two runs with the same (seed, start_step, shards, process layout) yield the
same batches. Resuming at start_step > 0 starts a fresh, equally random
order instead of replaying the records an uninterrupted run would have read
after that step: replaying would mean reading every skipped record again,
which at 300k steps x 512 clips is hours of I/O.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from brave_jax.data import augment
from brave_jax.data import decode
from brave_jax.data import reader
from brave_jax.data import sampling
from brave_jax.data import spectrogram

_READ_BUFFER_BYTES = 8 << 20  # Records are several MB (a few hundred JPEGs + waveform).
_MAX_CYCLE_LENGTH = 8  # Shards read concurrently per host.
_SKIPPED = '_skipped'
_INDEX = '_index'


class DataIterator:
  """Iterator of numpy batches that also reports how many records were skipped as bad."""

  def __init__(self, dataset: tf.data.Dataset,
               total_records: Callable[[], int] | None = None):
    self.dataset = dataset
    self._iterator = iter(tfds.as_numpy(dataset))
    self._skipped = 0
    self._seen = 0
    self._total_records = total_records

  def __iter__(self) -> 'DataIterator':
    return self

  def __next__(self) -> dict[str, Any]:
    try:
      batch = next(self._iterator)
    except StopIteration:
      if self._total_records is not None:  # Bad records after the last good one.
        self._skipped += max(self._total_records() - self._seen, 0)
        self._total_records = None
      raise
    skipped = batch.pop(_SKIPPED)
    seen = batch.pop('_seen')
    if skipped.size:
      self._skipped = max(self._skipped, int(skipped.max()))
      self._seen = max(self._seen, int(seen.max()))
    return batch

  def skipped_records(self) -> int:
    """Records dropped so far (unparseable, undecodable, or missing needed audio/flow)."""
    return self._skipped


def _seed_ints(*parts: int) -> tuple[int, int]:
  """Two well-mixed 31-bit ints from any integers (a stateless seed pair / shuffle seeds)."""
  state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
  return int(state[0] & 0x7FFFFFFF), int(state[1] & 0x7FFFFFFF)


def _parallel(config: ml_collections.ConfigDict) -> int:
  n = config.data.num_parallel_calls
  return tf.data.AUTOTUNE if n is None or n < 0 else int(n)


def _count_skipped(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Drops erroring elements and stamps each survivor with the running count of dropped ones."""
  ds = ds.ignore_errors(log_warning=True)

  def step(state, element):
    expected, skipped = state
    element = dict(element)
    index = element.pop(_INDEX)
    skipped = skipped + index - expected
    element[_SKIPPED] = skipped
    element['_seen'] = index + 1
    return (index + 1, skipped), element
  return ds.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)


def limit_tf_op_threads(threads: int) -> None:
  """Caps the threads of each TF op (config.data.tf_intra_op_threads; 0 leaves TF's default).

  TF allows this only before its runtime starts; later calls that would change
  it log a warning and leave the running setting.
  """
  if threads <= 0 or tf.config.threading.get_intra_op_parallelism_threads() == threads:
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:
    logging.warning('TensorFlow is already running; data.tf_intra_op_threads=%d not applied '
                    '(TF op threads stay at %d).', threads,
                    tf.config.threading.get_intra_op_parallelism_threads())


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return ds.with_options(options)


# ---------------------------------------------------------------------------
# Shapes.

def audio_num_samples(config: ml_collections.ConfigDict) -> int:
  """Waveform samples covering the broad window."""
  d = config.data
  return sampling.num_audio_samples(d.broad.num_frames, d.broad.frame_step, d.video_fps,
                                    d.audio_sample_rate)


def audio_num_frames(config: ml_collections.ConfigDict) -> int:
  """Spectrogram frames F of the broad window (pad_end STFT: ceil(samples / step))."""
  return spectrogram.num_spectrogram_frames(audio_num_samples(config),
                                            config.data.audio.frame_step)


def batch_shapes(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Per-example shapes of a training batch (no [D, B] axes), for models, tests and benches."""
  d = config.data
  narrow = (d.narrow.num_frames, d.narrow.image_size, d.narrow.image_size, 3)
  broad_rgb = (d.broad.num_frames, d.broad.image_size, d.broad.image_size, 3)
  broad: dict[str, tuple[int, ...]] = {}
  for m in d.broad_modalities:
    if m in ('video', 'rc'):
      broad[m] = broad_rgb
    elif m == 'flow':
      broad[m] = broad_rgb[:-1] + (2,)
    elif m == 'audio':
      broad[m] = (audio_num_frames(config), d.audio.num_mel_bins)
    else:
      raise ValueError(f'config.data.broad_modalities: unknown modality {m!r}')
  return {'narrow': {'video': narrow}, 'broad': broad, 'label': ()}


# ---------------------------------------------------------------------------
# Per-example processing.

def _require_frames(frames: tf.Tensor, what: str) -> tf.Tensor:
  """The frame count, raising (-> skipped record) when the record has none."""
  n = tf.shape(frames)[0]
  check = tf.debugging.assert_positive(n, message=f'record has no {what} frames')
  with tf.control_dependencies([check]):
    return tf.identity(n)


def _rgb_view(jpegs_T: tf.Tensor, size: int, aug: ml_collections.ConfigDict, seed: tf.Tensor, *,
              blur: bool, random_conv: bool) -> tf.Tensor:
  """One random crop for all frames (decoded straight into the view size), then the published
  view chain (`augment.augment_clip`)."""
  s_crop, s_aug = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  frames = decode.decode_random_crop(jpegs_T, size, aug.crop_area_range, aug.crop_aspect_range,
                                     s_crop)
  x = augment.augment_clip(frames, aug, s_aug, blur=blur, random_conv=random_conv)
  return tf.ensure_shape(x, [jpegs_T.shape[0], size, size, 3])


def _flow_view(jpegs_T: tf.Tensor, size: int, aug: ml_collections.ConfigDict,
               seed: tf.Tensor) -> tf.Tensor:
  """Cropped, resized, maybe flipped flow in [-1, 1]: the geometry of an RGB view, no colour.

  The vectors follow the geometry: the resize scales x by size / crop width and
  y by size / crop height, and a flip negates the horizontal component.
  """
  s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  window = decode.random_crop_window(decode.jpeg_shape(jpegs_T[0]), aug.crop_area_range,
                                     aug.crop_aspect_range, s_crop)
  frames = decode.decode_crop_resize(jpegs_T, window, size, decode.TRAIN_MAX_UPSCALE,
                                     decode.FLOW_DCT_METHOD)
  flow = decode.scale_flow_to_view(decode.flow_to_unit(frames), window, size)
  flow, flipped = augment.random_flip(flow, aug.flip_prob, s_flip)
  sign = tf.where(flipped, tf.constant([-1.0, 1.0]), tf.constant([1.0, 1.0]))
  return tf.ensure_shape(flow * sign, [jpegs_T.shape[0], size, size, 2])


def _make_train_example_fn(config: ml_collections.ConfigDict, base_seed: tf.Tensor):
  """Per record: the published sampler's windows (`sampling.train_windows`), the narrow RGB view,
  and each broad view: RGB through the same chain (randomly convolved for 'rc' and V/V), flow
  with the geometry only (ours; the published code has no flow), audio as the log-mel of the
  broad window's waveform."""
  d = config.data
  modalities = tuple(d.broad_modalities)
  num_samples = audio_num_samples(config)

  def fn(index: tf.Tensor, serialized: tf.Tensor) -> dict[str, Any]:
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2 + len(modalities)))
    ex = reader.parse_example(serialized, video=True, flow='flow' in modalities,
                              audio='audio' in modalities)
    n = _require_frames(ex['video'], 'image/encoded')
    win = sampling.train_windows(
        n, narrow_frames=d.narrow.num_frames, narrow_step=d.narrow.frame_step,
        broad_frames=d.broad.num_frames, broad_step=d.broad.frame_step,
        broad_start=d.broad_start, seed=seeds[0])
    narrow = _rgb_view(tf.gather(ex['video'], win['narrow']), d.narrow.image_size, d.augment,
                       seeds[1], blur=True, random_conv=False)
    broad = {}
    for m, s in zip(modalities, seeds[2:]):
      if m in ('video', 'rc'):
        rc = m == 'rc' or bool(d.random_convolve_broad_video)
        broad[m] = _rgb_view(tf.gather(ex['video'], win['broad']), d.broad.image_size,
                             d.augment, s, blur=True, random_conv=rc)
      elif m == 'flow':
        n_flow = _require_frames(ex['flow'], 'flow/encoded')
        broad[m] = _flow_view(tf.gather(ex['flow'], tf.math.floormod(win['broad'], n_flow)),
                              d.broad.image_size, d.augment, s)
      elif m == 'audio':
        wave = sampling.broad_audio_window(ex['audio'], win['broad_start'], num_samples, n,
                                           win['looped_frames'])
        broad[m] = tf.ensure_shape(spectrogram.from_config(wave, d),
                                   [audio_num_frames(config), d.audio.num_mel_bins])
    return {'narrow': {'video': narrow}, 'broad': broad, 'label': ex['label'], _INDEX: index}
  return fn


# ---------------------------------------------------------------------------
# Training.

def make_train_dataset(config: ml_collections.ConfigDict, shards: reader.ShardSpec, *,
                       process_index: int = 0, process_count: int = 1,
                       num_local_devices: int | None = None, seed: int | None = None,
                       start_step: int = 0) -> DataIterator:
  """Endless iterator of this host's training batches, shaped [local_devices, per_device, ...].

  Shards are resolved and split before any graph is built, so a wrong path or
  too few shards for the hosts fails immediately, naming the path.
  """
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  if num_local_devices is None:
    import jax  # pylint: disable=g-import-not-at-top
    num_local_devices = jax.local_device_count()
  global_batch = config.training.batch_size
  if global_batch % process_count:
    raise ValueError(f'config.training.batch_size={global_batch} does not split over '
                     f'{process_count} processes; use a multiple of {process_count}')
  per_host = global_batch // process_count
  if per_host % num_local_devices:
    raise ValueError(f'config.training.batch_size={global_batch} gives {per_host} per host, '
                     f'not divisible by {num_local_devices} local devices')
  per_device = per_host // num_local_devices
  files = reader.split_for_process(reader.list_shards(shards), process_index, process_count)
  modalities = config.data.broad_modalities
  reader.check_features(files, flow='flow' in modalities, audio='audio' in modalities)
  seed = config.seed if seed is None else seed
  host_seed = seed + process_index
  file_seed, record_seed = _seed_ints(host_seed, start_step, 1)
  example_seed = tf.constant(_seed_ints(host_seed, start_step, 2), tf.int64)

  ds = tf.data.Dataset.from_tensor_slices(files)
  ds = ds.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=True)
  cycle = min(len(files), _MAX_CYCLE_LENGTH)
  ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=_READ_BUFFER_BYTES),
                     cycle_length=cycle, block_length=1, num_parallel_calls=cycle,
                     deterministic=True)
  ds = ds.shuffle(config.data.shuffle_buffer, seed=record_seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.enumerate()
  ds = ds.map(_make_train_example_fn(config, example_seed),
              num_parallel_calls=_parallel(config), deterministic=True)
  ds = _count_skipped(ds)
  ds = ds.batch(per_host, drop_remainder=True)

  def to_devices(batch):
    def reshape(x):
      return tf.reshape(x, tf.concat([[num_local_devices, per_device], tf.shape(x)[1:]], 0))
    out = tf.nest.map_structure(reshape, {k: v for k, v in batch.items()
                                          if k not in (_SKIPPED, '_seen')})
    out[_SKIPPED], out['_seen'] = batch[_SKIPPED], batch['_seen']
    return out
  ds = ds.map(to_devices)
  ds = ds.prefetch(config.data.prefetch)
  return DataIterator(_options(ds))


# ---------------------------------------------------------------------------
# Evaluation.

def _make_eval_train_fn(config: ml_collections.ConfigDict, base_seed: tf.Tensor,
                        include_audio: bool):
  """One augmented clip per record, as the published linear protocol: random window of the
  looped video, random crop, then the view chain without blur (scale, flip, colour, grey)."""
  d, e = config.data, config.eval
  num_samples = audio_num_samples(config)

  def fn(index, item):
    video_index, serialized = item
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    s_win, s_view = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ex = reader.parse_example(serialized, video=True, audio=include_audio)
    n = _require_frames(ex['video'], 'image/encoded')
    start, idx = sampling.random_window(n, e.num_frames, e.frame_step, s_win)
    out = {'video': _rgb_view(tf.gather(ex['video'], idx), e.image_size, d.augment, s_view,
                              blur=False, random_conv=False),
           'label': ex['label'], 'video_index': tf.cast(video_index, tf.int32), _INDEX: index}
    if include_audio:
      wave = sampling.audio_window(ex['audio'], start, num_samples, video_fps=d.video_fps,
                                   audio_sample_rate=d.audio_sample_rate)
      out['audio'] = spectrogram.from_config(wave, d)
    return out
  return fn


def _make_eval_test_fn(config: ml_collections.ConfigDict, include_audio: bool):
  """N temporal x M spatial deterministic crops of one record, rows ordered (window, crop):
  the published test crops (windows at int(linspace) starts, short side resized, spatial
  crops on a diagonal)."""
  d, e = config.data, config.eval
  nt, ns, t, size = e.num_temporal_crops, e.num_spatial_crops, e.num_frames, e.image_size
  num_samples = audio_num_samples(config)

  def fn(index, serialized):
    ex = reader.parse_example(serialized, video=True, audio=include_audio)
    n = _require_frames(ex['video'], 'image/encoded')
    starts, idx_NxT = sampling.evenly_spaced_windows(n, t, e.frame_step, nt)
    unique, position = tf.unique(tf.reshape(idx_NxT, [-1]))  # Decode each frame once.
    frames = decode.decode_resize_short_side(tf.gather(ex['video'], unique), e.resize_short_side)
    frames = tf.gather(frames, position)  # [N*T, H', W', 3]
    crops = decode.spatial_crops(frames, size, ns)  # [M, N*T, S, S, 3]
    crops = tf.reshape(crops, [ns, nt, t, size, size, 3])
    crops = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]), [nt * ns, t, size, size, 3])
    rows = nt * ns
    out = {'video': augment.to_unit_range(crops),
           'label': tf.fill([rows], ex['label']),
           'video_index': tf.fill([rows], tf.cast(index, tf.int32)),
           _INDEX: index}
    if include_audio:
      waves = tf.map_fn(
          lambda s: sampling.audio_window(ex['audio'], s, num_samples, video_fps=d.video_fps,
                                          audio_sample_rate=d.audio_sample_rate), starts,
          fn_output_signature=tf.TensorSpec([num_samples], tf.float32))
      specs = spectrogram.from_config(waves, d)  # [N, F, M]
      out['audio'] = tf.repeat(specs, ns, axis=0)
    return out
  return fn


def make_eval_dataset(config: ml_collections.ConfigDict, shards: reader.ShardSpec, *,
                      mode: str, batch_size: int | None = None, include_audio: bool = False,
                      seed: int | None = None) -> DataIterator:
  """Finite iterator of flat eval batches {'video' [N,T,H,W,3], 'label', 'video_index'[, 'audio']}.

  mode 'train': config.eval.train_passes augmented passes (one random clip per
  video per pass). mode 'test': config.eval.num_temporal_crops x
  num_spatial_crops deterministic crops per video after a short-side resize,
  the crops of one video adjacent (ordered window-major). No shuffling; a
  video's video_index is its position in the sorted shard order, counting
  skipped records, so results are reproducible and comparable across runs.
  The audio of a clip covers the broad training window from the clip start,
  so audio features match what the audio backbone was trained on.
  """
  if mode not in ('train', 'test'):
    raise ValueError(f"make_eval_dataset: mode must be 'train' or 'test', got {mode!r}")
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  batch_size = batch_size or config.eval.batch_size
  files = reader.list_shards(shards)
  records = tf.data.TFRecordDataset(files, buffer_size=_READ_BUFFER_BYTES)
  passes = config.eval.train_passes if mode == 'train' else 1

  def total_records() -> int:
    count = tf.data.TFRecordDataset(files).reduce(tf.constant(0, tf.int64), lambda c, _: c + 1)
    return int(count) * passes

  if mode == 'train':
    seed = config.seed if seed is None else seed
    base_seed = tf.constant(_seed_ints(seed, 3), tf.int64)
    ds = records.enumerate().repeat(passes).enumerate()
    ds = ds.map(_make_eval_train_fn(config, base_seed, include_audio),
                num_parallel_calls=_parallel(config), deterministic=True)
    ds = _count_skipped(ds)
  else:
    ds = records.enumerate()
    ds = ds.map(_make_eval_test_fn(config, include_audio),
                num_parallel_calls=_parallel(config), deterministic=True)
    ds = _count_skipped(ds)
    rows = config.eval.num_temporal_crops * config.eval.num_spatial_crops

    def spread(element):
      element = dict(element)
      for k in (_SKIPPED, '_seen'):
        element[k] = tf.fill([rows], element[k])
      return element
    ds = ds.map(spread).unbatch()
  ds = ds.batch(batch_size).prefetch(2)
  return DataIterator(_options(ds), total_records=total_records)
