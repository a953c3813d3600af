"""Finding shards, splitting them over hosts, and parsing only the features a config needs.

Shard lists are resolved and checked here, before anything compiles, so a typo
in a path fails in a second with the path in the message instead of hanging a
pod on an empty dataset.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from brave_jax import errors
from brave_jax import log
from brave_jax.data import dmvr_format
from brave_jax.data import frame_spans
from brave_jax.data import tfrecord

_LOG = log.get_logger(__name__)

ShardSpec = str | Sequence[str]

# `prefix-00003-of-00016` (dmvr_format.shard_name): the only names taken from a directory that
# holds any; other files there (dataset.json, *_summary.json, notes) are never read as shards.
_SHARD_NAME = re.compile(r'^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})$')
# Never shards, even when a glob matches them: temporaries, summaries, hidden files.
_SYNTHETIC_MANIFEST = 'dataset.json'  # data/synthetic.py MANIFEST, written beside its shards.
_NOT_SHARD_SUFFIXES = ('.tmp', '.json', '.txt', '.csv', '.md', '.log', '.png', '.py')


class ShardError(errors.RunError, ValueError):
  """The shard specification names nothing readable, or cannot be split over hosts.

  A RunError: its message names the shards, so the CLIs print it as one line."""


class BadDataError(errors.RunError, ValueError):
  """More records failed than config.data's bad-data budget allows; names the shards.

  A RunError: the CLIs print it as one line."""


def _is_shard_candidate(path: str) -> bool:
  name = os.path.basename(path)
  return not name.startswith('.') and not name.lower().endswith(_NOT_SHARD_SUFFIXES)


_IGNORED_REPORTED: set[str] = set()  # Specs whose ignored files were already named.


def _converter_summaries(shard_files: Sequence[str]) -> set[str]:
  """The project's own files beside these shards, expected there: the converter's
  `<prefix>_summary.json` and the synthetic set's `dataset.json` manifest."""
  out = set()
  for f in shard_files:
    m = _SHARD_NAME.match(os.path.basename(f))
    if m:
      folder = os.path.dirname(f)
      out.update({os.path.join(folder, f'{m["prefix"]}_summary.json'),
                  os.path.join(folder, _SYNTHETIC_MANIFEST)})
  return out


def _say_ignored(spec: str, ignored: Sequence[str], shard_files: Sequence[str] = ()) -> None:
  """Names, once per spec and process, the files a shard spec matched but that are not shards
  (a README, notes), so a user sees what was left out and why. The converter's own summary
  of these shards belongs beside them and is not mentioned."""
  own = _converter_summaries(shard_files)
  ignored = [f for f in ignored if f not in own]
  if not ignored or spec in _IGNORED_REPORTED:
    return
  _IGNORED_REPORTED.add(spec)
  names = [os.path.basename(f) for f in ignored]
  _LOG.warning('%s: ignoring %d file(s) that are not shards: %s%s', spec, len(names),
               ', '.join(names[:5]), ' ...' if len(names) > 5 else '')


def _expand_one(spec: str) -> list[str]:
  spec = spec.strip()
  spec = spec if tfrecord.is_remote(spec) else os.path.expanduser(spec)
  if not spec:
    return []
  if tf.io.gfile.isdir(spec):
    files = [os.path.join(spec, f.rstrip('/')) for f in tf.io.gfile.listdir(spec)]
    files = [f for f in files if _is_shard_candidate(f) and not tf.io.gfile.isdir(f)]
    named = [f for f in files if _SHARD_NAME.match(os.path.basename(f))]
    prefixes = sorted({_SHARD_NAME.match(os.path.basename(f))['prefix'] for f in named})
    if len(prefixes) > 1:
      raise ShardError(f'shard directory {spec!r} holds shards of several prefixes {prefixes}; '
                       f'name one set with a glob, e.g. {os.path.join(spec, prefixes[0])}-*')
    listed = [f for f in (os.path.join(spec, g.rstrip('/')) for g in tf.io.gfile.listdir(spec))
              if not os.path.basename(f).startswith('.') and not tf.io.gfile.isdir(f)]
    files = named or files
    if not files:
      raise ShardError(f'shard directory {spec!r} holds no shard files; write shards there '
                       '(brave_jax.data.dmvr_format.write_shards) or point at another directory')
    _say_ignored(spec, sorted(set(listed) - set(files)), files)
    return files
  if glob.has_magic(spec):
    matches = [f for f in tf.io.gfile.glob(spec) if not tf.io.gfile.isdir(f)]
    files = [f for f in matches if _is_shard_candidate(f)]
    if not files:
      ignored = f' (ignored as non-shards: {sorted(matches)[:3]})' if matches else ''
      raise ShardError(f'shard pattern {spec!r} matches no shard files{ignored}; check the path '
                       'and pattern')
    _say_ignored(spec, sorted(set(matches) - set(files)), files)
    return files
  if not tf.io.gfile.exists(spec):
    raise ShardError(f'shard file {spec!r} does not exist; check the path '
                     '(a glob, a directory or a comma-separated list is also accepted)')
  return [spec]


def _check_one_set_per_prefix(files: Sequence[str]) -> None:
  """Refuses `p-*-of-00001` beside `p-*-of-00004`: a stale set would be read twice over.

  (The converter removes the old set itself once a new one is complete; this
  catches sets copied together by hand or a conversion killed in between.)
  """
  totals: dict[tuple[str, str], dict[str, list[str]]] = {}
  for f in files:
    m = _SHARD_NAME.match(os.path.basename(f))
    if m:
      key = (os.path.dirname(f), m['prefix'])
      totals.setdefault(key, {}).setdefault(m['total'], []).append(f)
  for (folder, prefix), sets in totals.items():
    if len(sets) > 1:
      def newest(paths: list[str]) -> float:
        return max(tf.io.gfile.stat(p).mtime_nsec for p in paths)
      by_age = sorted(sets, key=lambda total: newest(sets[total]))
      desc = ', '.join(f'{len(sets[t])} file(s) -of-{t}' for t in by_age)
      raise ShardError(
          f'{folder!r} holds {len(sets)} shard sets of prefix {prefix!r}: {desc} (oldest first). '
          'Reading both would see each video twice; a reconversion with another --num_shards '
          f'probably left the old set. Delete it: rm {os.path.join(folder, prefix)}-*-of-{by_age[0]}')
    (total, members), = sets.items()
    if len(members) < int(total):
      _LOG.warning('%s: %d of %d shards of %r are listed', folder, len(members), int(total),
                   prefix)


def list_shards(shards: ShardSpec) -> list[str]:
  """Resolves a list, glob, comma list or directory to a sorted, de-duplicated list of files.

  Directories yield only `prefix-NNNNN-of-NNNNN` files when they hold any;
  globs and directories never yield hidden, temporary (.tmp) or JSON/text files.
  """
  specs = [s for s in shards.split(',')] if isinstance(shards, str) else list(shards)
  files: set[str] = set()
  for spec in specs:
    files.update(_expand_one(spec))
  if not files:
    raise ShardError(f'no shards given ({shards!r}); set config.data.train_shards / test_shards '
                     'to a glob, a directory or a comma-separated list of TFRecord files')
  empty = sorted(f for f in files if tfrecord.file_size(f) == 0)
  if empty:
    raise ShardError(f'shard file {empty[0]!r} is empty ({len(empty)} empty shard(s)); '
                     'rewrite it or remove it from the shard list')
  _check_one_set_per_prefix(sorted(files))
  return sorted(files)


@dataclasses.dataclass
class ShardIndex:
  """Every readable record of a list of shards, in shard order: where it is and how long."""
  files: list[str]
  file_id: np.ndarray  # int32 [N]: position in `files`.
  record: np.ndarray  # int64 [N]: position of the record within its file.
  offset: np.ndarray  # int64 [N]: byte offset of the record's header.
  length: np.ndarray  # int64 [N]: data bytes.
  damage: list[tfrecord.Damage]  # Unreadable stretches found while indexing.

  def __len__(self) -> int:
    return int(self.file_id.size)

  @property
  def lost_records(self) -> int:
    """Records lost to damage found while indexing (estimated within a damaged span)."""
    return sum(d.lost for d in self.damage)

  def describe(self, i: int) -> str:
    """'record 7 of /path/train-00001-of-00004' for index entry i."""
    return f'record {int(self.record[i])} of {self.files[int(self.file_id[i])]}'

  def reader(self) -> tfrecord.RandomAccessReader:
    return tfrecord.RandomAccessReader(self.files)

  def read(self, reader: tfrecord.RandomAccessReader, i: int) -> bytes:
    return reader.read(int(self.file_id[i]), int(self.offset[i]), int(self.length[i]),
                       int(self.record[i]))

  def view(self, reader: tfrecord.RandomAccessReader, i: int) -> memoryview | bytes:
    """Record i, checked, as a view of its file's memory map where the file is local."""
    return reader.view(int(self.file_id[i]), int(self.offset[i]), int(self.length[i]),
                       int(self.record[i]))


def index_shards(files: Sequence[str]) -> ShardIndex:
  """Indexes the records of `files` (headers only); logs damage, refuses non-TFRecord files."""
  try:
    per_file = tfrecord.index_files(files)
  except tfrecord.RecordError as e:
    raise ShardError(str(e)) from e
  damage = [d for f in per_file for d in f.damage]
  for d in damage[:20]:
    _LOG.warning('unreadable shard data (skipped): %s', d.describe())
  if len(damage) > 20:
    _LOG.warning('... and %d more damaged stretches', len(damage) - 20)
  counts = [f.offsets.size for f in per_file]
  index = ShardIndex(
      files=list(files),
      file_id=np.repeat(np.arange(len(files), dtype=np.int32), counts),
      record=np.concatenate([np.arange(c, dtype=np.int64) for c in counts] or [np.zeros(0, np.int64)]),
      offset=np.concatenate([f.offsets for f in per_file] or [np.zeros(0, np.int64)]),
      length=np.concatenate([f.lengths for f in per_file] or [np.zeros(0, np.int64)]),
      damage=damage)
  # Record positions count the records lost before them, so messages match the file.
  for fid, f in enumerate(per_file):
    if f.damage:
      positions = _positions_with_damage(f)
      index.record[index.file_id == fid] = positions
  if not len(index):
    raise ShardError(f'no readable record in {len(files)} shard(s) (first: {files[0]!r}); '
                     + '; '.join(d.describe() for d in damage[:3]))
  return index


def _positions_with_damage(f: tfrecord.FileIndex) -> np.ndarray:
  """Each readable record's position in its file, counting the records lost before it."""
  shift = np.zeros(f.offsets.size, np.int64)
  for d in f.damage:
    shift[f.offsets >= d.end] += d.lost
  return np.arange(f.offsets.size, dtype=np.int64) + shift


def split_for_process(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """This host's disjoint share of the shards; together the hosts cover every shard."""
  if not 0 <= process_index < process_count:
    raise ShardError(f'process_index {process_index} is outside [0, {process_count})')
  if len(files) < process_count:
    raise ShardError(f'{len(files)} shard(s) cannot be split over {process_count} processes; '
                     f'write at least {process_count} shards (e.g. write_shards(num_shards=...)) '
                     f'first shard: {files[0] if files else None!r}')
  return list(files[process_index::process_count])


def parse_example(serialized: tf.Tensor, *, video: bool = True, flow: bool = False,
                  audio: bool = False, all_labels: bool = False,
                  clip_id: bool = False) -> dict[str, tf.Tensor]:
  """Parses one SequenceExample, reading only the requested features (parsing is the I/O cost).

  Returns 'video' (string [T]), 'flow' (string [T]), 'audio' (float32 [S]),
  'labels' (every clip/label/index value, int32 [L], for multi-label data)
  and 'clip_id' (string scalar, '' when absent) as requested, and always
  'label' (the first label, int32 scalar, -1 when absent). A missing feature
  yields an empty tensor; callers decide whether that skips the record.
  """
  context = {dmvr_format.LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64)}
  if clip_id:
    context[dmvr_format.VIDEO_ID_KEY] = tf.io.FixedLenFeature([], tf.string, default_value='')
  sequence = {}
  if video:
    sequence[dmvr_format.IMAGE_KEY] = tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
  if flow:
    sequence[dmvr_format.FLOW_KEY] = tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
  if audio:
    sequence[dmvr_format.WAVEFORM_KEY] = tf.io.RaggedFeature(tf.float32)
  ctx, seq = tf.io.parse_single_sequence_example(serialized, context_features=context,
                                                 sequence_features=sequence)
  labels = ctx[dmvr_format.LABEL_INDEX_KEY].values
  out = {'label': tf.cond(tf.size(labels) > 0, lambda: tf.cast(labels[0], tf.int32),
                          lambda: tf.constant(-1, tf.int32))}
  if all_labels:
    out['labels'] = tf.cast(labels, tf.int32)
  if clip_id:
    out['clip_id'] = ctx[dmvr_format.VIDEO_ID_KEY]
  if video:
    out['video'] = seq[dmvr_format.IMAGE_KEY]
  if flow:
    out['flow'] = seq[dmvr_format.FLOW_KEY]
  if audio:
    out['audio'] = seq[dmvr_format.WAVEFORM_KEY].flat_values
  return out


@dataclasses.dataclass(frozen=True)
class FramesOnDemand:
  """A record split for the training sampler: everything but the frames, and the frames'
  places (`frame_spans.split_record`), so that only the sampled frames are ever copied.

  `rest`: the serialized record without its frame lists (parse it with `parse_example`,
  video=False). `spans`: {feature key: int64 [T, 2]} byte spans of the frames.
  `take`: int64 [K, 2] spans -> string [K] encoded frames.
  """
  rest: tf.Tensor
  spans: dict[str, tf.Tensor]
  take: Callable[[tf.Tensor], tf.Tensor]

  def frames(self, key: str, positions: tf.Tensor) -> tf.Tensor:
    """The spans of frames `positions` of feature list `key` (for `take`)."""
    return tf.gather(self.spans[key], positions)


def frame_keys(*, flow: bool) -> tuple[str, ...]:
  """The feature lists a training record's frames are read from."""
  return (dmvr_format.IMAGE_KEY,) + ((dmvr_format.FLOW_KEY,) if flow else ())


def split_record_op(serialized: tf.Tensor, keys: Sequence[str]
                    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """Graph op: serialized record -> (rest, {key: spans}) by `frame_spans.split_record`."""
  def split(record: bytes | np.ndarray) -> list[Any]:  # Bytes, or a 0-d array holding them.
    rest, spans = frame_spans.split_record(
        record if isinstance(record, bytes) else record.item(), keys)
    return [rest] + [spans[k] for k in keys]
  out = tf.numpy_function(split, [serialized], [tf.string] + [tf.int64] * len(keys),
                          stateful=False)
  rest = tf.ensure_shape(out[0], [])
  return rest, {k: tf.ensure_shape(s, [None, 2]) for k, s in zip(keys, out[1:])}


def frames_on_demand(serialized: tf.Tensor, keys: Sequence[str]) -> FramesOnDemand:
  """A FramesOnDemand of a record held as a tensor: frames cut out of it with substr.

  The pipeline reads records into Python and cuts frames there, without this tensor
  (`pipeline._frames_on_demand_reader`); this form serves code holding a serialized
  record, and holds the pipeline's split to TensorFlow's parser in the tests."""
  rest, spans = split_record_op(serialized, keys)
  return FramesOnDemand(rest=rest, spans=spans, take=frames_cut_from(serialized))


def frames_cut_from(serialized: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
  """A FramesOnDemand.take for a record held as a tensor: spans [K, 2] -> its frames [K]."""
  def take(spans_K2: tf.Tensor) -> tf.Tensor:
    return tf.strings.substr(serialized, spans_K2[:, 0], spans_K2[:, 1] - spans_K2[:, 0])
  return take


def check_features(index: ShardIndex, *, flow: bool = False, audio: bool = False,
                   video: bool = False, sample: int = 4, what: str = 'the config') -> None:
  """Fails up front when sampled shards lack a feature the config (or protocol) needs.

  The pipelines skip (and count) records without needed frames, audio or flow;
  if *no* record has them, training would skip forever and an evaluation would
  read every record before failing. Reading the first record of a few shards
  turns that into an immediate error naming the files; `what` names the needer.
  """
  needed = {'frames': (video, dmvr_format.IMAGE_KEY), 'flow': (flow, dmvr_format.FLOW_KEY),
            'audio': (audio, dmvr_format.WAVEFORM_KEY)}
  needed = {name: key for name, (want, key) in needed.items() if want}
  if not needed:
    return
  checked = []
  reader = index.reader()
  try:
    for fid in np.unique(index.file_id)[:sample]:
      first = int(np.argmax(index.file_id == fid))
      try:
        example = tf.train.SequenceExample.FromString(index.read(reader, first))
      except Exception:  # pylint: disable=broad-except
        continue  # A corrupt record proves nothing; the pipeline skips and counts it.
      lists = example.feature_lists.feature_list
      lacking = [name for name, key in needed.items() if not lists[key].feature]
      if not lacking:
        return
      checked.append(index.files[int(fid)])
  finally:
    reader.close()
  if checked:
    missing = ', '.join(f'{name} ({needed[name]})' for name in lacking)
    if 'frames' in lacking:
      raise ShardError(
          f'{what} needs video frames, but the shards hold no frames ({dmvr_format.IMAGE_KEY} '
          f'is empty in the first record of each of {checked}): they look like audio-only '
          'shards (brave_jax.data.convert --audio_only); give shards converted from videos '
          'without --audio_only')
    raise ShardError(
        f'{what} needs {missing}, but the first record of each of {checked} lacks it; '
        'convert with the matching options (e.g. `brave_jax.data.convert --flow`) or drop the '
        'modality from config.data.broad_modalities')


def check_shard_features(shards: ShardSpec, *, video: bool = False, audio: bool = False,
                         flow: bool = False, what: str = 'the config') -> None:
  """`check_features` on a shard spec (listed and indexed here): one quick look, before any
  model is built, that the shards hold what the protocol `what` needs."""
  check_features(index_shards(list_shards(shards)), video=video, audio=audio, flow=flow,
                 what=what)
