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

Saves run in the background. A watcher thread waits for each one, so a save
that fails (full disk, lost bucket) is raised by `check_save` at the next
training step as one CheckpointSaveError naming the directory, instead of
surfacing a checkpoint interval later under Orbax's per-thread tracebacks
(which are kept out of the log). A failed save never removes older
checkpoints; its temporary directory is deleted when the next training run starts.

`restore` checks the checkpoint's parameter shapes against the model first:
Orbax would otherwise hand back the on-disk shapes silently.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from brave_jax import errors
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib

_SHOWN_MISMATCHES = 5


class _QuietOrbax(logging.Filter):
  """Orbax logs a dozen INFO lines per save, and a traceback per worker thread when one fails.

  Keep its warnings; drop the INFO lines and the background-failure tracebacks
  (Checkpointer re-raises that failure once, with its cause, at the next step).
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if '/orbax/' not in record.pathname:
      return True
    if record.levelno < logging.WARNING:
      return False
    return not (record.exc_info and record.levelno < logging.CRITICAL)


def _drop_closed_loop_noise(unraisable: Any) -> None:
  """TensorStore callbacks that land after a failed save's event loop closed: nothing to report."""
  if isinstance(unraisable.exc_value, RuntimeError) and 'Event loop is closed' in str(
      unraisable.exc_value):
    return
  _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def quiet_orbax_logs() -> None:
  """Installs the filter (once) on the absl logger Orbax writes through, and the noise hook."""
  logger = logging.getLogger('absl')
  if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
    logger.addFilter(_QuietOrbax())
  if sys.unraisablehook is not _drop_closed_loop_noise:
    global _previous_unraisablehook  # pylint: disable=global-statement
    _previous_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _drop_closed_loop_noise



def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {optimizer_lib.param_path(path): tuple(getattr(x, 'shape', ())) for path, x in leaves}


def shape_mismatches(saved: Any, template: Any) -> list[str]:
  """Human-readable differences between two {params, state} trees of arrays or ArrayMetadata."""
  old, new = _shapes_by_path(saved), _shapes_by_path(template)
  lines = []
  for path in sorted(old.keys() | new.keys()):
    if path not in new:
      lines.append(f'{path} is in the checkpoint only')
    elif path not in old:
      lines.append(f'{path} is in this model only')
    elif old[path] != new[path]:
      lines.append(f'{path} is {old[path]} in the checkpoint, {new[path]} in this model')
  return lines


def _item_handlers() -> dict[str, Any]:
  return {'train_state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}


def latest_step(directory: str) -> int | None:
  """The newest committed checkpoint in `directory`, by listing it: nothing created, no collectives."""
  steps = ocp.path.step.checkpoint_steps(directory)
  return max(steps) if steps else None


class Checkpointer:
  """Saves and restores TrainState under `directory/<step>/`."""

  def __init__(self, directory: str, keep: int, async_save: bool = True,
               remove_failed_saves: bool = False):
    """remove_failed_saves: delete the temporary directories of saves that never committed
    (the training loop's, at start); never from a reader that may run beside training."""
    quiet_orbax_logs()
    self.directory = (directory.rstrip('/') if '://' in directory
                      else os.path.abspath(os.path.expanduser(directory)))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=remove_failed_saves)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=_item_handlers())
    self._watcher: threading.Thread | None = None
    self._saving_step: int | None = None
    self._save_error: BaseException | None = None
    self._committed_step = self._manager.latest_step()

  def latest_step(self) -> int | None:
    """The newest fully committed checkpoint's step, or None in a fresh workdir."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  @property
  def committed_step(self) -> int | None:
    """The newest checkpoint known to be complete on disk (a save still in flight is not)."""
    return self._committed_step

  def _watch(self, step: int) -> None:
    try:
      self._manager.wait_until_finished()
    except BaseException as error:  # pylint: disable=broad-except
      self._save_error = error
    else:
      self._committed_step = step

  def check_save(self) -> None:
    """Raises CheckpointSaveError if the last background save failed; never blocks."""
    error, step = self._save_error, self._saving_step
    if error is None:
      return
    self._save_error = None
    kept = ('there is no earlier checkpoint, so a rerun starts from step 0'
            if self._committed_step is None else
            f'the last good checkpoint, step {self._committed_step}, is kept and a rerun resumes '
            'from it')
    raise errors.CheckpointSaveError(
        f'saving checkpoint step {step} to {self.directory} failed: {errors.first_line(error)}; '
        f'{kept}.', path=os.path.join(self.directory, str(step))) from error

  def save(self, train_state: step_lib.TrainState, meta: dict[str, Any] | None = None) -> None:
    """Saves an UNREPLICATED host TrainState at its own step; call on every process."""
    self.wait_until_finished()  # Raises if the previous save failed.
    step = int(np.asarray(train_state.step))
    meta = dict(meta or {}, step=step)
    self._saving_step = step
    self._manager.save(
        step,
        args=ocp.args.Composite(
            train_state=ocp.args.StandardSave(train_state),
            meta=ocp.args.JsonSave(meta)),
        force=True)
    self._watcher = threading.Thread(target=self._watch, args=(step,), daemon=True,
                                     name=f'checkpoint_watch_{step}')
    self._watcher.start()

  def restore(self, template: step_lib.TrainState,
              step: int | None = None) -> tuple[step_lib.TrainState, dict[str, Any]]:
    """(TrainState, meta) at `step` (default latest), shaped like the unreplicated `template`.

    Raises WorkdirMismatchError, naming the parameters that differ, when the
    checkpoint was made by another model.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    template = jax.tree.map(np.asarray, template)
    self._check_shapes(template, step)
    try:
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
              train_state=ocp.args.StandardRestore(template),
              meta=ocp.args.JsonRestore()))
    except ValueError as error:
      if 'do not match' not in str(error):
        raise
      raise self._mismatch(step, [errors.first_line(error)]) from error
    return restored.train_state, dict(restored.meta)

  def _check_shapes(self, template: step_lib.TrainState, step: int) -> None:
    try:
      saved = self._manager.item_metadata(step)['train_state'].tree
    except Exception:  # pylint: disable=broad-except
      return  # No readable metadata (older Orbax layout): the restore itself still checks structure.
    mismatches = shape_mismatches({'params': saved['params'], 'state': saved['state']},
                                  {'params': template.params, 'state': template.state})
    if mismatches:
      raise self._mismatch(step, mismatches)

  def _mismatch(self, step: int, details: list[str]) -> errors.WorkdirMismatchError:
    shown = '; '.join(details[:_SHOWN_MISMATCHES])
    more = f' (and {len(details) - _SHOWN_MISMATCHES} more)' if len(details) > _SHOWN_MISMATCHES else ''
    return errors.WorkdirMismatchError(
        f'checkpoint step {step} in {self.directory} was made by another model: {shown}{more}. '
        'Use a new --workdir for this config, or rerun with the config that made the checkpoint '
        '(config.json beside checkpoints/).')

  def wait_until_finished(self) -> None:
    """Blocks until an in-flight async save is committed; raises CheckpointSaveError if it failed."""
    if self._watcher is not None:
      self._watcher.join()
      self._watcher = None
    self.check_save()

  def close(self) -> None:
    """Waits for the last save (raising if it failed) and releases Orbax's threads."""
    try:
      self.wait_until_finished()
    finally:
      try:
        self._manager.close()
      except BaseException:  # pylint: disable=broad-except
        pass  # Its error, if any, was just raised by wait_until_finished.
