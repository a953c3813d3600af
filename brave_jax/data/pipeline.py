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
from brave_jax.data import tfds_reader

_READ_BUFFER_BYTES = 8 << 20  # Records are several MB (a few hundred JPEGs + waveform).
_MAX_CYCLE_LENGTH = 8  # Shards read concurrently per host.
_SKIPPED = '_skipped'
_INDEX = '_index'
Source = reader.ShardSpec | tfds_reader.TfdsSplit  # Where labelled clips come from (eval, fine-tuning).


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
        placement=d.narrow_placement, seed=seeds[0])
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
        wave = sampling.audio_window(ex['audio'], win['broad_start'], num_samples,
                                     video_fps=d.video_fps, audio_sample_rate=d.audio_sample_rate)
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
                        include_audio: bool, parse: Callable[..., Any] = reader.parse_example):
  """One augmented clip per record: random window, random crop, flip, colour (no blur)."""
  d, e = config.data, config.eval
  num_samples = audio_num_samples(config)

  def fn(index, item):
    video_index, serialized = item
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    s_win, s_view = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ex = parse(serialized, video=True, audio=include_audio)
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


def _make_eval_test_fn(config: ml_collections.ConfigDict, include_audio: bool,
                       parse: Callable[..., Any] = reader.parse_example):
  """N temporal x M spatial deterministic crops of one record, rows ordered (window, crop)."""
  d, e = config.data, config.eval
  nt, ns, t, size = e.num_temporal_crops, e.num_spatial_crops, e.num_frames, e.image_size
  num_samples = audio_num_samples(config)

  def fn(index, serialized):
    ex = parse(serialized, video=True, audio=include_audio)
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


def _eval_records(source: Source, *, audio: bool = False
                  ) -> tuple[tf.data.Dataset, Callable[..., Any], Callable[[], int]]:
  """(records in a fixed order, their parse function, a record counter) of DMVR shards or TFDS."""
  if tfds_reader.is_tfds(source):
    return (tfds_reader.records(source, audio=audio), tfds_reader.parse,
            lambda: tfds_reader.num_examples(source))
  files = reader.list_shards(source)

  def count() -> int:
    return int(tf.data.TFRecordDataset(files).reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
  return (tf.data.TFRecordDataset(files, buffer_size=_READ_BUFFER_BYTES), reader.parse_example,
          count)


def make_eval_dataset(config: ml_collections.ConfigDict, shards: Source, *,
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
  so audio features match what the audio backbone was trained on. `shards`
  may also be a `tfds_reader.TfdsSplit` (a TFDS dataset read as it is).
  """
  if mode not in ('train', 'test'):
    raise ValueError(f"make_eval_dataset: mode must be 'train' or 'test', got {mode!r}")
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  batch_size = batch_size or config.eval.batch_size
  if include_audio:
    _check_tfds_audio_rate(config, shards)
  records, parse, count_records = _eval_records(shards, audio=include_audio)
  passes = config.eval.train_passes if mode == 'train' else 1

  def total_records() -> int:
    return count_records() * passes

  if mode == 'train':
    seed = config.seed if seed is None else seed
    base_seed = tf.constant(_seed_ints(seed, 3), tf.int64)
    ds = records.enumerate().repeat(passes).enumerate()
    ds = ds.map(_make_eval_train_fn(config, base_seed, include_audio, parse),
                num_parallel_calls=_parallel(config), deterministic=True)
    ds = _count_skipped(ds)
  else:
    ds = records.enumerate()
    ds = ds.map(_make_eval_test_fn(config, include_audio, parse),
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


def _check_tfds_audio_rate(config: ml_collections.ConfigDict, source: Source) -> None:
  """A TFDS dataset's audio must be at the rate the spectrogram expects (no resampler in TF)."""
  if not tfds_reader.is_tfds(source):
    return
  rate = tfds_reader.audio_sample_rate(source)
  if rate and int(rate) != int(config.data.audio_sample_rate):
    raise tfds_reader.TfdsError(
        f'{source}: audio is {rate} Hz, config.data.audio_sample_rate is '
        f'{config.data.audio_sample_rate}; set --config.data.audio_sample_rate={rate} (the '
        'log-mel window then covers the same seconds) or convert the audio with '
        'brave_jax.data.convert --audio_only, which resamples')


# ---------------------------------------------------------------------------
# Fine-tuning.

def _train_records(source: Source, *, process_index: int, process_count: int,
                   file_seed: int) -> tuple[tf.data.Dataset, Callable[..., Any]]:
  """This host's records (disjoint from other hosts'), files in a seeded random order."""
  if tfds_reader.is_tfds(source):
    ds = tfds_reader.records(source, process_index=process_index, process_count=process_count,
                             shuffle_files=True, seed=file_seed)
    return ds, tfds_reader.parse
  files = reader.split_for_process(reader.list_shards(source), process_index, process_count)
  ds = tf.data.Dataset.from_tensor_slices(files)
  ds = ds.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=True)
  cycle = min(len(files), _MAX_CYCLE_LENGTH)
  ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=_READ_BUFFER_BYTES),
                     cycle_length=cycle, block_length=1, num_parallel_calls=cycle,
                     deterministic=True)
  return ds, reader.parse_example


def make_finetune_dataset(config: ml_collections.ConfigDict, source: Source, *,
                          batch_size: int, process_index: int = 0, process_count: int = 1,
                          num_local_devices: int | None = None, seed: int | None = None,
                          start_step: int = 0) -> DataIterator:
  """Endless labelled training clips, [local_devices, per_device, ...] {'video', 'label'}.

  Each clip is made as the linear protocol's train clips are
  (`_make_eval_train_fn`: a random window of config.eval.num_frames, random
  crop, flip, colour jitter, greyscale), so fine-tuning and the linear probe
  see the same augmentation; records are shuffled and repeated, each host
  reads its own share, and randomness is keyed on (seed + process, start
  step, position) as in `make_train_dataset`. A record without a label is
  skipped and counted, like any bad record.
  """
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  if num_local_devices is None:
    import jax  # pylint: disable=g-import-not-at-top
    num_local_devices = jax.local_device_count()
  if batch_size % process_count or (batch_size // process_count) % num_local_devices:
    raise ValueError(f'fine-tuning batch {batch_size} does not split over {process_count} '
                     f'process(es) x {num_local_devices} device(s); use a multiple of '
                     f'{process_count * num_local_devices} (config.finetune.batch_size)')
  per_host = batch_size // process_count
  per_device = per_host // num_local_devices
  host_seed = (config.seed if seed is None else seed) + process_index
  file_seed, record_seed = _seed_ints(host_seed, start_step, 11)
  example_seed = tf.constant(_seed_ints(host_seed, start_step, 12), tf.int64)
  ds, parse = _train_records(source, process_index=process_index, process_count=process_count,
                             file_seed=file_seed)
  ds = ds.shuffle(config.data.shuffle_buffer, seed=record_seed, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate()
  clip_fn = _make_eval_train_fn(config, example_seed, False, parse)

  def labelled_clip(index, record):
    out = clip_fn(index, (index, record))
    check = tf.debugging.assert_non_negative(
        out['label'], message='record has no clip/label/index; fine-tuning needs labels')
    with tf.control_dependencies([check]):
      out['label'] = tf.identity(out['label'])
    del out['video_index']
    return out
  ds = ds.map(labelled_clip, num_parallel_calls=_parallel(config), deterministic=True)
  ds = _count_skipped(ds)
  ds = ds.batch(per_host, drop_remainder=True)

  def to_devices(batch):
    def reshape(x):
      return tf.reshape(x, tf.concat([[num_local_devices, per_device], tf.shape(x)[1:]], 0))
    out = {k: reshape(batch[k]) for k in ('video', 'label')}
    out[_SKIPPED], out['_seen'] = batch[_SKIPPED], batch['_seen']
    return out
  ds = ds.map(to_devices).prefetch(config.data.prefetch)
  return DataIterator(_options(ds))


# ---------------------------------------------------------------------------
# Audio evaluation.

def make_audio_eval_dataset(config: ml_collections.ConfigDict, source: Source, *,
                            batch_size: int, num_windows: int = 1,
                            num_classes: int | None = None) -> DataIterator:
  """Finite iterator of log-mel windows of every record, in record order (audio-only records welcome).

  Each record gives `num_windows` windows of the model's broad audio window
  (`audio_num_samples`: 64 x 4 frames at 25 fps = 10.24 s at full size),
  evenly spaced over the waveform; a clip shorter than the window is looped
  (repeated from its start, as the published pipeline loops short videos and
  their audio). Rows: {'audio' [F, M], 'label' (first label), 'video_index'
  (record position), 'clip_id', 'num_samples' (the clip's own length, so
  callers can report how many were looped)} plus, with `num_classes`,
  'labels' as a multi-hot [num_classes] vector of every clip/label/index
  value (AudioSet style). Records without audio are skipped and counted.
  """
  if num_windows < 1:
    raise ValueError(f'make_audio_eval_dataset: num_windows must be >= 1, got {num_windows}')
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  _check_tfds_audio_rate(config, source)
  d = config.data
  window = audio_num_samples(config)
  records, parse, count_records = _eval_records(source, audio=True)

  def fn(index, record):
    ex = parse(record, video=False, audio=True, all_labels=True, clip_id=True)
    wave = ex['audio']
    length = tf.size(wave, out_type=tf.int32)
    last = tf.cast(tf.maximum(length - window, 0), tf.float32)
    starts = tf.cast(tf.round(tf.linspace(0.0, last, num_windows)), tf.int32)
    # audio_window counts its start in video frames; with fps = rate = 1 it is in samples.
    waves = tf.map_fn(lambda s: sampling.audio_window(wave, s, window, video_fps=1,
                                                      audio_sample_rate=1),
                      starts, fn_output_signature=tf.TensorSpec([window], tf.float32))
    specs = tf.ensure_shape(spectrogram.from_config(waves, d),
                            [num_windows, audio_num_frames(config), d.audio.num_mel_bins])
    out = {'audio': specs,
           'label': tf.fill([num_windows], ex['label']),
           'video_index': tf.fill([num_windows], tf.cast(index, tf.int32)),
           'clip_id': tf.fill([num_windows], ex['clip_id']),
           'num_samples': tf.fill([num_windows], length),
           _INDEX: index}
    if num_classes:
      labels_L = ex['labels']
      check = tf.debugging.assert_less(
          labels_L, num_classes, message=f'a clip/label/index value is >= {num_classes} classes')
      with tf.control_dependencies([check]):
        multi_hot = tf.reduce_max(tf.one_hot(labels_L, num_classes, dtype=tf.float32), axis=0)
      multi_hot = tf.reshape(tf.cond(tf.size(labels_L) > 0, lambda: multi_hot,
                                     lambda: tf.zeros([num_classes])), [num_classes])
      out['labels'] = tf.tile(multi_hot[None], [num_windows, 1])
    return out

  ds = records.enumerate().map(fn, num_parallel_calls=_parallel(config), deterministic=True)
  ds = _count_skipped(ds)

  def spread(element):
    element = dict(element)
    for k in (_SKIPPED, '_seen'):
      element[k] = tf.fill([num_windows], element[k])
    return element
  ds = ds.map(spread).unbatch().batch(batch_size).prefetch(2)
  return DataIterator(_options(ds), total_records=count_records)
