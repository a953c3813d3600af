"""Test-wide setup: two simulated CPU devices, so pmap code is tested as it runs on a pod.

XLA reads the flag once, when the backend starts, so it must be set before any
test imports jax.
"""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

TESTDATA = pathlib.Path(__file__).parent / 'testdata'
REPO_ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def cli_logging():
  """brave_jax's log lines printed as the command-line tools print them, so capsys sees them;
  records still reach the root logger, so caplog sees them too."""
  from brave_jax import log  # pylint: disable=g-import-not-at-top
  log.configure_cli(propagate=True)


@pytest.fixture
def testdata_dir() -> pathlib.Path:
  return TESTDATA


def config_path(name: str, variant: str | None = 'tiny') -> str:
  """'configs/<name>.py:<variant>', absolute, for `config_base.load` and CLIs."""
  path = REPO_ROOT / 'configs' / f'{name}.py'
  return f'{path}:{variant}' if variant else str(path)


@pytest.fixture
def tiny_va_config():
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  return config_base.load(config_path('brave_rgb_audio', 'tiny'))


@pytest.fixture
def tiny_vv_config():
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  return config_base.load(config_path('brave_rgb_rgb', 'tiny'))


# The fast tier (`pytest tests -m "not slow"`, minutes, for everyday work) leaves out whole files
# whose tests start processes, kill them, compile full-size models or decode real media; the full
# suite (`pytest tests`, the README's command 2 and CI) runs everything. Chosen from measured
# durations (docs/testing.md); a single slow test elsewhere carries @pytest.mark.slow itself.
SLOW_FILES = frozenset({
    'test_faults.py',  # kill -9 and restart of real training processes.
    'test_multihost.py',  # Two processes joined by jax.distributed (gloo), each compiling.
    'test_published_train_step.py',  # Full-size V/A and V/V steps against the golden.
    'test_resume_data.py',  # A training process killed and resumed mid-epoch.
})


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: minutes on 2 CPU cores; left out of the fast tier '
                          '(-m "not slow"), always in the full suite')


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.path.name in SLOW_FILES:
      item.add_marker(pytest.mark.slow)
