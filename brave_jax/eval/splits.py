"""Which labelled data a protocol reads: DMVR shards, a TFDS dataset by name, or the embedded set.

One resolution for every protocol, so `--train_shards/--test_shards`,
`--tfds=NAME --tfds_data_dir=DIR` and the empty default (the embedded
synthetic dataset's splits) mean the same thing to linear, fine-tuning and kNN.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Sequence

import ml_collections

from brave_jax.data import reader
from brave_jax.data import tfds_reader


def resolve(config: ml_collections.ConfigDict, train: Any = None, test: Any = None, *,
            tfds_name: str | None = None, tfds_data_dir: str | None = None,
            tfds_splits: Sequence[str] = ('train', 'test')) -> tuple[Any, Any, list[str] | None]:
  """(train source, test source, class names or None).

  Order: a TFDS dataset (`tfds_name`, both splits from it), explicit shard
  arguments, config.data.{train,test}_shards (the pretraining shards, which
  must then carry labels), then the embedded synthetic dataset.
  """
  if tfds_name:
    if train or test:
      raise ValueError('give either --tfds or --train_shards/--test_shards, not both')
    sources = [tfds_reader.TfdsSplit(tfds_name, s, tfds_data_dir) for s in tfds_splits]
    for source in sources:
      tfds_reader.builder(source)  # Fails now, naming the dataset, if it is not prepared.
    return sources[0], sources[1], tfds_reader.class_names(sources[0])
  train = train or config.data.train_shards
  test = test or config.data.test_shards
  if train and test:
    return train, test, shard_class_names(train)
  if bool(train) != bool(test):
    missing = 'test' if train else 'train'
    raise ValueError(f'evaluation needs both splits: give --{missing}_shards (or '
                     f'config.data.{missing}_shards), or neither to use the embedded synthetic set')
  from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  # Same flag as training's call (main.train_shards), so both reuse one cached dataset.
  dataset = synthetic.ensure_dataset(config.data.synthetic,
                                     with_flow='flow' in config.data.broad_modalities)
  return dataset['train'], dataset['test'], list(dataset['class_names'])


def shard_class_names(shards: Any) -> list[str] | None:
  """Class names from the converter's `<prefix>_summary.json` beside the shards, if there is one."""
  if tfds_reader.is_tfds(shards):
    return tfds_reader.class_names(shards)
  try:
    files = reader.list_shards(shards)
  except reader.ShardError:
    return None
  for directory in sorted({os.path.dirname(f) for f in files}):
    for path in sorted(glob.glob(os.path.join(directory, '*_summary.json'))):
      try:
        with open(path) as f:
          classes = json.load(f).get('classes')
      except (OSError, ValueError):
        continue
      if classes:
        return list(classes)
  return None


def describe(source: Any) -> Any:
  """JSON-friendly description of a source for eval.json's 'data' field."""
  if tfds_reader.is_tfds(source):
    return str(source)
  return list(source) if isinstance(source, (list, tuple)) else source
