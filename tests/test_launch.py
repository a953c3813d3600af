"""Launch scripts: shellcheck-clean, and --dry-run prints the commands without running them."""
import os
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT

LAUNCH = REPO_ROOT / 'launch'
TPU_FLAGS = ['--project=my-project', '--zone=us-central2-b', '--name=brave-v4-32',
             '--accelerator=v4-32', '--bucket=gs://my-bucket']


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run(['bash', *args], capture_output=True, text=True, timeout=60,
                        env={**os.environ, **(env or {})}, cwd=REPO_ROOT)


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='shellcheck not installed')
def test_scripts_pass_shellcheck():
  scripts = sorted(str(p) for p in LAUNCH.glob('*.sh'))
  result = subprocess.run(['shellcheck', '-x', *scripts], capture_output=True, text=True,
                          cwd=REPO_ROOT)
  assert result.returncode == 0, result.stdout


def test_tpu_dry_run_prints_every_stage_for_a_pod_slice():
  outputs = {cmd: _run(str(LAUNCH / 'tpu_vm.sh'), '--dry-run', *TPU_FLAGS, cmd)
             for cmd in ('create', 'install', 'train', 'logs', 'stop', 'delete')}
  for cmd, result in outputs.items():
    assert result.returncode == 0, (cmd, result.stderr)
    assert result.stdout.startswith('+ '), (cmd, result.stdout)
  assert '--accelerator-type=v4-32' in outputs['create'].stdout
  assert '--worker=all' in outputs['install'].stdout
  train = outputs['train'].stdout
  assert '--worker=all' in train and '--workdir=gs://my-bucket/brave/brave_rgb_audio' in train
  assert 'delete brave-v4-32' in outputs['delete'].stdout


@pytest.mark.parametrize('missing, message', [
    ('--zone=us-central2-b', 'no zone'),
    ('--bucket=gs://my-bucket', 'no bucket'),
])
def test_tpu_script_fails_early_naming_the_missing_setting(missing, message):
  flags = [f for f in TPU_FLAGS if f != missing]
  result = _run(str(LAUNCH / 'tpu_vm.sh'), '--dry-run', *flags, 'train',
                env={'TPU_ZONE': '', 'BRAVE_BUCKET': ''})
  assert result.returncode == 2 and message in result.stderr


def test_gpu_dry_run_installs_cuda_jax_then_trains():
  result = _run(str(LAUNCH / 'gpu.sh'), '--dry-run', '--cuda=12', '--',
                '--config.training.batch_size=64')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert "pip install -q 'jax[cuda12]==0.10.2'" in lines[1]
  assert lines[-1].endswith('--config.training.batch_size=64')


def test_tpu_dry_run_plan_compiles_for_the_slices_topology_without_gcloud_settings():
  result = _run(str(LAUNCH / 'tpu_vm.sh'), '--dry-run', '--accelerator=v5litepod-4', 'plan',
                '--find_max_batch', env={'TPU_ZONE': '', 'TPU_PROJECT': ''})
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == ('+ python3 -m brave_jax.plan '
                                   '--config=configs/brave_rgb_audio.py --topology=v5e:2x2 '
                                   '--find_max_batch')
  # A multi-host type has no default topology: the script says to pass one.
  result = _run(str(LAUNCH / 'tpu_vm.sh'), '--dry-run', *TPU_FLAGS, 'plan')
  assert result.returncode == 2 and 'pass --topology' in result.stderr
  result = _run(str(LAUNCH / 'tpu_vm.sh'), '--dry-run', *TPU_FLAGS, '--topology=v4:2x2x4', 'plan')
  assert result.returncode == 0 and '--topology=v4:2x2x4' in result.stdout
