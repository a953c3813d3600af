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


def pytest_configure(config):
  # `slow`: tests of a minute or more (full-size models); they still run in `pytest tests`.
  config.addinivalue_line('markers', 'slow: takes a minute or more (full-size models on CPU)')
