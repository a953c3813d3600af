"""A run's config.json: the resolved config training saves in its workdir, and reading it back.

The workdir says what it holds: training writes the config (after overrides)
before its first checkpoint, resuming compares a new config with it
(train/resume.py), and evaluation rebuilds the model it describes
(`python -m brave_jax.evaluate --workdir=...`). All three go through this
module, so the file is written and parsed one way.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from etils import epath
import jax
import ml_collections

from brave_jax import config_base
from brave_jax import errors
from brave_jax import files

FILE_NAME = 'config.json'


def path(workdir: str) -> str:
  """Where a workdir's config.json lives."""
  return os.path.join(workdir, FILE_NAME)


def as_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as config.json stores it (JSON types: tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def write(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config atomically (process 0 only); returns its path."""
  target = path(workdir)
  if jax.process_index() == 0:
    files.write_atomic(target, config.to_json_best_effort(indent=2, sort_keys=True))
  return target


def read_dict(workdir: str) -> dict[str, Any] | None:
  """workdir/config.json as a dict; None when it is missing or unreadable (torn by an old crash)."""
  file = epath.Path(path(workdir))
  if not file.exists():
    return None
  try:
    value = json.loads(file.read_text())
  except ValueError:
    return None
  return value if isinstance(value, dict) else None


def _merge(base: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Writes JSON values into `base`, turning lists back into tuples where the schema has tuples."""
  for key, value in values.items():
    if key in base and isinstance(base[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge(base[key], value)
      continue
    if isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    with base.unlocked():
      if key in base and not isinstance(base[key], ml_collections.ConfigDict):
        base[key] = value
      else:
        base[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def read(file: str) -> ml_collections.ConfigDict:
  """The config a training run wrote (a config.json path), on top of today's schema defaults.

  Fields added to the schema since the run keep their defaults. A missing or
  torn file is a UsageError that says what to pass instead.
  """
  if not epath.Path(file).is_file():
    raise errors.UsageError(f'{file} not found: --workdir must be a training workdir (main.py '
                            'writes config.json there), or pass --config=configs/<file>.py[:variant]')
  try:
    values = json.loads(epath.Path(file).read_text())
  except ValueError as error:
    raise errors.UsageError(f'{file} is not valid JSON ({error}); pass '
                            '--config=configs/<file>.py[:variant] instead') from error
  config = config_base.base_config()
  _merge(config, values)
  return config
