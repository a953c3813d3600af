"""Multi-process training on one machine: real jax.distributed processes over gloo CPU collectives.

Each child process gets its own XLA_FLAGS (conftest forces 2 devices in this
parent) and talks to the others through a coordinator on 127.0.0.1.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import conftest
from brave_jax.train import distributed

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'multihost_driver.py')
TIMEOUT_S = 240  # Per launch; both processes are killed if either overruns.
NUM_SHARDS = 4
CLIPS = 8


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _child_env(num_devices: int, cache_dir=None) -> dict:
  """This test's own device count; cheap CPU codegen and a compile cache shared by launches."""
  env = dict(os.environ)
  env.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices} '
                       '--xla_backend_optimization_level=0',
             JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=os.pathsep.join([str(conftest.REPO_ROOT), env.get('PYTHONPATH', '')]))
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return env


def _launch(num_processes: int, devices_per_process: int, args: list, log_dir,
            cache_dir=None) -> None:
  """Runs the driver as N processes of one jax.distributed run; raises with their logs on failure."""
  port = _free_port()
  procs, logs = [], []
  for i in range(num_processes):
    cmd = [sys.executable, DRIVER] + args
    if num_processes > 1:
      cmd += [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={num_processes}',
              f'--process_id={i}', '--cpu_collectives=gloo']
    log = open(os.path.join(log_dir, f'log_{len(os.listdir(log_dir))}_p{i}.txt'), 'w+')
    logs.append(log)
    procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  env=_child_env(devices_per_process, cache_dir), cwd=conftest.REPO_ROOT))
  try:
    codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
  except subprocess.TimeoutExpired:
    codes = ['timeout'] * len(procs)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  if any(c != 0 for c in codes):
    tails = []
    for i, log in enumerate(logs):
      log.seek(0)
      tails.append(f'--- process {i} (exit {codes[i]}) ---\n' + log.read()[-3000:])
    pytest.fail('multi-process run failed:\n' + '\n'.join(tails))
  for log in logs:
    log.close()


def _write_tiny_shards(directory) -> None:
  """CLIPS clips over NUM_SHARDS shards; clip i has label i % NUM_SHARDS, i.e. its shard index."""
  from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  frames, fps, rate = 34, 25, 48000

  def clips():
    for i in range(CLIPS):
      yield dmvr_format.encode_clip(dmvr_format.Clip(
          frames_TxHxWx3=rng.integers(0, 255, (frames, 36, 36, 3), dtype=np.uint8),
          waveform=rng.uniform(-0.5, 0.5, int(frames / fps * rate)).astype(np.float32),
          label_index=i % NUM_SHARDS, label_text=f'c{i % NUM_SHARDS}', video_id=f'v{i}',
          fps=fps, audio_rate=rate), jpeg_quality=80)
  dmvr_format.write_shards(clips(), str(directory), 'train', NUM_SHARDS)


def _read(dump_dir, pattern: str) -> list:
  return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(dump_dir, pattern)))]


def test_two_processes_train_resume_and_agree(tmp_path):
  shards, workdir, dumps, logs = (tmp_path / n for n in ('shards', 'work', 'dumps', 'logs'))
  for d in (dumps, logs):
    d.mkdir()
  _write_tiny_shards(shards)
  common = ['--mode=train', f'--dump_dir={dumps}', f'--workdir={workdir}',
            '--config=' + conftest.config_path('brave_rgb_audio', 'tiny'),
            f'--config.data.train_shards={shards}', '--config.training.batch_size=4',
            '--config.training.checkpoint_every=2', '--config.training.log_every=1',
            '--config.training.plot_every=0',
            '--config.optimizer.warmup_steps=1']
  _launch(2, 1, common + ['--config.training.num_steps=2'], logs, tmp_path / 'jax_cache')
  _launch(2, 1, common + ['--config.training.num_steps=4'], logs, tmp_path / 'jax_cache')

  first, second = _read(dumps, 'train_s0_p*.json'), _read(dumps, 'train_s2_p*.json')
  assert [r['process_index'] for r in first] == [0, 1] == [r['process_index'] for r in second]
  for run, steps in ((first, 2), (second, 4)):
    assert all(r['process_count'] == 2 and r['final_step'] == steps for r in run)
    for key in ('params_digest', 'state_digest', 'opt_state_digest'):
      assert run[0][key] == run[1][key], f'processes disagree on {key} after step {steps}'
    # Disjoint shards: process 0 reads shards 0, 2 (labels 0, 2), process 1 shards 1, 3.
    assert run[0]['first_batch_digest'] != run[1]['first_batch_digest']
    assert set(run[0]['first_labels']) <= {0, 2} and set(run[1]['first_labels']) <= {1, 3}
  assert first[0]['params_digest'] != second[0]['params_digest']  # The resumed run trained on.

  records = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  assert [r['step'] for r in records] == [1, 2, 3, 4]  # One writer: no duplicated steps.
  assert (workdir / 'config.json').exists() and (workdir / 'loss.png').exists()
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  logs_text = [open(p).read() for p in sorted(glob.glob(str(logs / 'log_*')))]
  resumed = [t for t in logs_text if 'Resumed from' in t]
  assert len(resumed) == 2 and all('at step 2' in t for t in resumed)
  assert sum('step 4/4' in t for t in logs_text) == 1  # Only process 0 prints progress.


def test_killed_process_stops_the_other_within_the_heartbeat_bound(tmp_path):
  """kill -9 of process 1 mid-training: process 0 exits non-zero with one clear line, at once
  (its next collective fails) and in any case within --heartbeat_timeout_s."""
  heartbeat_s = 10
  shards, workdir = tmp_path / 'shards', tmp_path / 'work'
  _write_tiny_shards(shards)
  port = _free_port()
  procs, logs = [], []
  for i in range(2):
    logs.append(tmp_path / f'p{i}.log')
    cmd = [sys.executable, '-m', 'brave_jax.main',
           '--config=' + conftest.config_path('brave_rgb_audio', 'tiny'), f'--workdir={workdir}',
           f'--config.data.train_shards={shards}', '--config.training.batch_size=4',
           '--config.training.log_every=1', '--config.training.num_steps=400',
           f'--coordinator_address=127.0.0.1:{port}',
           '--num_processes=2', f'--process_id={i}', '--cpu_collectives=gloo',
           f'--heartbeat_timeout_s={heartbeat_s}']
    procs.append(subprocess.Popen(cmd, stdout=open(logs[i], 'w'), stderr=subprocess.STDOUT,
                                  env=_child_env(1, tmp_path / 'jax_cache'),
                                  cwd=conftest.REPO_ROOT))
  try:
    deadline = time.time() + TIMEOUT_S
    while 'step 3/400' not in logs[0].read_text():
      assert time.time() < deadline and procs[0].poll() is None, logs[0].read_text()[-3000:]
      time.sleep(0.2)
    os.kill(procs[1].pid, signal.SIGKILL)
    killed_at = time.time()
    code = procs[0].wait(timeout=heartbeat_s + 60)
    took_s = time.time() - killed_at
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  text = logs[0].read_text()
  errors_printed = [l for l in text.splitlines() if l.startswith('error: ')]
  assert code == 1 and took_s < heartbeat_s, (code, took_s, text[-3000:])
  assert len(errors_printed) == 1 and errors_printed[0].startswith(
      'error: process 0 of 2 lost contact with another process of this run after step '), text[-3000:]
  assert 'Rerun the same command on every process to ' in errors_printed[0]
  assert 'Traceback' not in text


def test_same_step_on_any_process_and_device_layout(tmp_path):
  """Global batch 8 on 1x4, 2x2 and 1x1 (processes x devices): same loss, params and BN state."""
  logs = tmp_path / 'logs'
  logs.mkdir()
  args = ['--mode=step', f'--dump_dir={tmp_path}',
          '--config=' + conftest.config_path('brave_rgb_audio', 'tiny'),
          '--config.training.batch_size=8', '--config.optimizer.warmup_steps=1']
  for processes, devices in ((1, 4), (2, 2), (1, 1)):
    _launch(processes, devices, args, logs)

  reference = json.load(open(tmp_path / 'step_1x1_p0.json'))
  ref_leaves = np.load(tmp_path / 'step_1x1_p0.npz')
  for name in ('step_1x4_p0', 'step_2x2_p0', 'step_2x2_p1'):
    metrics = json.load(open(tmp_path / f'{name}.json'))
    for key in ('loss', 'grad_norm'):
      np.testing.assert_allclose(metrics[key], reference[key], rtol=1e-5, err_msg=f'{name} {key}')
    leaves = np.load(tmp_path / f'{name}.npz')
    assert sorted(leaves.files) == sorted(ref_leaves.files)
    for k in ref_leaves.files:
      np.testing.assert_allclose(leaves[k], ref_leaves[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f'{name} {k}')


def test_flags_all_or_none_and_tpu_detection():
  assert distributed.resolve(None, None, None, env={}).mode == 'single'
  assert distributed.resolve(None, None, None,
                             env={'TPU_WORKER_HOSTNAMES': 'a,b,c,d'}).mode == 'tpu_auto'
  assert distributed.resolve(None, None, None, env={'TPU_WORKER_HOSTNAMES': 'a'}).mode == 'single'
  assert distributed.resolve(None, None, None, env={'BRAVE_JAX_DISTRIBUTED': 'auto'}).mode == 'tpu_auto'
  assert distributed.resolve(None, None, None, env={'BRAVE_JAX_DISTRIBUTED': 'off',
                                                    'MEGASCALE_NUM_SLICES': '2'}).mode == 'single'
  c = distributed.resolve('10.0.0.1:1234', 2, 1, env={})
  assert (c.mode, c.coordinator_address, c.num_processes, c.process_id) == (
      'explicit', '10.0.0.1:1234', 2, 1)
  with pytest.raises(distributed.DistributedError, match='missing --process_id'):
    distributed.resolve('10.0.0.1:1234', 2, None, env={})
  with pytest.raises(distributed.DistributedError, match='HOST:PORT'):
    distributed.resolve('10.0.0.1', 2, 0, env={})
  with pytest.raises(distributed.DistributedError, match=r'\[0, --num_processes=2\)'):
    distributed.resolve('h:1', 2, 2, env={})
