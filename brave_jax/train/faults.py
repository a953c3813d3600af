"""Why a training run stopped, said so that the user knows what to do next.

A non-finite loss or parameter stops the run before it is saved
(NonFiniteError); a full disk, a failed background save or a lost peer
process becomes one RunError (brave_jax/errors.py) that names the last good
checkpoint and says that a rerun resumes from it (docs/training.md).
"""
from __future__ import annotations

import math

import jax
import numpy as np

from brave_jax import errors
from brave_jax import files
from brave_jax.train import checkpointing
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib

# Collective/coordination failures that mean another process of the run is gone.
_PEER_LOST_SIGNS = ('Gloo', 'Connection reset by peer', 'Connection closed', 'heartbeat',
                    'coordination service', 'CoordinationService', 'Socket closed',
                    'failed to connect to all addresses', 'Barrier failed')


class NonFiniteError(errors.RunError, FloatingPointError):
  """A loss, gradient or parameter became NaN/inf; the run stops before saving it."""


def check_finite_scalars(step: int, scalars: dict[str, float], last_good: int | None,
                         ckpt_dir: str) -> None:
  """Raises NonFiniteError naming the first non-finite metric (the loss first)."""
  names = sorted(scalars, key=lambda k: (k != 'loss', not k.startswith('loss'), k))  # Loss first.
  for name in names:
    value = scalars[name]
    if not math.isfinite(value):
      raise NonFiniteError(
          f'non-finite {name} = {value} at step {step} (update {step - 1}); not saved. The last '
          f'good checkpoint is step {last_good} in {ckpt_dir} and a rerun resumes from it. Lower '
          f'config.optimizer.base_learning_rate, lengthen warmup_steps, or check the input data.')


def check_finite_tree(step: int, host_state: step_lib.TrainState, last_good: int | None,
                      ckpt_dir: str) -> None:
  """Raises NonFiniteError naming the first non-finite parameter or state leaf."""
  for part in ('params', 'state'):
    for key_path, x in jax.tree_util.tree_flatten_with_path(getattr(host_state, part))[0]:
      x = np.asarray(x)
      if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        name = optimizer_lib.param_path(key_path)
        raise NonFiniteError(
            f'non-finite {part} {name!r} at step {step}; not saved. The last good checkpoint is '
            f'step {last_good} in {ckpt_dir}. Lower config.optimizer.base_learning_rate.')


def _peer_lost(error: BaseException) -> bool:
  """True when `error` says a collective or the coordination service lost another process."""
  if jax.process_count() < 2:
    return False
  text = ' '.join(str(e) for e in files.error_chain(error))
  return any(sign in text for sign in _PEER_LOST_SIGNS)


def explain_stop(error: BaseException, reached: int, workdir: str,
                 ckpt: checkpointing.Checkpointer) -> BaseException:
  """The error to raise for a run that stopped after `reached` updates: a clear RunError where we
  know the cause.

  Called after the checkpointer closed, so ckpt.committed_step is what a rerun resumes from.
  """
  if isinstance(error, (KeyboardInterrupt, SystemExit)):
    return error
  last = ckpt.committed_step
  where = ckpt.directory
  resume_from = (f'the last good checkpoint is step {last} in {where}, and a rerun of the same '
                 'command resumes from it' if last else
                 f'no checkpoint was saved yet in {where}, so a rerun starts from step 0')
  path = files.disk_full_path(error)
  if path == '':  # ENOSPC without a file name: name the checkpoint being saved, if that was it.
    path = next((e.path for e in files.error_chain(error)
                 if isinstance(e, errors.CheckpointSaveError)), '')
  if path is not None:
    return errors.DiskFullError(
        f'{files.NO_SPACE} writing {path or workdir}. Training stopped after step {reached}; '
        f'{resume_from} once space is freed on that disk.', path=path)
  if isinstance(error, errors.RunError):
    return error
  if _peer_lost(error):
    first = errors.first_line(error, limit=300)
    rerun = (f'resume from the last good checkpoint, step {last} in {where}' if last else
             f'start over (no checkpoint was saved yet in {where})')
    return errors.PeerLostError(
        f'process {jax.process_index()} of {jax.process_count()} lost contact with another '
        f'process of this run after step {reached} ({first}); it probably died or was killed (see '
        f'its log). Rerun the same command on every process to {rerun}.')
  return error
