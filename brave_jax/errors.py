"""Errors whose message alone tells the user what happened and what to do.

The command-line entry points (main.py, evaluate.py) print a `RunError` as one
line, `error: <message>`, with no Python traceback, and exit non-zero: the
traceback would only bury the one line that matters (the path, the field, the
checkpoint a rerun resumes from). Anything else still gets its traceback.
"""
from __future__ import annotations

import errno
from typing import Callable, TypeVar

from brave_jax import log

_LOG = log.get_logger(__name__)
T = TypeVar('T')
EXIT_RUN_ERROR = 1  # The run stopped; its message says how to go on.
EXIT_USAGE = 2  # The command line or config cannot describe a run (argparse uses 2 too).


class RunError(Exception):
  """Base of the errors the CLIs print as one line; the message names the file/field and the fix."""
  exit_code = EXIT_RUN_ERROR


class UsageError(RunError, ValueError):
  """The command line or config cannot describe a run (bad path, unknown field, bad value)."""
  exit_code = EXIT_USAGE


class DiskFullError(RunError, OSError):
  """A write failed with ENOSPC; says which path, the last good checkpoint, and that a rerun resumes."""

  def __init__(self, message: str, path: str = ''):
    super().__init__(message)
    self.errno = errno.ENOSPC
    self.path = path

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ''


class CheckpointSaveError(RunError):
  """A (background) checkpoint save failed; the previous checkpoint is kept."""

  def __init__(self, message: str, path: str = ''):
    super().__init__(message)
    self.path = path  # The checkpoint being written.


class WorkdirMismatchError(RunError):
  """The workdir's checkpoints were made by another config/model than this run's."""


class PeerLostError(RunError):
  """Another process of a multi-host run died or became unreachable."""


def one_line(message: str, limit: int = 400) -> str:
  """`message` on one line (newlines folded), cut to `limit` characters."""
  text = ' '.join(str(message).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def first_line(error: BaseException, limit: int = 600) -> str:
  """The first line of an error's message (its type name if empty), cut to `limit`."""
  text = str(error).strip()
  return one_line(text.splitlines()[0] if text else type(error).__name__, limit=limit)


def print_error(error: BaseException) -> None:
  """`error: <message>` on stderr, one line (the CLIs' handler, installed here if not yet)."""
  log.configure_cli()
  _LOG.error(one_line(str(error), limit=2000))


def run_cli(main: Callable[[], T]) -> T:
  """Calls main(); a RunError becomes one printed line and SystemExit(its exit code)."""
  try:
    return main()
  except RunError as error:
    print_error(error)
    raise SystemExit(error.exit_code) from None
