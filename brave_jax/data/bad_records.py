"""The bad-record budget: counting, naming and limiting records a pipeline had to skip.

A record that fails its CRC, does not parse, has a frame that does
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

Evaluation streams drop a bad record's slot instead (`ignore_errors`); their
`DataIterator` counts the gaps in the slots that arrive. TFDS streams have no
record index to name, so `TfdsIterator` only counts their dropped examples.
"""
from __future__ import annotations

import atexit
import time
import weakref
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from brave_jax import log
from brave_jax.data import reader
from brave_jax.data import tfrecord

_LOG = log.get_logger(__name__)

# Bookkeeping keys every pipeline element carries beside the example's own features.
INDEX = '_index'  # The example's slot: position in the (train) or this (eval) record stream.
ENTRY = '_entry'  # Its record: position in the ShardIndex.
VALID = '_valid'  # False for a placeholder of a slot whose record failed.
PRIVATE = (INDEX, ENTRY, VALID)
_MIN_RECORDS_FOR_FRACTION = 100  # The fraction budget allows fraction * max(read, this) failures.
_WARN_FIRST = 10  # Bad records warned about one by one; later ones in a summary line ...
_WARN_EVERY_S = 60.0  # ... at most this often.


class BadRecordMonitor:
  """Counts bad records, warns (rate-limited, naming file and record), applies the budget."""

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
        _LOG.warning('skipped bad %s record (%d so far): %s', self._what, self.bad, line)
      else:
        self._unreported += 1
    now = time.monotonic()
    if self._unreported and now - self._last_report > _WARN_EVERY_S:
      _LOG.warning('%d more bad %s records skipped (%d of %d read so far, in %d shard(s))',
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
  """Iterator of numpy batches that also reports how many records were skipped as bad.

  The arrays are read-only views of tf.data's buffers: copy one before writing into it.
  """

  def __init__(self, dataset: tf.data.Dataset, monitor: BadRecordMonitor, *,
               first_slot: int = 0, total_slots: int | None = None,
               entry_of_slot: Callable[[int], int] | None = None):
    self.dataset = dataset
    # Read-only arrays over the tensors' own buffers: `Tensor.numpy()` would copy every
    # batch once more (14.5 MB per full-size V/V clip as shipped).
    self._iterator = dataset.as_numpy_iterator()
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
      batch = next(self._iterator)
    except StopIteration:
      if self._total_slots is not None and self._next_slot < self._total_slots:
        self._dropped_until(self._total_slots, 0)  # Bad records after the last good one.
      raise
    slots = batch.pop(INDEX).reshape(-1)
    entries = batch.pop(ENTRY).reshape(-1)
    valid = batch.pop(VALID, None)
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


def budget_monitor(config: ml_collections.ConfigDict, index: reader.ShardIndex, what: str,
                   reasons: dict[int, str], needs: dict[str, str]) -> BadRecordMonitor:
  """One pipeline's monitor with config.data's budget; fails at once if indexing used it up."""
  monitor = BadRecordMonitor(index, reasons, what=what,
                             max_fraction=float(config.data.max_bad_record_fraction),
                             max_consecutive=int(config.data.max_consecutive_bad_records),
                             needs=needs)
  monitor.check()  # Damage found while indexing may already be over budget.
  return monitor


def needed_features(modalities: Sequence[str]) -> dict[str, str]:
  """{modality: feature key} a record must hold, so a failure's reason can say which is missing."""
  keys = {'audio': 'WAVEFORM/feature/floats', 'flow': 'flow/encoded'}
  return {m: keys[m] for m in modalities if m in keys}


class TfdsIterator:
  """Numpy batches of a TFDS pipeline; examples that fail are dropped and counted.

  TFDS examples are not indexed by file offset, so this is the one place
  without DataIterator's budget and exact resume: a gap in the stream's
  positions is a dropped example, reported by `skipped_records()`.
  """

  def __init__(self, dataset: tf.data.Dataset, total: int | None = None):
    self.dataset = dataset
    self._iterator = dataset.as_numpy_iterator()
    self._next = 0
    self._total = total
    self._skipped = 0

  def __iter__(self) -> 'TfdsIterator':
    return self

  def __next__(self) -> dict[str, Any]:
    try:
      batch = next(self._iterator)
    except StopIteration:
      if self._total is not None:
        self._skipped += max(self._total - self._next, 0)
        self._total = None
      raise
    positions = np.unique(batch.pop(INDEX).reshape(-1))
    for position in positions:
      self._skipped += max(int(position) - self._next, 0)
      self._next = max(self._next, int(position) + 1)
    return batch

  def skipped_records(self) -> int:
    """Examples dropped so far (frames that do not decode, audio missing, no label)."""
    return self._skipped


def example_or_placeholder(example: Callable[[tf.Tensor], dict[str, Any]],
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
      out.update({INDEX: slot, ENTRY: entry_of(slot)})
      return dict(out, **{VALID: tf.constant(False)})
    good = good.map(lambda element: dict(element, **{VALID: tf.constant(True)}))
    return good.concatenate(tf.data.Dataset.from_tensors(slot).map(placeholder)).take(1)
  return one


def fill_bad_rows(batch: dict[str, Any]) -> dict[str, Any]:
  """Replaces the rows of failed slots by copies of the batch's good rows (cycling through them)."""
  valid = batch[VALID]
  num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
  size = tf.size(valid)

  def fill():
    good = tf.cast(tf.where(valid)[:, 0], tf.int32)
    bad_rank = tf.cumsum(1 - tf.cast(valid, tf.int32)) - 1
    source = tf.where(valid, tf.range(size), tf.gather(good, bad_rank % num_valid))
    return {k: (v if k in PRIVATE else tf.nest.map_structure(lambda x: tf.gather(x, source), v))
            for k, v in batch.items()}
  # All good: no copy. None good: left as is; DataIterator stops the run.
  return tf.cond(tf.logical_and(num_valid > 0, num_valid < size), fill, lambda: batch)
