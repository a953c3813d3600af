"""Evaluation protocols chosen by name, and the one request every protocol is given.

A protocol is a module `brave_jax/eval/<name>.py` with

    run_request(config, request: Request, output_dir: str) -> dict

that evaluates the model the request names on the data it names (defaults:
the config's data, else the embedded synthetic set), writes its results under
output_dir and returns the record it wrote. The same function serves
`python -m brave_jax.evaluate --protocol=<name>` and the end of pretraining
(`after_training`, for each name in config.eval.protocols), so a protocol
cannot score one way on the command line and another after training.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from types import ModuleType
from typing import Any

import ml_collections

NAMES = ('linear', 'finetune', 'audio', 'knn', 'retrieval')
# Where each protocol writes inside a workdir when no --output_dir is given.
OUTPUT_SUBDIR = {'linear': 'eval', 'finetune': 'finetune', 'audio': 'audio_eval', 'knn': 'knn',
                 'retrieval': 'retrieval'}


@dataclasses.dataclass(frozen=True)
class Request:
  """Which model and data one evaluation reads; the defaults mean "as the config says"."""
  # The model: exactly one of these (evaluate.py's --workdir / --checkpoint / --random_init).
  workdir: str | None = None  # A training workdir: its latest checkpoint.
  checkpoint: str | None = None  # A published-format .npy.
  random_init: bool = False  # An untrained model of the config's architecture (the baseline).
  train_state: Any = None  # The replicated TrainState pretraining just ended with.
  # The data (splits.resolve): shards, a prepared TFDS dataset, or '' = config / embedded set.
  train_shards: str = ''
  test_shards: str = ''
  tfds: str | None = None
  tfds_data_dir: str | None = None
  tfds_splits: tuple[str, str] = ('train', 'test')
  # Linear: write / re-fit from the embeddings (no model, no data when re-fitting).
  save_embeddings: bool = False
  embeddings: str | None = None
  # Audio: ESC-style fixed folds, or AudioSet-style multi-label.
  audio_shards: str = ''
  folds_csv: str | None = None
  id_column: str | None = None
  fold_column: str | None = None
  multilabel: bool = False
  num_classes: int | None = None

  def source(self, config: ml_collections.ConfigDict) -> Any:
    """The model as a backbone.Source (random init's BN statistics not yet calibrated)."""
    from brave_jax.eval import backbone  # pylint: disable=g-import-not-at-top
    if self.train_state is not None:
      return backbone.from_train_state(config, self.train_state)
    return backbone.load(config, workdir=None if self.random_init else self.workdir,
                         checkpoint=self.checkpoint, random=self.random_init)

  def splits(self, config: ml_collections.ConfigDict) -> tuple[Any, Any, list[str] | None]:
    """(train data, test data, class names or None) for the labelled protocols."""
    from brave_jax.eval import splits  # pylint: disable=g-import-not-at-top
    return splits.resolve(config, self.train_shards, self.test_shards, tfds_name=self.tfds,
                          tfds_data_dir=self.tfds_data_dir, tfds_splits=self.tfds_splits)


def tag(source: Any) -> str:
  """How results name a model: 'pretrained' (a workdir's), 'published' or 'random_init'."""
  return {'workdir': 'pretrained'}.get(source.kind, source.kind)


def module(name: str) -> ModuleType:
  """brave_jax.eval.<name>, the protocol's module."""
  if name not in NAMES:
    from brave_jax import errors  # pylint: disable=g-import-not-at-top
    raise errors.UsageError(f'unknown evaluation protocol {name!r}; the protocols are '
                            f'{", ".join(NAMES)}')
  return importlib.import_module(f'brave_jax.eval.{name}')


def run(name: str, config: ml_collections.ConfigDict, request: Request,
        output_dir: str) -> dict[str, Any]:
  """Runs protocol `name` on `request`; returns its record."""
  return module(name).run_request(config, request, output_dir)


def after_training(config: ml_collections.ConfigDict, workdir: str,
                   train_state: Any) -> dict[str, dict[str, Any]]:
  """Every protocol in config.eval.protocols on the model training just ended with.

  Linear writes into the workdir itself (results.json, eval_<tag>.json), as it
  always has; the others into <workdir>/<OUTPUT_SUBDIR>. Returns {name: record}
  (empty records on processes other than 0, except fine-tuning's).
  """
  import jax  # pylint: disable=g-import-not-at-top
  request = Request(workdir=workdir, train_state=train_state)
  records = {}
  for name in config.eval.protocols:
    if name != 'finetune' and jax.process_index() != 0:  # Fine-tuning trains on every process.
      records[name] = {}  # Frozen-feature protocols run on process 0 (eval data is not split).
      continue
    output_dir = workdir if name == 'linear' else os.path.join(workdir, OUTPUT_SUBDIR[name])
    records[name] = run(name, config, request, output_dir)
  return records
