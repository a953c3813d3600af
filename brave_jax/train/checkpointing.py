"""Training checkpoints on disk (Orbax): atomic, last K kept, restored automatically.

A checkpoint holds the unreplicated `TrainState` (step, params, state,
opt_state, rng) and a small JSON `meta` with the data position. The training
data iterator is a pure function of (seed, process layout, shards, step)
(data/pipeline.py), so the step is all a resumed run needs to continue the
exact batch sequence; it is exact as long as the shards and the process
layout are the same as when the checkpoint was written.

Every process calls `save` and `restore` (multi-host: with the same host copy,
since the replicas are identical); Orbax synchronises the processes through
jax.distributed, writes the host numpy arrays from the primary process, and
commits a step directory atomically (temporary directory + rename), so a crash
mid-save leaves the previous checkpoint as the latest one. The directory must be
shared by all processes (a gs:// bucket on a TPU slice, a shared disk elsewhere).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from brave_jax.train import step as step_lib

_ITEMS = ('train_state', 'meta')


class _DropOrbaxInfo(logging.Filter):
  """Orbax logs a dozen INFO lines per save; keep its warnings, drop the rest."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def quiet_orbax_info_logs() -> None:
  """Installs the filter once on the absl logger Orbax writes through."""
  logger = logging.getLogger('absl')
  if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
    logger.addFilter(_DropOrbaxInfo())


class Checkpointer:
  """Saves and restores TrainState under `directory/<step>/`."""

  def __init__(self, directory: str, keep: int, async_save: bool = True):
    quiet_orbax_info_logs()
    self.directory = (directory.rstrip('/') if '://' in directory
                      else os.path.abspath(os.path.expanduser(directory)))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def latest_step(self) -> int | None:
    """The newest fully committed checkpoint's step, or None in a fresh workdir."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, train_state: step_lib.TrainState, meta: dict[str, Any] | None = None) -> None:
    """Saves an UNREPLICATED host TrainState at its own step; call on every process."""
    step = int(np.asarray(train_state.step))
    meta = dict(meta or {}, step=step)
    self._manager.save(
        step,
        args=ocp.args.Composite(
            train_state=ocp.args.StandardSave(train_state),
            meta=ocp.args.JsonSave(meta)),
        force=True)

  def restore(self, template: step_lib.TrainState,
              step: int | None = None) -> tuple[step_lib.TrainState, dict[str, Any]]:
    """(TrainState, meta) at `step` (default latest), shaped like the unreplicated `template`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    template = jax.tree.map(np.asarray, template)
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            train_state=ocp.args.StandardRestore(template),
            meta=ocp.args.JsonRestore()))
    return restored.train_state, dict(restored.meta)

  def wait_until_finished(self) -> None:
    """Blocks until an in-flight async save is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
