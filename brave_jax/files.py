"""Writing run outputs so that a crash or a full disk never leaves half a file behind.

Whole files (config.json, plots, result JSON) go to a temporary name in the
same directory and are renamed over the target: a reader sees the old file or
the new one, never a torn one. metrics.jsonl is appended to instead (rewriting
it whole at every log step would cost O(steps^2) bytes over a long run): one
write per line, fsync'd, and truncated back to its old size when the write
fails, so a line is either fully there or not; `repair_jsonl_tail` drops a torn
last line left by an older version or a power cut, and readers skip (and warn
about) any line that does not parse.

Remote paths (gs://...) go through etils.epath: object stores write whole
objects atomically, and have no append, so an "append" rewrites the object.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import warnings
from typing import Any, Iterator

from etils import epath

NO_SPACE = 'No space left on device'


def is_remote(path: str) -> bool:
  return '://' in str(path)


def with_path(error: OSError, path: str) -> OSError:
  """The same OSError, naming `path` (f.write errors carry no filename)."""
  if getattr(error, 'filename', None):
    return error
  return type(error)(error.errno, error.strerror or str(error), str(path))


def write_atomic(path: str, data: bytes | str) -> str:
  """Writes `data` to `path` via a temporary file + rename; returns path."""
  payload = data.encode() if isinstance(data, str) else data
  if is_remote(path):
    epath.Path(path).write_bytes(payload)
    return path
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(directory, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
  try:
    with open(tmp, 'wb') as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as error:
    _remove_quietly(tmp)
    raise with_path(error, path) from error
  except BaseException:
    _remove_quietly(tmp)
    raise
  return path


def save_figure(figure: Any, path: str, dpi: int = 100) -> str:
  """A matplotlib figure as a PNG at `path`, written atomically (a plot is replaced whole or not
  at all, so a crash or a full disk never leaves a truncated PNG), then closed; returns path.

  Creates a local parent directory if missing. Every plot of the project goes through here.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  try:
    png = io.BytesIO()
    figure.savefig(png, format='png', dpi=dpi)
  finally:
    plt.close(figure)
  if not is_remote(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return write_atomic(path, png.getvalue())


def write_json(path: str, record: Any, indent: int | None = 2) -> str:
  """json.dumps(record) written atomically, with a trailing newline."""
  return write_atomic(path, json.dumps(record, indent=indent) + '\n')


def _remove_quietly(path: str) -> None:
  try:
    os.remove(path)
  except OSError:
    pass


def append_line(path: str, line: str) -> None:
  """Appends `line` + newline as one write; on failure the file is cut back to its old size."""
  data = (line.rstrip('\n') + '\n').encode()
  if is_remote(path):
    p = epath.Path(path)
    old = p.read_bytes() if p.exists() else b''
    p.write_bytes(old + data)
    return
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    try:
      written = os.write(fd, data)
      if written != len(data):  # A short write only happens when the disk is full.
        raise OSError(errno.ENOSPC, NO_SPACE, path)
      os.fsync(fd)
    except OSError as error:
      try:
        os.ftruncate(fd, size)  # Freeing bytes needs no space.
      except OSError:
        pass
      raise with_path(error, path) from error
  finally:
    os.close(fd)


def repair_jsonl_tail(path: str) -> bool:
  """Cuts a torn last line (no trailing newline) off a local JSON-lines file; True if it did."""
  if is_remote(path) or not os.path.exists(path):
    return False
  with open(path, 'rb+') as f:
    data = f.read()
    if not data or data.endswith(b'\n'):
      return False
    keep = data.rfind(b'\n') + 1
    f.truncate(keep)
  warnings.warn(f'{path}: dropped a torn last line ({len(data) - keep} bytes, written when a '
                'run stopped mid-write); the lines before it are intact')
  return True


def read_jsonl(path: str) -> Iterator[dict[str, Any]]:
  """The records of a JSON-lines file; a line that does not parse is skipped with a warning."""
  text = epath.Path(path).read_bytes().decode('utf-8', errors='replace')
  bad = []
  for number, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line:
      continue
    try:
      record = json.loads(line)
    except ValueError:
      bad.append(number)
      continue
    if isinstance(record, dict):
      yield record
    else:
      bad.append(number)
  if bad:
    warnings.warn(f'{path}: skipped {len(bad)} unreadable line(s) (line {", ".join(map(str, bad[:5]))}'
                  f'{", ..." if len(bad) > 5 else ""}): torn by a crash or a full disk')


def error_chain(error: BaseException) -> Iterator[BaseException]:
  """error, then what caused it (__cause__, else __context__), and so on."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


_QUOTED_PATH = re.compile(r'"((?:/|[a-z]+://)[^"]+)"')


def disk_full_path(error: BaseException) -> str | None:
  """If `error` (or what caused it) is a full disk: the path being written ('' if unknown); else None."""
  for e in error_chain(error):
    message = str(e)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return str(e.filename or '')
    if NO_SPACE in message or 'os_error_code=\'28\'' in message:
      paths = _QUOTED_PATH.findall(message)  # Orbax/TensorStore: 'Failed writing: "/path"'.
      return paths[-1] if paths else ''
  return None
