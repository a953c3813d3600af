"""TensorFlow's start-up banners are printed once by the command-line entry points (issue 21)."""
import os
import subprocess
import sys

from brave_jax import tf_startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_distinct_lines_ignore_log_timestamps():
  text = ('WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n'
          'I0000 00:00:1796528614.133189    6001 port.cc:153] oneDNN custom operations are on.\n'
          'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n'
          'I0000 00:00:1796528620.963141    6001 port.cc:153] oneDNN custom operations are on.\n'
          '\n')
  assert tf_startup.distinct_lines(text) == text.splitlines()[:2]


def _stderr_of(code: str) -> str:
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                        check=True, timeout=300).stderr


def test_banners_printed_once_at_most():
  """Before: a plain `import tensorflow` printed each start-up banner twice (two of its shared
  libraries print them). Through tf_startup every line appears at most once."""
  quiet = _stderr_of('from brave_jax import tf_startup; tf = tf_startup.import_tensorflow(); '
                     'print(tf.constant(1).numpy())')
  lines = [tf_startup._LOG_PREFIX.sub('', l) for l in quiet.splitlines() if l.strip()]
  assert len(lines) == len(set(lines)), quiet
  plain = _stderr_of('import tensorflow')  # What it fixes, on this TensorFlow build.
  plain_lines = [tf_startup._LOG_PREFIX.sub('', l) for l in plain.splitlines() if l.strip()]
  if len(plain_lines) != len(set(plain_lines)):
    assert len(lines) < len(plain_lines)
