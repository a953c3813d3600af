"""Finding shards, splitting them over hosts, and parsing only the features a config needs.

Shard lists are resolved and checked here, before anything compiles, so a typo
in a path fails in a second with the path in the message instead of hanging a
pod on an empty dataset.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

import tensorflow as tf

from brave_jax import errors
from brave_jax.data import dmvr_format

ShardSpec = str | Sequence[str]


class ShardError(errors.RunError, ValueError):
  """The shard specification names nothing readable, or cannot be split over hosts.

  A RunError: its message names the shards, so the CLIs print it as one line."""


def _expand_one(spec: str) -> list[str]:
  spec = os.path.expanduser(spec.strip())
  if not spec:
    return []
  if os.path.isdir(spec):
    files = [os.path.join(spec, f) for f in os.listdir(spec)]
    files = [f for f in files if os.path.isfile(f) and not f.endswith('.tmp')]
    if not files:
      raise ShardError(f'shard directory {spec!r} holds no files; write shards there '
                       '(brave_jax.data.dmvr_format.write_shards) or point at another directory')
    return files
  if glob.has_magic(spec):
    files = [f for f in glob.glob(spec) if os.path.isfile(f)]
    if not files:
      raise ShardError(f'shard pattern {spec!r} matches no files; check the path and pattern')
    return files
  if not os.path.isfile(spec):
    raise ShardError(f'shard file {spec!r} does not exist; check the path '
                     '(a glob, a directory or a comma-separated list is also accepted)')
  return [spec]


def list_shards(shards: ShardSpec) -> list[str]:
  """Resolves a list, glob, comma list or directory to a sorted, de-duplicated list of files."""
  specs = [s for s in shards.split(',')] if isinstance(shards, str) else list(shards)
  files: set[str] = set()
  for spec in specs:
    files.update(_expand_one(spec))
  if not files:
    raise ShardError(f'no shards given ({shards!r}); set config.data.train_shards / test_shards '
                     'to a glob, a directory or a comma-separated list of TFRecord files')
  empty = sorted(f for f in files if os.path.getsize(f) == 0)
  if empty:
    raise ShardError(f'shard file {empty[0]!r} is empty ({len(empty)} empty shard(s)); '
                     'rewrite it or remove it from the shard list')
  return sorted(files)


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
                  audio: bool = False) -> dict[str, tf.Tensor]:
  """Parses one SequenceExample, reading only the requested features (parsing is the I/O cost).

  Returns 'video' (string [T]), 'flow' (string [T]), 'audio' (float32 [S]) as
  requested, and always 'label' (int32 scalar, -1 when absent). A missing
  feature yields an empty tensor; callers decide whether that skips the record.
  """
  context = {dmvr_format.LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64)}
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
  if video:
    out['video'] = seq[dmvr_format.IMAGE_KEY]
  if flow:
    out['flow'] = seq[dmvr_format.FLOW_KEY]
  if audio:
    out['audio'] = seq[dmvr_format.WAVEFORM_KEY].flat_values
  return out


def check_features(files: Sequence[str], *, flow: bool = False, audio: bool = False,
                   sample: int = 4) -> None:
  """Fails before training when sampled shards lack a feature the config needs.

  The training pipeline skips (and counts) records without needed audio or
  flow; if *no* record has them it would skip forever. Reading the first record
  of a few shards turns that silent hang into an error naming the files.
  """
  needed = {'flow': (flow, dmvr_format.FLOW_KEY), 'audio': (audio, dmvr_format.WAVEFORM_KEY)}
  needed = {name: key for name, (want, key) in needed.items() if want}
  if not needed:
    return
  checked = []
  for path in list(files)[:sample]:
    for record in tf.data.TFRecordDataset(path).take(1):
      try:
        example = tf.train.SequenceExample.FromString(record.numpy())
      except Exception:  # pylint: disable=broad-except
        continue  # A corrupt record proves nothing; the pipeline skips and counts it.
      if all(example.feature_lists.feature_list[key].feature for key in needed.values()):
        return
      checked.append(path)
  if checked:
    missing = ', '.join(f'{name} ({key})' for name, key in needed.items())
    raise ShardError(
        f'the config needs {missing}, but the first record of each of {checked} lacks it; '
        'convert with the matching options (e.g. `brave_jax.data.convert --flow`) or drop the '
        'modality from config.data.broad_modalities')
