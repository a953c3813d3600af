"""The one output channel of the library: stdlib logging under the 'brave_jax' logger.

Every module logs through `logging.getLogger(__name__)`, so a user's own
script that imports brave_jax sees nothing but warnings (Python's last-resort
handler) unless it configures logging. The command-line entry points
(brave_jax.main, evaluate, plan, data.convert, ...) call `configure_cli` once:
from then on each INFO record is one plain line on standard output and each
warning or error one line on standard error, prefixed `warning: ` or
`error: `, which is what the commands printed before they logged.

The handler looks up sys.stdout and sys.stderr when it writes rather than when
it is made, so output captured or redirected later (pytest's capsys, a
contextlib.redirect_stdout) still receives it; every line is flushed at once,
since progress lines are read while a run goes on.
"""
from __future__ import annotations

import logging
import sys

ROOT = 'brave_jax'
_PREFIXES = {logging.WARNING: 'warning: ', logging.ERROR: 'error: ', logging.CRITICAL: 'error: '}


class ConsoleHandler(logging.Handler):
  """INFO and below to stdout as the bare message; WARNING and above to stderr, prefixed."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      text = _PREFIXES.get(record.levelno, '') + self.format(record)
      stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
      stream.write(text + '\n')
      stream.flush()
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def get_logger(name: str) -> logging.Logger:
  """The logger of module `name` (its __name__), under 'brave_jax' even when run as __main__."""
  return logging.getLogger(name if name == ROOT or name.startswith(ROOT + '.') else
                           f'{ROOT}.{name.strip("_")}')


def configure_cli(*, propagate: bool = False) -> logging.Logger:
  """Installs the console handler on the 'brave_jax' logger (once) at INFO; returns that logger.

  `propagate=False` keeps records from also reaching handlers on the root
  logger (absl's, under absl.app), which would print each line a second time
  in another format.
  """
  logger = logging.getLogger(ROOT)
  if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
    logger.addHandler(ConsoleHandler())
  logger.setLevel(logging.INFO)
  logger.propagate = propagate
  return logger
