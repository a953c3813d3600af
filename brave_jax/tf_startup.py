"""Importing TensorFlow with its start-up banners shown once, not twice.

TensorFlow 2.x prints C++ start-up lines when it is imported (absl's "All log
messages before absl::InitializeLog() ..." and the oneDNN notice), and two of
its shared libraries each print them, so every command showed each banner
twice. `import_tensorflow` imports it with the process's standard error (file
descriptor 2, where the C++ code writes) captured, then writes each distinct
line once, timestamps aside. TF_CPP_MIN_LOG_LEVEL defaults to 1 (C++ INFO
lines such as the CPU-instruction notice off; warnings and errors still show);
a value the user set is kept. The command-line entry points call it before
anything else imports TensorFlow.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

# 'I0000 00:00:1796528614.133189    6001 ' (glog/absl prefix: level, date, time, thread id).
_LOG_PREFIX = re.compile(r'^[IWEF]\d{4} [\d:.]+\s+\d+ ')


def distinct_lines(text: str) -> list[str]:
  """The lines of `text`, each kept at its first appearance (log timestamps not compared)."""
  seen, out = set(), []
  for line in text.splitlines():
    key = _LOG_PREFIX.sub('', line).strip()
    if key and key not in seen:
      seen.add(key)
      out.append(line)
  return out


def import_tensorflow() -> ModuleType:
  """`import tensorflow`, its start-up banners printed once (module docstring)."""
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):  # No real fd 2: nothing to capture.
    import tensorflow  # pylint: disable=g-import-not-at-top
    return tensorflow
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top
    finally:
      try:
        sys.stderr.flush()
      except (OSError, ValueError):
        pass
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = distinct_lines(captured.read().decode('utf-8', 'replace'))
      if lines:  # TensorFlow's own output, passed on as it was written (not a brave_jax log line).
        print('\n'.join(lines), file=sys.stderr, flush=True)
  return tensorflow
