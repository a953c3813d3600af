"""Resume replays the data an uninterrupted run reads: in the pipeline and after a real kill -9."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

import conftest
from brave_jax.data import dmvr_format
from brave_jax.data import pipeline

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'resume_driver.py')
TIMEOUT_S = 240


def _write_shards(path, n=6, shards=3):
  rng = np.random.default_rng(0)
  examples = []
  for i in range(n):
    frames = rng.integers(0, 255, size=(24, 24, 32, 3), dtype=np.uint8)
    wave = (0.3 * np.sin(np.arange(int(24 / 25 * 48000)) * 0.01 * (i + 1))).astype(np.float32)
    examples.append(dmvr_format.encode_clip(dmvr_format.Clip(
        frames_TxHxWx3=frames, waveform=wave, label_index=i % 3, video_id=f'v{i}')))
  dmvr_format.write_shards(examples, str(path), 'train', shards)
  return path


def test_batch_of_a_step_does_not_depend_on_where_the_run_started(tmp_path, tiny_va_config):
  """Batch s from an iterator started at 0 == the first batch of one started at s (epochs cross)."""
  cfg = tiny_va_config
  cfg.training.batch_size = 4
  cfg.data.num_parallel_calls = 2
  shards = str(_write_shards(tmp_path))  # 6 records: a step of 4 crosses an epoch boundary.
  straight = pipeline.make_train_dataset(cfg, shards, num_local_devices=1, seed=1)
  batches = [next(straight) for _ in range(4)]
  for s in (1, 3):
    resumed = next(pipeline.make_train_dataset(cfg, shards, num_local_devices=1, seed=1,
                                               start_step=s))
    np.testing.assert_array_equal(batches[s]['narrow']['video'], resumed['narrow']['video'])
    np.testing.assert_array_equal(batches[s]['broad']['audio'], resumed['broad']['audio'])
    np.testing.assert_array_equal(batches[s]['label'], resumed['label'])
  # Every epoch is a permutation: over 6 slots (one epoch), each clip's label appears twice.
  labels = np.concatenate([b['label'].ravel() for b in batches])[:6]
  assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]


def _env():
  env = dict(os.environ)
  env.update(XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu',
             CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=os.pathsep.join([str(conftest.REPO_ROOT), env.get('PYTHONPATH', '')]))
  return env


def _start(workdir, log, extra=()):
  cmd = [sys.executable, DRIVER, '--config=' + conftest.config_path('brave_rgb_audio', 'tiny'),
         f'--workdir={workdir}', '--config.training.num_steps=10',
         '--config.training.checkpoint_every=3', '--config.training.log_every=1',
         '--config.training.keep_checkpoints=5', '--config.optimizer.warmup_steps=1',
         '--config.optimizer.base_learning_rate=2.0', *extra]
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(),
                          cwd=conftest.REPO_ROOT)


def _batches(workdir):
  with open(os.path.join(workdir, 'batches.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_kill_9_then_resume_ends_with_equal_params(tmp_path):
  """A real run killed with SIGKILL mid-way, then rerun, matches an uninterrupted run exactly."""
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  logs = [open(tmp_path / f'log_{n}.txt', 'w+') for n in ('straight', 'killed', 'resumed')]
  a = _start(straight, logs[0])
  b = _start(killed, logs[1], ['--step_delay=0.5'])  # Slow feeding: a wide window for the kill.
  try:
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and b.poll() is None:
      ckpts = killed / 'checkpoints'
      fed = _batches(killed) if (killed / 'batches.jsonl').exists() else []
      if (ckpts / '3').is_dir() and fed and fed[-1]['step'] >= 5:
        break  # Checkpoint 3 committed, step 5 fed: mid-way between checkpoints 3 and 6.
      time.sleep(0.05)
    assert b.poll() is None, 'the run to kill ended (or failed) first:\n' + _log(logs[1])
    b.send_signal(signal.SIGKILL)
    b.wait(timeout=30)
    assert a.wait(timeout=TIMEOUT_S) == 0, _log(logs[0])
  finally:
    for p in (a, b):
      if p.poll() is None:
        p.kill()
  assert not (killed / 'final.json').exists()
  c = _start(killed, logs[2])
  assert c.wait(timeout=TIMEOUT_S) == 0, _log(logs[2])
  assert 'Resumed' in _log(logs[2])

  reference = {r['step']: r['batch'] for r in _batches(straight)}
  fed = _batches(killed)
  resumed_from = [r['step'] for r in fed]
  resume_step = resumed_from[[i for i in range(1, len(fed)) if fed[i]['step'] <= fed[i - 1]['step']][0]]
  assert resume_step in (3, 6)  # The last committed checkpoint when the kill landed.
  for r in fed:  # Before and after the kill, every step was fed the uninterrupted run's batch.
    assert r['batch'] == reference[r['step']], r['step']
  assert json.loads((killed / 'final.json').read_text()) == json.loads(
      (straight / 'final.json').read_text())


def _log(f):
  f.flush()
  f.seek(0)
  return f.read()[-4000:]
