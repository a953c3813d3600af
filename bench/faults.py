"""Fault injection on `:tiny` runs: kills, full disks, corrupt inputs, invalid configs; a tally.

Every case runs the real CLI (`python -m brave_jax.main`) in a subprocess, with a
time limit, and then checks that nothing already written was lost: config.json
and every metrics.jsonl line parse, loss.png is a whole PNG, the latest
checkpoint restores, no temporary files are left.

(a) kills: `kill -9` at a random moment of training, or while a checkpoint is
    being written (its temporary directory exists), then the same command again;
    survived = the rerun finishes; params equal = its final parameters are
    bit-identical to an uninterrupted run's.
(b) full disk (needs `mount -t tmpfs`, i.e. root; skipped otherwise): the
    workdir on a small tmpfs that is filled to the last byte mid-training (with
    and without training.plot_every), during a checkpoint save, or outgrown by
    the checkpoints; recovered = the run stops with one `No space left on
    device` line naming the path and the last good checkpoint, nothing is lost,
    and after space is freed the same command finishes.
(c) corrupt inputs: truncated TFRecord, random bytes, JSON files in the shard
    folder, garbage JPEGs in a record, overwritten middle bytes, an empty file,
    all-bad shards, shards without audio; handled = no hang (time limit), and
    either a clear final `error:` line naming the file/shards or a finished run
    that counted the skipped records, with nothing lost.
(d) invalid configs: one override per rule of config_base.validate (plus flag
    errors); refused = exit status 2, exactly one `error:` line naming the field,
    no traceback.

  python bench/faults.py --quick          # a few of each (~15 min on 2 busy cores)
  python bench/faults.py --kills=20       # the full tally (~1-2 h)

Writes <out>/faults.json (every case) and <out>/faults_tally.txt (the table).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TINY = 'configs/brave_rgb_audio.py:tiny'
LOG_EVERY_STEP = '--config.training.log_every=1'  # Kill moments keyed to steps; same params.
TINY_STEPS = 60


@dataclasses.dataclass
class Run:
  code: int | None  # None: killed by us (kill or time limit).
  seconds: float
  log: str
  timed_out: bool = False
  killed: bool = False

  @property
  def error_lines(self) -> list[str]:
    return [l for l in self.log.splitlines() if l.startswith('error: ')]


def _env(workroot: str, devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env.update(PYTHONPATH=os.pathsep.join([REPO, env.get('PYTHONPATH', '')]),
             JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_COMPILATION_CACHE_DIR=os.path.join(workroot, 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return env


def run_main(args: list[str], log_path: str, env: dict[str, str], timeout_s: float,
             kill_when: Callable[[], bool] | None = None) -> Run:
  """`python -m brave_jax.main ARGS`; SIGKILL when kill_when() turns true or at the time limit."""
  start = time.time()
  with open(log_path, 'w') as log:
    proc = subprocess.Popen([sys.executable, '-m', 'brave_jax.main', *args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    killed = timed_out = False
    while proc.poll() is None:
      if kill_when is not None and not killed and kill_when():
        proc.send_signal(signal.SIGKILL)
        killed = True
      if time.time() - start > timeout_s:
        proc.send_signal(signal.SIGKILL)
        timed_out = True
      time.sleep(0.005 if kill_when is not None else 0.05)
    code = proc.wait()
  text = open(log_path, errors='replace').read()
  return Run(None if (killed or timed_out) else code, time.time() - start, text, timed_out, killed)


# --- what a workdir must still hold ---------------------------------------------------------------

def _ckpt_steps(workdir: str) -> list[int]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return sorted(ocp.path.step.checkpoint_steps(os.path.join(workdir, 'checkpoints')))


def _restore(workdir: str, step: int) -> dict[str, Any]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'train_state'))


def params_digest(workdir: str) -> str | None:
  """sha256 over the latest checkpoint's parameters (paths, dtypes, bytes)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  steps = _ckpt_steps(workdir)
  if not steps:
    return None
  tree = _restore(workdir, steps[-1])['params']
  h = hashlib.sha256()
  for path, x in sorted(jax.tree_util.tree_flatten_with_path(tree)[0],
                        key=lambda kv: jax.tree_util.keystr(kv[0])):
    x = np.ascontiguousarray(np.asarray(x))
    h.update(f'{jax.tree_util.keystr(path)}|{x.dtype}|{x.shape}'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


def intact_problems(workdir: str) -> list[str]:
  """What is torn or unreadable in a workdir (empty list: nothing lost)."""
  problems = []
  if not os.path.isdir(workdir):
    return problems
  config = os.path.join(workdir, 'config.json')
  if os.path.exists(config):
    try:
      json.load(open(config))
    except ValueError as e:
      problems.append(f'config.json: {e}')
  elif os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
    problems.append('config.json missing beside metrics.jsonl')
  metrics = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(metrics):
    data = open(metrics, 'rb').read()
    if data and not data.endswith(b'\n'):
      problems.append('metrics.jsonl: torn last line')
    for i, line in enumerate(data.decode(errors='replace').splitlines(), 1):
      try:
        json.loads(line)
      except ValueError:
        problems.append(f'metrics.jsonl line {i} does not parse')
  png = os.path.join(workdir, 'loss.png')
  if os.path.exists(png):
    try:
      from PIL import Image  # pylint: disable=g-import-not-at-top
      Image.open(png).load()
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f'loss.png: {e}')
  leftovers = [p for p in os.listdir(workdir) if '.tmp-' in p]
  if leftovers:
    problems.append(f'temporary files left: {leftovers}')
  steps = _ckpt_steps(workdir)
  if steps:
    try:
      _restore(workdir, steps[-1])
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f'checkpoint {steps[-1]} does not restore: {str(e)[:200]}')
  return problems


def _last_step(workdir: str) -> int | None:
  steps = _ckpt_steps(workdir)
  return steps[-1] if steps else None


# --- (a) kill -9 ----------------------------------------------------------------------------------

def kill_trials(n: int, root: str, env: dict[str, str], rng: random.Random, timeout_s: float,
                reference: str | None) -> list[dict[str, Any]]:
  results = []
  for i in range(n):
    mode = 'checkpointing' if i % 2 else 'training'
    workdir = os.path.join(root, f'kill_{i}')
    shutil.rmtree(workdir, ignore_errors=True)
    args = [f'--config={TINY}', f'--workdir={workdir}', LOG_EVERY_STEP]
    if mode == 'training':
      step, delay = rng.randint(1, TINY_STEPS - 1), rng.uniform(0.0, 0.3)
      logged = _metrics_reached(step)
      armed = {}

      def kill_when(logged=logged, delay=delay, armed=armed):
        if 'at' not in armed:
          if logged(workdir):
            armed['at'] = time.time()
          return False
        return time.time() - armed['at'] >= delay
      what = f'{delay:.2f} s after step {step} was logged'
    else:
      save = rng.choice((20, 40, 60))

      def kill_when(save=save):
        return bool(glob.glob(os.path.join(workdir, 'checkpoints', f'{save}.orbax-checkpoint-tmp*')))
      what = f'while checkpoint {save} is being written'
    killed = run_main(args, os.path.join(root, f'kill_{i}_a.log'), env, timeout_s, kill_when)
    at_kill = _last_step(workdir)
    lost = intact_problems(workdir)
    resumed = run_main(args, os.path.join(root, f'kill_{i}_b.log'), env, timeout_s)
    lost += intact_problems(workdir)
    final = _last_step(workdir)
    digest = params_digest(workdir) if final == TINY_STEPS else None
    record = {'case': i, 'mode': mode, 'when': what, 'killed': killed.killed,
              'checkpoint_at_kill': at_kill, 'resume_exit': resumed.code, 'final_step': final,
              'survived': killed.killed and resumed.code == 0 and final == TINY_STEPS and not lost,
              'params_equal': digest is not None and digest == reference, 'lost': lost,
              'seconds': round(killed.seconds + resumed.seconds, 1)}
    results.append(record)
    print(f'[kill {i + 1}/{n}] {mode}, {what}: killed={killed.killed} (latest checkpoint '
          f'{at_kill}), rerun exit {resumed.code}, final step {final}, params '
          f'{"EQUAL" if record["params_equal"] else "differ"}, lost: {lost or "nothing"}',
          flush=True)
  return results


# --- (b) full disk --------------------------------------------------------------------------------

def _mount_tmpfs(path: str, size: str) -> bool:
  os.makedirs(path, exist_ok=True)
  return subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', path],
                        capture_output=True, check=False).returncode == 0


def _umount(path: str) -> None:
  subprocess.run(['umount', '-l', path], capture_output=True, check=False)


def _fill(path: str) -> None:
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
  try:
    for chunk in (1 << 20, 4096, 1):
      try:
        while True:
          os.write(fd, b'\0' * chunk)
      except OSError:
        pass
  finally:
    os.close(fd)


def _tree_bytes(path: str) -> int:
  """Bytes of every file under path (0 when it does not exist)."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


def disk_full_cases(cases: list[tuple[str, dict]], root: str, env: dict[str, str],
                    timeout_s: float, reference: str | None) -> list[dict[str, Any]]:
  results = []
  probe = os.path.join(root, 'tmpfs_probe')
  if not _mount_tmpfs(probe, '1M'):
    print('[disk full] skipped: cannot mount a tmpfs here (needs root)', flush=True)
    return [{'case': name, 'skipped': 'cannot mount tmpfs'} for name, _ in cases]
  _umount(probe)
  for i, (name, spec) in enumerate(cases):
    mount = os.path.join(root, f'disk_{i}')
    if not _mount_tmpfs(mount, spec['size']):
      results.append({'case': name, 'skipped': 'mount failed'})
      continue
    try:
      workdir, filler = os.path.join(mount, 'work'), os.path.join(mount, 'filler')
      args = [f'--config={TINY}', f'--workdir={workdir}', LOG_EVERY_STEP, *spec.get('flags', ())]
      trigger = spec.get('fill_when')

      def kill_when(trigger=trigger):  # Never kills: fills the disk when the moment comes.
        if trigger is not None and not os.path.exists(filler) and trigger(workdir):
          _fill(filler)
        return False
      first = run_main(args, os.path.join(root, f'disk_{i}_a.log'), env, timeout_s, kill_when)
      lost = intact_problems(workdir)
      last_good = _last_step(workdir)
      errors = first.error_lines
      clear = (first.code == 1 and len(errors) == 1 and 'No space left on device writing' in
               errors[0] and ('resumes from it' in errors[0] or 'starts from step 0' in errors[0])
               and (last_good is None or f'checkpoint is step {last_good} ' in errors[0]))
      if os.path.exists(filler):
        os.remove(filler)
      subprocess.run(['mount', '-o', 'remount,size=400M', mount], capture_output=True, check=False)
      second = run_main(args, os.path.join(root, f'disk_{i}_b.log'), env, timeout_s)
      lost += intact_problems(workdir)
      final = _last_step(workdir)
      digest = params_digest(workdir) if final == TINY_STEPS else None
    finally:
      _umount(mount)
    record = {'case': name, 'first_exit': first.code, 'timed_out': first.timed_out,
              'error': errors[-1] if errors else first.log.strip().splitlines()[-1:],
              'clear_error': clear, 'last_good_checkpoint': last_good, 'rerun_exit': second.code,
              'final_step': final, 'lost': lost,
              'recovered': clear and second.code == 0 and final == TINY_STEPS and not lost,
              'params_equal': digest is not None and digest == reference}
    results.append(record)
    print(f'[disk full {i + 1}/{len(cases)}] {name}: exit {first.code}, clear error: {clear} '
          f'({(errors or ["-"])[-1][:160]}), rerun exit {second.code}, final step {final}, '
          f'lost: {lost or "nothing"}', flush=True)
  return results


def _metrics_reached(step: int) -> Callable[[str], bool]:
  def reached(workdir: str) -> bool:
    path = os.path.join(workdir, 'metrics.jsonl')
    return os.path.exists(path) and f'"step": {step},' in open(path, errors='replace').read()
  return reached


def _saving(step: int) -> Callable[[str], bool]:
  return lambda workdir: bool(glob.glob(os.path.join(
      workdir, 'checkpoints', f'{step}.orbax-checkpoint-tmp*')))


# --- (c) corrupt inputs ---------------------------------------------------------------------------

NUM_SHARDS, CLIPS_PER_SHARD = 4, 3
# A run with no exit after this long counts as hung. A :tiny start (imports, tf.data, compile)
# took 60-110 s on the 2 busy cores this was written on; a healthy 8-step run ends well before.
CORRUPT_TIMEOUT_S = 300.0
QUICK_CORRUPTIONS = ('truncated TFRecord', 'JSON files in the shard folder', 'empty file',
                     'all-bad shards')


def _clips(rng, garbage_jpegs: bool = False, audio: bool = True, n: int = CLIPS_PER_SHARD):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top
  frames, fps, rate = 40, 25, 48000
  for k in range(n):
    pixels = rng.integers(0, 255, (frames, 36, 36, 3), dtype=np.uint8)
    clip = dmvr_format.Clip(
        frames_TxHxWx3=None if garbage_jpegs else pixels,
        encoded_frames=[rng.bytes(300) for _ in range(frames)] if garbage_jpegs else None,
        waveform=rng.uniform(-0.5, 0.5, int(frames / fps * rate)).astype(np.float32) if audio
        else None,
        label_index=k % 2, label_text=f'c{k % 2}', video_id=f'v{k}', fps=fps,
        audio_rate=rate if audio else None)
    yield dmvr_format.encode_clip(clip, jpeg_quality=80)


def _write_records(path: str, records) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(path) as writer:
    for r in records:
      writer.write(r)


def make_corrupt_sets(root: str) -> dict[str, tuple[str, str]]:
  """{kind: (shard folder, file the damage is in)} over NUM_SHARDS good-looking shards each."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  sets = {}

  def fresh(kind, garbage_shards=(), audio=True):
    folder = os.path.join(root, 'shards', kind)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for s in range(NUM_SHARDS):
      _write_records(os.path.join(folder, dmvr_format.shard_name('train', s, NUM_SHARDS)),
                     _clips(rng, garbage_jpegs=s in garbage_shards, audio=audio))
    return folder, os.path.join(folder, dmvr_format.shard_name('train', 0, NUM_SHARDS))

  folder, first = fresh('truncated_tfrecord')
  with open(first, 'rb+') as f:
    f.truncate(os.path.getsize(first) * 2 // 3)
  sets['truncated TFRecord'] = (folder, first)
  folder, first = fresh('random_bytes')
  size = os.path.getsize(first)
  open(first, 'wb').write(rng.bytes(size))
  sets['random bytes'] = (folder, first)
  folder, _ = fresh('json_in_folder')
  for name in ('dataset.json', 'train_summary.json'):
    json.dump({'converted': 12, 'skipped': []}, open(os.path.join(folder, name), 'w'))
  sets['JSON files in the shard folder'] = (folder, os.path.join(folder, 'dataset.json'))
  folder, first = fresh('garbage_jpegs')
  records = list(_clips(rng)) + list(_clips(rng, garbage_jpegs=True, n=1))
  _write_records(first, records)
  sets['garbage JPEGs in a record'] = (folder, first)
  folder, first = fresh('overwritten_middle')
  with open(first, 'rb+') as f:
    f.seek(os.path.getsize(first) // 2)
    f.write(rng.bytes(2048))
  sets['overwritten middle bytes'] = (folder, first)
  folder, first = fresh('empty_file')
  open(first, 'wb').close()
  sets['empty file'] = (folder, first)
  folder, first = fresh('all_bad', garbage_shards=range(NUM_SHARDS))
  sets['all-bad shards'] = (folder, folder)
  folder, first = fresh('missing_audio', audio=False)
  sets['missing audio'] = (folder, folder)
  return sets


def corrupt_input_cases(sets: dict[str, tuple[str, str]], root: str, env: dict[str, str],
                        timeout_s: float) -> list[dict[str, Any]]:
  results = []
  for i, (kind, (folder, damaged)) in enumerate(sets.items()):
    workdir = os.path.join(root, f'corrupt_{i}')
    shutil.rmtree(workdir, ignore_errors=True)
    args = [f'--config={TINY}', f'--workdir={workdir}', f'--config.data.train_shards={folder}',
            '--config.training.num_steps=8', '--config.training.batch_size=4',
            '--config.training.checkpoint_every=4', '--config.training.log_every=1']
    run = run_main(args, os.path.join(root, f'corrupt_{i}.log'), env, timeout_s)
    lost = intact_problems(workdir)
    skipped = 0
    metrics = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(metrics):
      for line in open(metrics):
        try:
          skipped = max(skipped, int(json.loads(line).get('skipped_records') or 0))
        except ValueError:
          pass
    tail = run.log.strip().splitlines()[-1] if run.log.strip() else ''
    named = os.path.basename(damaged.rstrip('/'))
    clear_error = (run.code not in (0, None) and len(run.error_lines) == 1 and
                   named in run.error_lines[0] and 'Traceback' not in run.log)
    counted = run.code == 0 and (skipped > 0 or kind == 'JSON files in the shard folder' and
                                 named in run.log)
    handled = not run.timed_out and (clear_error or counted) and not lost
    if run.timed_out:
      outcome = f'hang: no exit in {timeout_s:.0f} s'
    elif run.code == 0:
      outcome = f'finished, skipped_records={skipped}'
    else:
      outcome = f'exit {run.code}: {(run.error_lines or [tail])[-1][:200]}'
    results.append({'kind': kind, 'exit': run.code, 'timed_out': run.timed_out,
                    'seconds': round(run.seconds, 1), 'skipped_records': skipped,
                    'clear_error_naming_file': clear_error, 'outcome': outcome, 'lost': lost,
                    'handled': handled, 'log_bytes': len(run.log)})
    print(f'[corrupt {i + 1}/{len(sets)}] {kind}: {"HANDLED" if handled else "not handled"} '
          f'({outcome}; {len(run.log)} log bytes)', flush=True)
  return results


# --- (d) invalid configs --------------------------------------------------------------------------

# (override flags, text the one error line must contain), one per rule of config_base.validate,
# then the command-line errors around it.
INVALID_CONFIGS = (
    (('--config.data.broad_modalities=()',), 'config.data.broad_modalities'),
    (("--config.data.broad_modalities=('smell',)",), 'config.data.broad_modalities'),
    (("--config.data.broad_modalities=('audio','audio')",), 'config.data.broad_modalities'),
    (('--config.data.broad_start=middle',), 'config.data.broad_start'),
    (('--config.optimizer.variant=fixed',), 'config.optimizer.variant'),
    (('--config.data.narrow.num_frames=0',), 'config.data.narrow.num_frames'),
    (('--config.data.narrow.frame_step=0',), 'config.data.narrow.frame_step'),
    (('--config.data.narrow.image_size=0',), 'config.data.narrow.image_size'),
    (('--config.data.broad.num_frames=0',), 'config.data.broad.num_frames'),
    (('--config.data.broad.frame_step=-1',), 'config.data.broad.frame_step'),
    (('--config.data.broad.image_size=0',), 'config.data.broad.image_size'),
    (('--config.data.video_fps=0',), 'config.data.video_fps'),
    (('--config.data.audio_sample_rate=0',), 'config.data.audio_sample_rate'),
    (('--config.data.narrow.image_size=16',), 'config.data.narrow.image_size'),
    (('--config.data.broad.image_size=16',), 'config.data.broad.image_size'),
    (('--config.data.audio.num_mel_bins=0',), 'config.data.audio.num_mel_bins'),
    (('--config.data.audio.frame_length=0',), 'config.data.audio.frame_length'),
    (('--config.data.audio.fft_length=100',), 'config.data.audio.fft_length'),
    (('--config.data.audio.frame_step=0',), 'config.data.audio.frame_step'),
    (('--config.data.audio.upper_edge_hz=30000',), 'config.data.audio.upper_edge_hz'),
    (('--config.data.audio.frame_step=4000',), 'config.data.broad'),
    (('--config.model.narrow_backbone.depth=17',), 'config.model.narrow_backbone.depth'),
    (('--config.model.broad_video_backbone.depth=17',), 'config.model.broad_video_backbone.depth'),
    (('--config.model.audio_backbone.depth=17',), 'config.model.audio_backbone.depth'),
    (('--config.model.narrow_backbone.width_multiplier=1.5',),
     'config.model.narrow_backbone.width_multiplier'),
    (('--config.model.broad_video_backbone.width_multiplier=5',),
     'config.model.broad_video_backbone.width_multiplier'),
    (('--config.model.audio_backbone.width_multiplier=0',),
     'config.model.audio_backbone.width_multiplier'),
    (('--config.model.audio_backbone.basic_block=three_3x3',),
     'config.model.audio_backbone.basic_block'),
    (('--config.model.projection_dim=0',), 'config.model.projection_dim'),
    (('--config.model.hidden_dim=-4',), 'config.model.hidden_dim'),
    (('--config.model.compute_dtype=float16',), 'config.model.compute_dtype'),
    (('--config.optimizer.name=sgd',), 'config.optimizer.name'),
    (('--config.data.augment.rc_kernel_sizes=(2,)',), 'config.data.augment.rc_kernel_sizes'),
    (('--config.data.tf_intra_op_threads=-1',), 'config.data.tf_intra_op_threads'),
    (('--config.data.max_bad_record_fraction=1.5',), 'config.data.max_bad_record_fraction'),
    (('--config.data.max_consecutive_bad_records=-1',), 'config.data.max_consecutive_bad_records'),
    (('--config.training.batch_size=0',), 'config.training.batch_size'),
    (('--config.training.num_steps=0',), 'config.training.num_steps'),
    (('--config.training.log_every=0',), 'config.training.log_every'),
    (('--config.training.checkpoint_every=0',), 'config.training.checkpoint_every'),
    (('--config.training.keep_checkpoints=0',), 'config.training.keep_checkpoints'),
    (('--config.optimizer.warmup_steps=-1',), 'config.optimizer.warmup_steps'),
    (('--config.optimizer.warmup_steps=1000',), 'config.optimizer.warmup_steps'),
    (('--config.training.batch_size=3', '@2devices'), 'config.training.batch_size'),
    (('--config.eval.svm_c=-1',), 'config.eval.svm_c'),
    (('--config.eval.feature_transform=whiten',), 'config.eval.feature_transform'),
    (('--config.data.synthetic.generator=other',), 'config.data.synthetic.generator'),
    (('--config.data.synthetic.generator=independent',), 'config.data.video_fps'),
    (('--config.eval.svm_c=big',), 'config.eval.svm_c'),
    # Command-line errors around the config.
    (('--config.training.num_stepz=3',), "no field 'training.num_stepz'"),
    (('--config.training.num_steps=abc',), '--config.training.num_steps=abc'),
    (('@config=configs/nope.py',), "config file 'configs/nope.py' not found"),
    (('@config=configs/brave_rgb_audio.py:huge',), "unknown config variant 'huge'"),
    (('@workdir=/etc/hostname',), 'is a file, not a directory'),
    # Evaluation sections (checked when training starts too, so a bad value never waits for
    # the end of pretraining to surface).
    (('--config.finetune.optimizer=lamb',), 'config.finetune.optimizer'),
    (('--config.finetune.warmup_steps=-1',), 'config.finetune.warmup_steps'),
    (('--config.finetune.dropout_rate=1.0',), 'config.finetune.dropout_rate'),
    (('--config.finetune.base_learning_rate=0.0',), 'config.finetune.base_learning_rate'),
    (('--config.audio_eval.batch_size=0',), 'config.audio_eval.batch_size'),
    (('--config.audio_eval.num_windows=0',), 'config.audio_eval.num_windows'),
    (('--config.audio_eval.head=transformer',), 'config.audio_eval.head'),
    (('--config.audio_eval.synthetic.num_folds=1',), 'config.audio_eval.synthetic.num_folds'),
    (('--config.audio_eval.synthetic.clips_per_fold=0',),
     'config.audio_eval.synthetic.clips_per_fold'),
    (('--config.audio_eval.synthetic.snr_db=(10.0,0.0)',), 'config.audio_eval.synthetic.snr_db'),
    (('--config.knn_monitor.every_steps=-5',), 'config.knn_monitor.every_steps'),
    (('--config.knn_monitor.k=0',), 'config.knn_monitor.k'),
    (('--config.knn_monitor.max_videos=0',), 'config.knn_monitor.max_videos'),
    (('--config.knn_monitor.temperature=0.0',), 'config.knn_monitor.temperature'),
)


def validate_fields_covered() -> tuple[list[str], list[str]]:
  """(fields config_base.validate names literally, those no row of the table names).

  Fields validate builds in loops (data.{view}.{f}, model.{name}.depth, ...)
  have explicit rows above, one per value of the loop.
  """
  source = open(os.path.join(REPO, 'brave_jax', 'config_base.py')).read()
  body = source[source.index('def validate('):source.index('def peak_learning_rate')]
  fields = set(re.findall(r"(?:_require\(.*?|_positive_int\(config,\s*)'([a-z_]+(?:\.[a-z_]+)+)'",
                          body, flags=re.S))
  table = {expected.replace('config.', '') for _, expected in INVALID_CONFIGS}
  literal = sorted(fields)
  return literal, [f for f in literal if f not in table]


def invalid_config_cases(root: str, env: dict[str, str], quick: bool) -> list[dict[str, Any]]:
  n = len(INVALID_CONFIGS)
  picked = sorted(set(range(0, n, 4)) | set(range(n - 5, n))) if quick else range(n)
  cases = [INVALID_CONFIGS[i] for i in picked]
  results = []
  pending = []
  for i, (flags, expected) in enumerate(cases):
    config, workdir, extra, devices = TINY, os.path.join(root, f'config_{i}'), [], 1
    for flag in flags:
      if flag == '@2devices':
        devices = 2
      elif flag.startswith('@config='):
        config = flag[len('@config='):]
      elif flag.startswith('@workdir='):
        workdir = flag[len('@workdir='):]
      else:
        extra.append(flag)
    cmd = [sys.executable, '-m', 'brave_jax.main', f'--config={config}', f'--workdir={workdir}',
           *extra]
    pending.append((flags, expected, subprocess.Popen(
        cmd, cwd=REPO, env=_env(root, devices), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)))
    if len(pending) >= 2 or i == len(cases) - 1:
      for flags_, expected_, proc in pending:
        try:
          out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
          proc.kill()
          out, _ = proc.communicate()
        lines = [l for l in out.splitlines() if l.startswith('error: ')]
        refused = (proc.returncode == 2 and len(lines) == 1 and expected_ in lines[0] and
                   'Traceback' not in out)
        results.append({'flags': list(flags_), 'exit': proc.returncode, 'expected': expected_,
                        'error': lines[0] if lines else out.strip().splitlines()[-1:],
                        'refused_one_line': refused})
        print(f'[config {len(results)}/{len(cases)}] {" ".join(flags_)}: '
              f'{"REFUSED" if refused else "NOT refused cleanly"} (exit {proc.returncode}: '
              f'{(lines or ["-"])[0][:150]})', flush=True)
      pending = []
  return results


# --- the run --------------------------------------------------------------------------------------

def tally_table(result: dict[str, Any]) -> str:
  k, d, c, v = (result[x] for x in ('kills', 'disk_full', 'corrupt_inputs', 'invalid_configs'))
  tried_d = [r for r in d if 'skipped' not in r]
  k = [r for r in k if r['killed']]  # A run that ended before its kill moment was not a trial.
  rows = [
      ('kill -9 (training + checkpointing), survived', sum(r['survived'] for r in k), len(k)),
      ('  of which final params equal to an uninterrupted run',
       sum(r['params_equal'] for r in k), len(k)),
      ('full disk, recovered' + ('' if tried_d or not d else ' (skipped: no tmpfs)'),
       sum(r['recovered'] for r in tried_d), len(tried_d)),
      ('  of which final params equal', sum(r['params_equal'] for r in tried_d), len(tried_d)),
      ('corrupt inputs, handled', sum(r['handled'] for r in c), len(c)),
      ('invalid configs, refused with one line', sum(r['refused_one_line'] for r in v), len(v)),
      ('cases where something already written was lost',
       sum(bool(r.get('lost')) for r in k + tried_d + c), len(k) + len(tried_d) + len(c)),
  ]
  width = max(len(r[0]) for r in rows)
  lines = [f'bench/faults.py at commit {result.get("commit", "?")[:12]}'
           f'{" (--quick)" if result.get("quick") else ""}', '',
           f'{"case":<{width}}  result', '-' * (width + 12)]
  lines += [f'{name:<{width}}  {ok}/{tried}' for name, ok, tried in rows]
  lines.append('')
  lines += [f'corrupt: {r["kind"]:<32} {"handled" if r["handled"] else "NOT handled"}: '
            f'{r["outcome"]}' for r in c]
  return '\n'.join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='A few cases of each kind.')
  p.add_argument('--kills', type=int, default=None, help='kill -9 trials (default 20, quick 3).')
  p.add_argument('--workroot', default='/tmp/brave_faults', help='Scratch space (wiped).')
  p.add_argument('--out', default=os.path.join(REPO, 'bench', 'results'))
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--only', default='kills,disk,corrupt,configs',
                 help='Comma list of sections to run.')
  args = p.parse_args()
  only = set(args.only.split(','))
  kills = args.kills if args.kills is not None else (3 if args.quick else 20)
  rng = random.Random(args.seed)
  root = args.workroot
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  env = _env(root)
  timeout_s = 600.0
  start = time.time()
  load = open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else []
  commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True, check=False).stdout.strip()
  result: dict[str, Any] = {'commit': commit, 'quick': args.quick, 'load_at_start': load,
                            'kills': [],
                            'disk_full': [], 'corrupt_inputs': [], 'invalid_configs': []}

  reference, train_s = None, 20.0
  if only & {'kills', 'disk'}:
    print('[reference] uninterrupted :tiny run', flush=True)
    ref_dir = os.path.join(root, 'reference')
    first_metrics = {}

    def note_first_metrics():  # Never kills: times the training part of the run.
      if 'at' not in first_metrics and os.path.exists(os.path.join(ref_dir, 'metrics.jsonl')):
        first_metrics['at'] = time.time()
      return False
    ref_start = time.time()
    ref = run_main([f'--config={TINY}', f'--workdir={ref_dir}', LOG_EVERY_STEP],
                   os.path.join(root, 'ref.log'), env, timeout_s, note_first_metrics)
    reference = params_digest(ref_dir) if ref.code == 0 else None
    steps = [l for l in ref.log.splitlines() if l.startswith('step ')]
    # Kills land uniformly in the time between the first metrics line and the end.
    train_s = max(2.0, 0.9 * (ref_start + ref.seconds - first_metrics.get('at', ref_start)))
    result['reference'] = {'exit': ref.code, 'seconds': round(ref.seconds, 1),
                           'training_seconds': round(train_s / 0.9, 1),
                           'params_digest': reference, 'steps_logged': len(steps)}
    if not args.quick:  # Are uninterrupted runs themselves bit-identical?
      ref2_dir = os.path.join(root, 'reference_2')
      run_main([f'--config={TINY}', f'--workdir={ref2_dir}', LOG_EVERY_STEP],
               os.path.join(root, 'ref2.log'), env, timeout_s)
      result['reference']['second_run_equal'] = params_digest(ref2_dir) == reference
    print(f'[reference] exit {ref.code} in {ref.seconds:.0f} s, params {str(reference)[:12]}',
          flush=True)

  if 'kills' in only:
    result['kills'] = kill_trials(kills, root, env, rng, timeout_s, reference)
  if 'disk' in only:
    fills = [5 * rng.randint(1, TINY_STEPS // 5 - 1) for _ in range(2)]
    # A disk the run's own outputs outgrow: half of what the uninterrupted run left behind (a
    # fixed 30 MB stopped being too small once the tiny checkpoints shrank to ~19 MB in all).
    ref_bytes = _tree_bytes(os.path.join(root, 'reference'))
    outgrow_mb = max(2, ref_bytes // 2 // 2**20) if ref_bytes else 10
    cases = [
        (f'filled at the step-{fills[0]} metrics line', {'size': '80M',
                                                         'fill_when': _metrics_reached(fills[0])}),
        (f'filled at step {fills[1]}, plot_every=5', {
            'size': '80M', 'fill_when': _metrics_reached(fills[1]),
            'flags': ('--config.training.plot_every=5',)}),
        ('filled while checkpoint 40 is written', {'size': '80M', 'fill_when': _saving(40)}),
        (f'checkpoints outgrow a {outgrow_mb} MB disk (half the reference workdir)',
         {'size': f'{outgrow_mb}M'}),
    ]
    if args.quick:
      cases = cases[1:2] + cases[3:]
    else:
      extra = [5 * rng.randint(1, TINY_STEPS // 5 - 1) for _ in range(2)]
      cases += [(f'filled at step {s}, plot_every=5', {
          'size': '80M', 'fill_when': _metrics_reached(s),
          'flags': ('--config.training.plot_every=5',)}) for s in extra]
      cases.append(('filled while checkpoint 20 is written', {'size': '80M',
                                                              'fill_when': _saving(20)}))
    result['disk_full'] = disk_full_cases(cases, root, env, timeout_s, reference)
  if 'corrupt' in only:
    sets = make_corrupt_sets(root)
    if args.quick:
      sets = {k: v for k, v in sets.items() if k in QUICK_CORRUPTIONS}
    # On a loaded machine a healthy start can be slow: never call a run hung before it has had
    # 1.5x the uninterrupted reference's whole wall time.
    hang_s = max(CORRUPT_TIMEOUT_S, 1.5 * result.get('reference', {}).get('seconds', 0.0))
    result['corrupt_hang_limit_s'] = hang_s
    result['corrupt_inputs'] = corrupt_input_cases(sets, root, env, hang_s)
  if 'configs' in only:
    fields, uncovered = validate_fields_covered()
    result['validate_fields'] = {'named_by_validate': fields, 'not_in_table': uncovered}
    result['invalid_configs'] = invalid_config_cases(root, env, args.quick)

  result['seconds'] = round(time.time() - start, 1)
  result['load_at_end'] = open('/proc/loadavg').read().split()[:3] if load else []
  table = tally_table(result)
  os.makedirs(args.out, exist_ok=True)
  suffix = '_quick' if args.quick else ''
  with open(os.path.join(args.out, f'faults{suffix}.json'), 'w') as f:
    json.dump(result, f, indent=2, default=str)
  with open(os.path.join(args.out, f'faults{suffix}_tally.txt'), 'w') as f:
    f.write(table + '\n')
  print('\n' + table)
  print(f'\nwrote {args.out}/faults{suffix}.json and faults{suffix}_tally.txt '
        f'({result["seconds"] / 60:.1f} min, load {load} -> {result["load_at_end"]})')


if __name__ == '__main__':
  main()
