"""The per-host tf.data pipelines for training and evaluation, yielding numpy batches.

Training: this host's shards -> an index of their records (reader.index_shards)
-> slot g = step * per_host_batch + j -> the record at position g mod N of
epoch g // N's seeded permutation -> read by offset, CRCs checked -> per
example: parse only the needed features, sample narrow/broad windows, decode
only the sampled frames into their crops, augment, spectrogram -> batch ->
[local_devices, per_device, ...] -> prefetch.

Determinism and resume. Everything a batch holds is a pure function of
(seed, process layout, shards, step): the permutation of each epoch is
`index_shuffle` seeded by (seed + process_index, epoch), and an example's
augmentation seed is keyed on its slot g, never on where the run started. So
a run resumed at step s reads, crops and augments exactly what an
uninterrupted run did at step s, and (the model step being deterministic on
CPU) ends with equal parameters (tests/test_resume_data.py kills a real run).
None of this holds if the shard files, the process count or data.* change
between the runs; a data source other than these TFRecord shards (e.g. TFDS)
is exact only if it, too, makes the batch a pure function of the step.

Bad data. A record that fails its CRC, does not parse, has a frame that does
not decode, or lacks audio/flow the config needs raises inside its slot's
one-element dataset; the error is caught there and the slot yields a flagged
placeholder instead, so batches stay aligned to slots (and all-bad data still
yields, rather than spinning), and the batch's bad rows are replaced by
copies of its good rows (BraVe's loss is per example, so a copy only weighs
that clip twice). `DataIterator` counts bad slots, warns (rate-limited) naming
file and record, and stops the run with `reader.BadDataError` naming the
shards once more than config.data.max_bad_record_fraction of the records, or
more than config.data.max_consecutive_bad_records in a row, failed (or every
record of a batch did). Damage found while indexing (a cut-short last
record, a corrupted stretch) counts toward the same budget.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable

import ml_collections
import numpy as np
import tensorflow as tf

from brave_jax.data import augment
from brave_jax.data import decode
from brave_jax.data import reader
from brave_jax.data import sampling
from brave_jax.data import spectrogram
from brave_jax.data import tfds_reader
from brave_jax.data import tfrecord

_INDEX = '_index'  # The example's slot: position in the (train) or this (eval) record stream.
_ENTRY = '_entry'  # Its record: position in the ShardIndex.
_VALID = '_valid'  # False for a placeholder of a slot whose record failed.
_PRIVATE = (_INDEX, _ENTRY, _VALID)
_NEVER = 1 << 62  # End of the endless training slot range.
Source = reader.ShardSpec | tfds_reader.TfdsSplit  # Labelled clips for evaluation, fine-tuning.
_DEFAULT_PARALLELISM = max(4, 2 * (os.cpu_count() or 1))  # Examples in flight (AUTOTUNE: -1).
_MIN_RECORDS_FOR_FRACTION = 100  # The fraction budget allows fraction * max(read, this) failures.
_WARN_FIRST = 10  # Bad records warned about one by one; later ones in a summary line ...
_WARN_EVERY_S = 60.0  # ... at most this often.


class _BadRecordMonitor:
  """Counts bad records, warns about them (rate-limited, naming file and record), applies the budget."""

  def __init__(self, index: reader.ShardIndex, reasons: dict[int, str], *, what: str,
               max_fraction: float, max_consecutive: int, needs: dict[str, str]):
    self._index = index
    self._reasons = reasons
    self._what = what
    self._max_fraction = max_fraction
    self._max_consecutive = max_consecutive
    self._needs = needs
    self.read = 0
    self.bad = 0
    self.consecutive = 0
    self._bad_files: dict[str, int] = {}
    self._examples: list[str] = []
    self._unreported = 0
    self._last_report = time.monotonic()

  def reason(self, entry: int) -> str:
    """Why record `entry` failed: the read error, else a diagnosis of its bytes."""
    if entry in self._reasons:
      return self._reasons[entry]
    rd = self._index.reader()
    try:
      serialized = self._index.read(rd, entry)
    except tfrecord.RecordError as e:
      return str(e)
    finally:
      rd.close()
    try:
      example = tf.train.SequenceExample.FromString(serialized)
    except Exception:  # pylint: disable=broad-except
      return 'bytes do not parse as a tf.train.SequenceExample'
    lists = example.feature_lists.feature_list
    for name, key in dict(video='image/encoded', **self._needs).items():
      if not lists[key].feature:
        return f'no {name} ({key}) in the record'
    return 'a sampled frame did not decode (corrupt JPEG?)'

  def observe(self, rows: list[tuple[bool, int]]) -> None:
    """Counts records in stream order as (ok, entry) and applies the budget."""
    for ok, entry in rows:
      self.read += 1
      if ok:
        self.consecutive = 0
        continue
      self.bad += 1
      self.consecutive += 1
      path = self._index.files[int(self._index.file_id[entry])]
      self._bad_files[path] = self._bad_files.get(path, 0) + 1
      if self.bad <= _WARN_FIRST:
        line = f'{self._index.describe(entry)}: {self.reason(entry)}'
        self._examples.append(line)
        logging.warning('skipped bad %s record (%d so far): %s', self._what, self.bad, line)
      else:
        self._unreported += 1
    now = time.monotonic()
    if self._unreported and now - self._last_report > _WARN_EVERY_S:
      logging.warning('%d more bad %s records skipped (%d of %d read so far, in %d shard(s))',
                      self._unreported, self._what, self.bad, self.read, len(self._bad_files))
      self._unreported, self._last_report = 0, now
    self.check()

  def check(self) -> None:
    """Raises BadDataError when the failures so far (and damage found indexing) are over budget."""
    lost = self._index.lost_records
    bad, read = self.bad + lost, self.read + lost
    over_fraction = bad > self._max_fraction * max(read, _MIN_RECORDS_FOR_FRACTION)
    over_run = self.consecutive > self._max_consecutive
    if over_fraction or over_run:
      self.fail(f'{bad} of {read} {self._what} records failed'
                + (f', {self.consecutive} in a row' if over_run else '')
                + f' (budget: more than data.max_bad_record_fraction='
                f'{self._max_fraction:g} of them, or more than '
                f'data.max_consecutive_bad_records={self._max_consecutive} in a row)')

  def fail(self, headline: str) -> None:
    worst = sorted(self._bad_files.items(), key=lambda kv: -kv[1])
    files = ', '.join(f'{p} ({n})' for p, n in worst[:5])
    more = f' and {len(worst) - 5} more' if len(worst) > 5 else ''
    damage = '; '.join(d.describe() for d in self._index.damage[:3])
    examples = ' | '.join(self._examples[:3])
    raise reader.BadDataError(
        f'{headline}. Shards with failures (count): {files or "none"}{more}. '
        + (f'Damage found when indexing: {damage}. ' if damage else '')
        + (f'First failures: {examples}. ' if examples else '')
        + 'Fix or remove these shards (reconvert the videos), or raise the budget in config.data.')


class DataIterator:
  """Iterator of numpy batches that also reports how many records were skipped as bad."""

  def __init__(self, dataset: tf.data.Dataset, monitor: _BadRecordMonitor, *,
               first_slot: int = 0, total_slots: int | None = None,
               entry_of_slot: Callable[[int], int] | None = None):
    self.dataset = dataset
    self._iterator = iter(dataset)
    _LIVE_ITERATORS.add(self)
    self._monitor = monitor
    self._lost_at_index = monitor._index.lost_records  # pylint: disable=protected-access
    self._next_slot = first_slot  # Eval: slots missing before this one were dropped.
    self._total_slots = total_slots
    self._entry_of_slot = entry_of_slot

  def __iter__(self) -> 'DataIterator':
    return self

  def __next__(self) -> dict[str, Any]:
    if self._iterator is None:
      raise StopIteration
    try:
      batch = tf.nest.map_structure(lambda t: t.numpy(), next(self._iterator))
    except StopIteration:
      if self._total_slots is not None and self._next_slot < self._total_slots:
        self._dropped_until(self._total_slots, 0)  # Bad records after the last good one.
      raise
    slots = batch.pop(_INDEX).reshape(-1)
    entries = batch.pop(_ENTRY).reshape(-1)
    valid = batch.pop(_VALID, None)
    if valid is not None:  # Training: every slot is present, bad ones flagged.
      valid = valid.reshape(-1)
      self._monitor.observe([(bool(v), int(e)) for v, e in zip(valid, entries)])
      if not valid.any():
        self._monitor.fail(f'all {valid.size} records of the batch at slots {int(slots[0])}..'
                           f'{int(slots[-1])} failed, so it has nothing to fill them from')
    else:  # Evaluation: dropped slots are the gaps between the ones that arrive.
      for slot in np.unique(slots):
        self._dropped_until(int(slot), 1)
    return batch

  def _dropped_until(self, slot: int, ok: int) -> None:
    if slot < self._next_slot:
      return  # Another row (crop) of a record already counted.
    rows = [(False, self._entry_of_slot(m)) for m in range(self._next_slot, slot)]
    self._monitor.observe(rows + [(True, -1)] * ok)
    self._next_slot = max(self._next_slot, slot + 1)

  def close(self) -> None:
    """Stops the pipeline's threads now (also done for every live iterator at exit)."""
    self._iterator = None

  def skipped_records(self) -> int:
    """Records dropped so far (unreadable, unparseable, undecodable, missing needed audio/flow)."""
    return self._monitor.bad + self._lost_at_index


_LIVE_ITERATORS: 'weakref.WeakSet[DataIterator]' = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
  """Closes pipelines before the interpreter finalizes.

  Records are read by Python (tf.numpy_function) on tf.data's threads; an
  iterator still alive at interpreter shutdown (e.g. held by the traceback of
  the error that ended the run) would wait for a thread that can no longer
  take the GIL, and the process would hang instead of exiting.
  """
  for iterator in list(_LIVE_ITERATORS):
    iterator.close()


def _seed_ints(*parts: int) -> tuple[int, int]:
  """Two well-mixed 31-bit ints from any integers (a stateless seed pair / shuffle seeds)."""
  state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
  return int(state[0] & 0x7FFFFFFF), int(state[1] & 0x7FFFFFFF)


def _parallel(config: ml_collections.ConfigDict) -> int:
  n = config.data.num_parallel_calls
  return tf.data.AUTOTUNE if n is None or n < 0 else int(n)


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
  # Every heavy map sets its own parallelism; letting tf.data parallelise the rest would also
  # give each slot's one-element dataset its own parallel map (V/V CPU per clip 194-224 ms with,
  # 143-158 without, bench/input_pipeline.py, same session).
  options.experimental_optimization.map_parallelization = False
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

def _budget_monitor(config: ml_collections.ConfigDict, index: reader.ShardIndex, what: str,
                    reasons: dict[int, str], needs: dict[str, str]) -> _BadRecordMonitor:
  monitor = _BadRecordMonitor(index, reasons, what=what,
                              max_fraction=float(config.data.max_bad_record_fraction),
                              max_consecutive=int(config.data.max_consecutive_bad_records),
                              needs=needs)
  monitor.check()  # Damage found while indexing may already be over budget.
  return monitor


def _needed_features(modalities) -> dict[str, str]:
  keys = {'audio': 'WAVEFORM/feature/floats', 'flow': 'flow/encoded'}
  return {m: keys[m] for m in modalities if m in keys}


def _record_reader(index: reader.ShardIndex) -> tuple[Callable[[tf.Tensor], tf.Tensor],
                                                      dict[int, str]]:
  """A graph function entry -> serialized record (read by offset, CRCs checked).

  Read errors raise inside the op (so `ignore_errors` drops the slot) and leave
  their message in the returned dict, keyed by entry, for the warnings.
  """
  rd = index.reader()
  reasons: dict[int, str] = {}
  lock = threading.Lock()

  def read_py(entry: np.ndarray) -> bytes:
    entry = int(entry)
    try:
      return index.read(rd, entry)
    except tfrecord.RecordError as e:
      with lock:
        if len(reasons) < 10_000:
          reasons[entry] = str(e)
      raise

  def read(entry: tf.Tensor) -> tf.Tensor:
    serialized = tf.numpy_function(read_py, [entry], tf.string, stateful=False)
    return tf.ensure_shape(serialized, [])
  return read, reasons


def _slot_to_entry(num_records: int, shuffle_seed: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
  """Slot g -> index entry: position g mod N in epoch g // N's permutation (a pure function)."""
  n = tf.constant(num_records, tf.int64)

  def entry(slot: tf.Tensor) -> tf.Tensor:
    epoch_seed = tf.random.experimental.stateless_fold_in(shuffle_seed, slot // n)
    return tf.random.experimental.index_shuffle(slot % n, epoch_seed, n - 1)
  return entry


def _example_or_placeholder(example: Callable[[tf.Tensor], dict[str, Any]],
                            entry_of: Callable[[tf.Tensor], tf.Tensor]):
  """slot -> a one-element dataset: the slot's example, or if it raised, a flagged placeholder.

  Catching the error per slot (rather than dropping failures from the whole
  stream) keeps each batch aligned to its slots, and a stream in which every
  record fails still yields (placeholders) instead of spinning forever.
  """
  def one(slot):
    good = tf.data.Dataset.from_tensors(slot).map(example).ignore_errors()
    spec = good.element_spec

    def placeholder(slot):
      out = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec)
      out.update({_INDEX: slot, _ENTRY: entry_of(slot)})
      return dict(out, **{_VALID: tf.constant(False)})
    good = good.map(lambda element: dict(element, **{_VALID: tf.constant(True)}))
    return good.concatenate(tf.data.Dataset.from_tensors(slot).map(placeholder)).take(1)
  return one


def _fill_bad_rows(batch: dict[str, Any]) -> dict[str, Any]:
  """Replaces the rows of failed slots by copies of the batch's good rows (cycling through them)."""
  valid = batch[_VALID]
  num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
  size = tf.size(valid)

  def fill():
    good = tf.cast(tf.where(valid)[:, 0], tf.int32)
    bad_rank = tf.cumsum(1 - tf.cast(valid, tf.int32)) - 1
    source = tf.where(valid, tf.range(size), tf.gather(good, bad_rank % num_valid))
    return {k: (v if k in _PRIVATE else tf.nest.map_structure(lambda x: tf.gather(x, source), v))
            for k, v in batch.items()}
  # All good: no copy. None good: left as is; DataIterator stops the run.
  return tf.cond(tf.logical_and(num_valid > 0, num_valid < size), fill, lambda: batch)


def warn_if_smaller_than_batch(num_records: int, per_host_batch: int,
                               files: list[str]) -> bool:
  """Warns (True) when this host's training set holds fewer clips than one batch.

  Training still runs, but every batch then repeats clips (the epoch permutation
  wraps within a batch), so a loss that falls says little; usually a sign of a
  conversion that kept fewer videos than expected.
  """
  if num_records >= per_host_batch:
    return False
  logging.warning(
      'the training set has %d clip(s) (%d shard(s), first %s), fewer than one batch of %d per '
      'host: every batch repeats clips, about %.1f times each. Convert more videos or lower '
      'config.training.batch_size.', num_records, len(files), files[0] if files else None,
      per_host_batch, per_host_batch / max(num_records, 1))
  return True


def make_train_dataset(config: ml_collections.ConfigDict, shards: reader.ShardSpec, *,
                       process_index: int = 0, process_count: int = 1,
                       num_local_devices: int | None = None, seed: int | None = None,
                       start_step: int = 0) -> DataIterator:
  """Endless iterator of this host's training batches, shaped [local_devices, per_device, ...].

  The batch for step s is a pure function of (seed, process layout, shards, s)
  (module docstring), so `make_train_dataset(..., start_step=s)` continues an
  interrupted run exactly. Shards are resolved, split and indexed before any
  graph is built, so a wrong path, a non-TFRecord file or too few shards for
  the hosts fails immediately, naming the path.
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
  index = reader.index_shards(files)
  warn_if_smaller_than_batch(len(index), per_host, files)
  modalities = config.data.broad_modalities
  reader.check_features(index, flow='flow' in modalities, audio='audio' in modalities)
  seed = config.seed if seed is None else seed
  host_seed = seed + process_index
  shuffle_seed = tf.constant(_seed_ints(host_seed, 1), tf.int64)
  example_seed = tf.constant(_seed_ints(host_seed, 2), tf.int64)
  read, reasons = _record_reader(index)
  monitor = _budget_monitor(config, index, 'training', reasons, _needed_features(modalities))
  entry_of = _slot_to_entry(len(index), shuffle_seed)
  example_fn = _make_train_example_fn(config, example_seed)

  def example(slot):
    entry = entry_of(slot)
    return dict(example_fn(slot, read(entry)), **{_ENTRY: entry})

  first_slot = start_step * per_host
  ds = tf.data.Dataset.range(first_slot, _NEVER)
  parallel = _parallel(config)
  ds = ds.interleave(_example_or_placeholder(example, entry_of), block_length=1,
                     cycle_length=_DEFAULT_PARALLELISM if parallel == tf.data.AUTOTUNE else parallel,
                     num_parallel_calls=parallel, deterministic=True)
  ds = ds.batch(per_host, drop_remainder=True)
  ds = ds.map(_fill_bad_rows)

  def to_devices(batch):
    def reshape(x):
      return tf.reshape(x, tf.concat([[num_local_devices, per_device], tf.shape(x)[1:]], 0))
    out = tf.nest.map_structure(reshape, {k: v for k, v in batch.items() if k not in _PRIVATE})
    out.update({k: batch[k] for k in _PRIVATE})
    return out
  ds = ds.map(to_devices)
  ds = ds.prefetch(config.data.prefetch)
  return DataIterator(_options(ds), monitor, first_slot=first_slot)


# ---------------------------------------------------------------------------
# Evaluation.

def _make_eval_train_fn(config: ml_collections.ConfigDict, base_seed: tf.Tensor,
                        include_audio: bool, parse: Callable[..., Any] = reader.parse_example):
  """One augmented clip per record, as the published linear protocol: random window of the
  looped video, random crop, then the view chain without blur (scale, flip, colour, grey)."""
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
  """N temporal x M spatial deterministic crops of one record, rows ordered (window, crop):
  the published test crops (windows at int(linspace) starts, short side resized, spatial
  crops on a diagonal)."""
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


def make_eval_dataset(config: ml_collections.ConfigDict, shards: Source, *,
                      mode: str, batch_size: int | None = None, include_audio: bool = False,
                      seed: int | None = None) -> 'DataIterator | TfdsIterator':
  """Finite iterator of flat eval batches {'video' [N,T,H,W,3], 'label', 'video_index'[, 'audio']}.

  mode 'train': config.eval.train_passes augmented passes (one random clip per
  video per pass). mode 'test': config.eval.num_temporal_crops x
  num_spatial_crops deterministic crops per video after a short-side resize,
  the crops of one video adjacent (ordered window-major). No shuffling; a
  video's video_index is its position in the sorted shard order, counting
  skipped records, so results are reproducible and comparable across runs.
  The audio of a clip covers the broad training window from the clip start,
  so audio features match what the audio backbone was trained on. `shards`
  may also be a `tfds_reader.TfdsSplit`: a TFDS dataset read as it is.
  """
  if mode not in ('train', 'test'):
    raise ValueError(f"make_eval_dataset: mode must be 'train' or 'test', got {mode!r}")
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  batch_size = batch_size or config.eval.batch_size
  if tfds_reader.is_tfds(shards):
    return _tfds_eval_dataset(config, shards, mode=mode, batch_size=batch_size,
                              include_audio=include_audio, seed=seed)
  index = reader.index_shards(reader.list_shards(shards))
  reader.check_features(index, video=True, audio=include_audio,
                        what=f'evaluation ({mode} split)')  # Not every record, one by one.
  num_records = len(index)
  read, reasons = _record_reader(index)
  monitor = _budget_monitor(config, index, f'eval {mode}', reasons,
                            _needed_features(['audio'] if include_audio else []))
  passes = config.eval.train_passes if mode == 'train' else 1

  if mode == 'train':
    seed = config.seed if seed is None else seed
    base_seed = tf.constant(_seed_ints(seed, 3), tf.int64)
    train_fn = _make_eval_train_fn(config, base_seed, include_audio)

    def example(stream_index, entry):
      return dict(train_fn(stream_index, (entry, read(entry))), **{_ENTRY: entry})
    ds = tf.data.Dataset.range(num_records).repeat(passes).enumerate()
    ds = ds.map(example, num_parallel_calls=_parallel(config), deterministic=True)
    ds = ds.ignore_errors(log_warning=False)  # DataIterator warns, naming file and record.
  else:
    test_fn = _make_eval_test_fn(config, include_audio)
    rows = config.eval.num_temporal_crops * config.eval.num_spatial_crops

    def example(entry):
      out = dict(test_fn(entry, read(entry)))
      out[_INDEX] = tf.fill([rows], entry)
      out[_ENTRY] = tf.fill([rows], entry)
      return out
    ds = tf.data.Dataset.range(num_records)
    ds = ds.map(example, num_parallel_calls=_parallel(config), deterministic=True)
    ds = ds.ignore_errors(log_warning=False)
    ds = ds.unbatch()
  ds = ds.batch(batch_size).prefetch(2)
  return DataIterator(_options(ds), monitor, total_slots=num_records * passes,
                      entry_of_slot=lambda slot: slot % num_records)


# ---------------------------------------------------------------------------
# TFDS datasets (evaluation and fine-tuning): TFDS's own reader, not the shard index.

class TfdsIterator:
  """Numpy batches of a TFDS pipeline; examples that fail are dropped and counted.

  TFDS examples are not indexed by file offset, so this is the one place
  without DataIterator's budget and exact resume: a gap in the stream's
  positions is a dropped example, reported by `skipped_records()`.
  """

  def __init__(self, dataset: tf.data.Dataset, total: int | None = None):
    self.dataset = dataset
    self._iterator = iter(dataset)
    self._next = 0
    self._total = total
    self._skipped = 0

  def __iter__(self) -> 'TfdsIterator':
    return self

  def __next__(self) -> dict[str, Any]:
    try:
      batch = tf.nest.map_structure(lambda t: t.numpy(), next(self._iterator))
    except StopIteration:
      if self._total is not None:
        self._skipped += max(self._total - self._next, 0)
        self._total = None
      raise
    positions = np.unique(batch.pop(_INDEX).reshape(-1))
    for position in positions:
      self._skipped += max(int(position) - self._next, 0)
      self._next = max(self._next, int(position) + 1)
    return batch

  def skipped_records(self) -> int:
    """Examples dropped so far (frames that do not decode, audio missing, no label)."""
    return self._skipped


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


def _tfds_eval_dataset(config: ml_collections.ConfigDict, source: tfds_reader.TfdsSplit, *,
                       mode: str, batch_size: int, include_audio: bool,
                       seed: int | None) -> TfdsIterator:
  """make_eval_dataset for a TFDS split: the same per-example functions on TFDS's elements."""
  if include_audio:
    _check_tfds_audio_rate(config, source)
  records = tfds_reader.records(source, audio=include_audio)
  total = tfds_reader.num_examples(source)
  if mode == 'train':
    passes = config.eval.train_passes
    seed = config.seed if seed is None else seed
    train_fn = _make_eval_train_fn(config, tf.constant(_seed_ints(seed, 3), tf.int64),
                                   include_audio, tfds_reader.parse)
    ds = records.enumerate().repeat(passes).enumerate()
    ds = ds.map(train_fn, num_parallel_calls=_parallel(config), deterministic=True)
    ds = ds.ignore_errors(log_warning=True)
    total *= passes
  else:
    test_fn = _make_eval_test_fn(config, include_audio, tfds_reader.parse)
    rows = config.eval.num_temporal_crops * config.eval.num_spatial_crops

    def example(index, element):
      out = dict(test_fn(index, element))
      out[_INDEX] = tf.fill([rows], index)
      return out
    ds = records.enumerate().map(example, num_parallel_calls=_parallel(config),
                                 deterministic=True)
    ds = ds.ignore_errors(log_warning=True).unbatch()
  return TfdsIterator(_options(ds.batch(batch_size).prefetch(2)), total)


# ---------------------------------------------------------------------------
# Fine-tuning.

def _finetune_example_fn(config: ml_collections.ConfigDict, example_seed: tf.Tensor,
                         parse: Callable[..., Any]):
  """(slot, record) -> {'video', 'label'}: the linear protocol's train clip; unlabelled raises."""
  clip_fn = _make_eval_train_fn(config, example_seed, False, parse)

  def fn(slot, record):
    out = clip_fn(slot, (slot, record))
    check = tf.debugging.assert_non_negative(
        out['label'], message='record has no clip/label/index; fine-tuning needs labels')
    with tf.control_dependencies([check]):
      label = tf.identity(out['label'])
    return {'video': out['video'], 'label': label, _INDEX: slot}
  return fn


def make_finetune_dataset(config: ml_collections.ConfigDict, source: Source, *,
                          batch_size: int, process_index: int = 0, process_count: int = 1,
                          num_local_devices: int | None = None, seed: int | None = None,
                          start_step: int = 0) -> 'DataIterator | TfdsIterator':
  """Endless labelled training clips, [local_devices, per_device, ...] {'video', 'label'}.

  Each clip is made as the linear protocol's train clips are
  (`_make_eval_train_fn`: a random window of config.eval.num_frames, random
  crop, flip, colour jitter, greyscale), so fine-tuning and the linear probe
  see the same augmentation. From DMVR shards the stream is make_train_dataset's
  (each host its own shards, slot -> seeded per-epoch permutation, bad records
  replaced and budgeted), so a resumed fine-tuning run reads exactly what an
  uninterrupted one did; a record without a label counts as bad. From TFDS:
  TFDS's shuffled reader, not exact on resume.
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
  shuffle_seed = tf.constant(_seed_ints(host_seed, 11), tf.int64)
  example_seed = tf.constant(_seed_ints(host_seed, 12), tf.int64)

  def to_devices(batch):
    def reshape(x):
      return tf.reshape(x, tf.concat([[num_local_devices, per_device], tf.shape(x)[1:]], 0))
    out = {k: reshape(batch[k]) for k in ('video', 'label')}
    out.update({k: batch[k] for k in _PRIVATE if k in batch})
    return out

  if tfds_reader.is_tfds(source):
    example_fn = _finetune_example_fn(config, example_seed, tfds_reader.parse)
    ds = tfds_reader.records(source, process_index=process_index, process_count=process_count,
                             shuffle_files=True, seed=_seed_ints(host_seed, start_step, 13)[0])
    ds = ds.shuffle(_TFDS_SHUFFLE_BUFFER, seed=_seed_ints(host_seed, start_step, 14)[0])
    ds = ds.repeat().enumerate(start_step * per_host)
    ds = ds.map(example_fn, num_parallel_calls=_parallel(config), deterministic=True)
    ds = ds.ignore_errors(log_warning=True).batch(per_host, drop_remainder=True)
    return TfdsIterator(_options(ds.map(to_devices).prefetch(config.data.prefetch)))

  files = reader.split_for_process(reader.list_shards(source), process_index, process_count)
  index = reader.index_shards(files)
  read, reasons = _record_reader(index)
  monitor = _budget_monitor(config, index, 'fine-tuning', reasons, {})
  entry_of = _slot_to_entry(len(index), shuffle_seed)
  example_fn = _finetune_example_fn(config, example_seed, reader.parse_example)

  def example(slot):
    entry = entry_of(slot)
    return dict(example_fn(slot, read(entry)), **{_ENTRY: entry})

  first_slot = start_step * per_host
  parallel = _parallel(config)
  ds = tf.data.Dataset.range(first_slot, _NEVER)
  ds = ds.interleave(_example_or_placeholder(example, entry_of), block_length=1,
                     cycle_length=_DEFAULT_PARALLELISM if parallel == tf.data.AUTOTUNE else parallel,
                     num_parallel_calls=parallel, deterministic=True)
  ds = ds.batch(per_host, drop_remainder=True).map(_fill_bad_rows).map(to_devices)
  return DataIterator(_options(ds.prefetch(config.data.prefetch)), monitor, first_slot=first_slot)


_TFDS_SHUFFLE_BUFFER = 256  # Examples TFDS fine-tuning shuffles over (besides its file order).


# ---------------------------------------------------------------------------
# Audio evaluation.

def make_audio_eval_dataset(config: ml_collections.ConfigDict, source: Source, *,
                            batch_size: int, num_windows: int = 1,
                            num_classes: int | None = None) -> 'DataIterator | TfdsIterator':
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
  is_tfds = tfds_reader.is_tfds(source)
  parse = tfds_reader.parse if is_tfds else reader.parse_example

  def windows(index, record):
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
           _INDEX: tf.fill([num_windows], tf.cast(index, tf.int64))}
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

  if is_tfds:
    ds = tfds_reader.records(source, audio=True).enumerate()
    ds = ds.map(windows, num_parallel_calls=_parallel(config), deterministic=True)
    ds = ds.ignore_errors(log_warning=True).unbatch().batch(batch_size).prefetch(2)
    return TfdsIterator(_options(ds), tfds_reader.num_examples(source))
  index = reader.index_shards(reader.list_shards(source))
  num_records = len(index)
  read, reasons = _record_reader(index)
  monitor = _budget_monitor(config, index, 'audio eval', reasons, _needed_features(['audio']))

  def example(entry):
    return dict(windows(entry, read(entry)), **{_ENTRY: tf.fill([num_windows], entry)})
  ds = tf.data.Dataset.range(num_records)
  ds = ds.map(example, num_parallel_calls=_parallel(config), deterministic=True)
  ds = ds.ignore_errors(log_warning=False).unbatch().batch(batch_size).prefetch(2)
  return DataIterator(_options(ds), monitor, total_slots=num_records,
                      entry_of_slot=lambda slot: slot)
