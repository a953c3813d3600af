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


def load_config(name: str, variant: str | None = 'tiny'):
  """Loads configs/<name>.py:get_config(variant) the way main.py does."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = REPO_ROOT / 'configs' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(f'configs.{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)
