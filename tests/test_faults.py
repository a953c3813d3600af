"""Faults on the training side: full disk, failed background save, another config's workdir.

Each test first produces the fault the way it happens (a really full tmpfs where
the machine lets us mount one, else an injected ENOSPC/EIO at the write sites),
then checks that the run stops with one clear error, that nothing already
written is lost or torn, and that a rerun resumes and ends where an
uninterrupted run ends (the test double's batches are a pure function of step).
"""
import contextlib
import errno
import json
import os
import subprocess
import time
import uuid

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from brave_jax import errors
from brave_jax import files
from brave_jax import saved_config
from brave_jax.train import checkpointing
from brave_jax.train import faults
from brave_jax.train import metrics as metrics_lib
from brave_jax.train import pretrain
from brave_jax.train import step as step_lib
import train_test_double

BATCH = 4


@pytest.fixture
def config(tiny_va_config):
  c = tiny_va_config
  c.training.update(batch_size=BATCH, num_steps=6, checkpoint_every=2, log_every=1,
                    keep_checkpoints=5, plot_every=0)
  c.optimizer.warmup_steps = 1
  c.optimizer.base_learning_rate = 2.0  # The test double diverges at the tiny config's peak LR.
  return c


def _iter_fn(on_step=None, delay_after=None):
  """The test double's iterator; on_step(step) runs as each batch is made (2 steps ahead)."""
  make = train_test_double.make_batch_iterator_fn(BATCH, jax.local_device_count())

  def wrapped(start_step):
    for i, batch in enumerate(make(start_step)):
      if on_step is not None:
        on_step(start_step + i)
      if delay_after is not None and start_step + i > delay_after:
        time.sleep(0.2)  # Real steps take time; the test double's take microseconds.
      yield batch
  return wrapped


def _train(config, workdir, **kwargs):
  return step_lib.unreplicate(pretrain.train(config, str(workdir), _iter_fn(**kwargs),
                                             train_test_double.build_test_double_model('i')))


@pytest.fixture(scope='module')
def straight_params(tmp_path_factory):
  """Final params of an uninterrupted 6-step run (the config fixture's settings)."""
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  import conftest  # pylint: disable=g-import-not-at-top
  c = config_base.load(conftest.config_path('brave_rgb_audio', 'tiny'))
  c.training.update(batch_size=BATCH, num_steps=6, checkpoint_every=2, log_every=1,
                    keep_checkpoints=5, plot_every=0)
  c.optimizer.warmup_steps = 1
  c.optimizer.base_learning_rate = 2.0
  return _train(c, tmp_path_factory.mktemp('straight')).params


def _assert_outputs_intact(workdir, config_steps=None):
  """config.json and every metrics line parse, loss.png is a whole PNG, the latest checkpoint restores."""
  saved = json.loads((workdir / 'config.json').read_text())
  if config_steps is not None:
    assert saved['training']['num_steps'] == config_steps
  text = (workdir / 'metrics.jsonl').read_text()
  assert text.endswith('\n')
  steps = [json.loads(line)['step'] for line in text.splitlines()]
  if (workdir / 'loss.png').exists():
    from PIL import Image  # pylint: disable=g-import-not-at-top
    Image.open(workdir / 'loss.png').load()
  assert not [p for p in os.listdir(workdir) if '.tmp-' in p]
  return steps


# --- brave_jax.files: the write primitives ------------------------------------------------------

def test_append_line_is_whole_or_absent_when_the_disk_fills(tmp_path, monkeypatch):
  path = str(tmp_path / 'metrics.jsonl')
  files.append_line(path, json.dumps({'step': 1}))
  real_write = os.write

  def half_then_enospc(fd, data):
    real_write(fd, data[:len(data) // 2])  # What a filling disk does: part of it lands.
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(files.os, 'write', half_then_enospc)
  with pytest.raises(OSError) as info:
    files.append_line(path, json.dumps({'step': 2, 'loss': 0.5}))
  monkeypatch.undo()
  assert info.value.errno == errno.ENOSPC and info.value.filename == path
  assert open(path).read() == '{"step": 1}\n'  # Cut back: no half line.


def test_torn_metrics_lines_are_repaired_and_skipped(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo{"step": 3, "loss": 0.8}\n{"step": 4, "lo')
  with pytest.warns(UserWarning, match=r'dropped a torn last line'):
    assert files.repair_jsonl_tail(str(path))
  assert path.read_text().endswith('0.8}\n')
  with pytest.warns(UserWarning, match=r'skipped 1 unreadable line\(s\) \(line 2\)'):
    assert [r['step'] for r in metrics_lib.read_metrics(str(tmp_path))] == [1]


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
  path = str(tmp_path / 'config.json')
  files.write_atomic(path, '{"old": true}')
  monkeypatch.setattr(files.os, 'fsync',
                      lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, 'No space left')))
  with pytest.raises(OSError, match='config.json'):
    files.write_atomic(path, '{"new": true, "padding": "' + 'x' * 10000 + '"}')
  monkeypatch.undo()
  assert open(path).read() == '{"old": true}' and os.listdir(tmp_path) == ['config.json']


def test_tensorboard_write_failure_names_the_event_file(tmp_path, monkeypatch):
  events = metrics_lib.ScalarEventFile(str(tmp_path / 'tensorboard'))
  events.write(1, {'loss': 1.0})
  monkeypatch.setattr(events._writer, 'flush',  # pylint: disable=protected-access
                      lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, 'No space left')))
  with pytest.raises(OSError) as info:
    events.write(2, {'loss': 0.5})
  assert info.value.errno == errno.ENOSPC
  assert os.path.basename(info.value.filename).startswith('events.out.tfevents.')
  assert files.disk_full_path(info.value) == info.value.filename


# --- a full disk during training ----------------------------------------------------------------

def test_injected_full_disk_stops_with_one_clear_error_then_resumes(config, tmp_path, monkeypatch,
                                                                   straight_params):
  """ENOSPC at the step-3 metrics line; plot_every set, so the resumed run plots right away."""
  config.training.plot_every = 2
  real_append = files.append_line

  def append(path, line):
    if json.loads(line)['step'] >= 3:
      raise OSError(errno.ENOSPC, 'No space left on device', path)
    real_append(path, line)
  monkeypatch.setattr(files, 'append_line', append)
  with pytest.raises(errors.DiskFullError) as info:
    _train(config, tmp_path)
  monkeypatch.undo()
  message = str(info.value)
  assert message.startswith(f'No space left on device writing {tmp_path / "metrics.jsonl"}.')
  assert f'the last good checkpoint is step 2 in {tmp_path / "checkpoints"}' in message
  assert 'rerun of the same command resumes from it' in message
  assert _assert_outputs_intact(tmp_path) == [1, 2]

  resumed = _train(config, tmp_path)  # Space is back.
  chex.assert_trees_all_equal(resumed.params, straight_params)
  assert _assert_outputs_intact(tmp_path, config_steps=6)[-1] == 6


@contextlib.contextmanager
def _small_tmpfs(directory, size):
  """A tmpfs of `size` mounted on `directory`, or a skip where mounting is not allowed."""
  os.makedirs(directory, exist_ok=True)
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(directory)],
                          capture_output=True, check=False)
  if result.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here ({result.stderr.decode().strip()}); the injected '
                'ENOSPC test covers the loop')
  try:
    yield directory
  finally:
    subprocess.run(['umount', '-l', str(directory)], check=False)


def test_really_full_disk_loses_nothing_and_the_rerun_finishes(config, tmp_path, straight_params):
  """A real tmpfs filled to the last byte once checkpoint 2 is on it, then freed: Linux's ENOSPC
  path end to end (metrics, plot, TensorBoard or Orbax: whichever writes next)."""
  with _small_tmpfs(tmp_path / 'disk', '4M') as disk:
    workdir, filler = disk / 'work', disk / 'filler'

    def fill_disk(step):
      del step
      if (workdir / 'checkpoints' / '2').exists() and not filler.exists():
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
          while True:
            os.write(fd, b'\0' * 65536)
        except OSError:
          while True:  # Down to the last byte.
            try:
              os.write(fd, b'\0')
            except OSError:
              break
        os.close(fd)
    with pytest.raises(errors.DiskFullError) as info:
      _train(config, workdir, on_step=fill_disk, delay_after=0)
    last_good = checkpointing.latest_step(str(workdir / 'checkpoints'))
    assert last_good >= 2
    assert str(info.value).startswith(f'No space left on device writing {workdir}')
    assert (f'the last good checkpoint is step {last_good} in {workdir / "checkpoints"}, and a '
            'rerun of the same command resumes from it' in str(info.value))
    steps_before = _assert_outputs_intact(workdir)
    os.remove(filler)
    resumed = _train(config, workdir)
    chex.assert_trees_all_equal(resumed.params, straight_params)
    steps_after = _assert_outputs_intact(workdir, config_steps=6)
    assert steps_after[:len(steps_before)] == steps_before and steps_after[-1] == 6


# --- a failed background checkpoint save --------------------------------------------------------

def test_failed_background_save_stops_the_run_at_once_quietly(config, tmp_path, capfd,
                                                              monkeypatch, straight_params):
  """The step-4 save fails in Orbax's background thread (EIO on its meta item)."""
  config.training.update(num_steps=12, checkpoint_every=4)
  real_save_fn = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

  async def failing_save_fn(self, x, directory):
    if x.get('step') == 4:
      raise OSError(errno.EIO, 'Input/output error', str(directory))
    return await real_save_fn(self, x, directory)
  monkeypatch.setattr(ocp.JsonCheckpointHandler, '_save_fn', failing_save_fn)
  with pytest.raises(errors.CheckpointSaveError) as info:
    _train(config, tmp_path, delay_after=4)
  monkeypatch.undo()
  ckpt_dir = tmp_path / 'checkpoints'
  assert str(info.value).startswith(f'saving checkpoint step 4 to {ckpt_dir} failed: ')
  assert 'Input/output error' in str(info.value)
  assert str(info.value).endswith('there is no earlier checkpoint, so a rerun starts from step 0.')
  # Raised within a step or two of the failure, not at the step-8 save an interval later.
  assert max(_assert_outputs_intact(tmp_path)) < 8
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Event loop is closed' not in err, err
  assert checkpointing.latest_step(str(ckpt_dir)) is None  # Nothing before step 4 to keep here.

  config.training.update(num_steps=6, checkpoint_every=2)
  resumed = _train(config, tmp_path)
  chex.assert_trees_all_equal(resumed.params, straight_params)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  state = lambda s: step_lib.TrainState(step=np.int32(s), params={'w': np.full(3, s, np.float32)},
                                        state={}, opt_state=(), rng=np.zeros(2, np.uint32))
  ckpt.save(state(2))
  ckpt.wait_until_finished()

  async def failing_save_fn(self, x, directory):
    raise OSError(errno.ENOSPC, 'No space left on device', str(directory))
  monkeypatch.setattr(ocp.JsonCheckpointHandler, '_save_fn', failing_save_fn)
  ckpt.save(state(4))
  with pytest.raises(errors.CheckpointSaveError, match=r'step 4 .* last good checkpoint, step 2, '
                     r'is kept and a rerun resumes from it') as info:
    ckpt.close()
  assert info.value.path == str(tmp_path / '4')
  monkeypatch.undo()
  assert checkpointing.latest_step(str(tmp_path)) == 2
  template = jax.tree.map(np.zeros_like, state(0))
  restored, _ = checkpointing.Checkpointer(str(tmp_path), keep=1).restore(template)
  assert int(restored.step) == 2 and restored.params['w'][0] == 2


def test_full_disk_under_a_checkpoint_save_names_that_checkpoint(tmp_path):
  """Orbax may lose the file name of an ENOSPC; the step directory being saved is named instead."""
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'checkpoints'), keep=1)
  try:
    raise errors.CheckpointSaveError('saving checkpoint step 4 failed', path=str(
        tmp_path / 'checkpoints' / '4')) from OSError(errno.ENOSPC, 'No space left on device')
  except errors.CheckpointSaveError as error:
    explained = faults.explain_stop(error, 5, str(tmp_path), ckpt)
  ckpt.close()
  assert isinstance(explained, errors.DiskFullError)
  assert str(explained).startswith(
      f'No space left on device writing {tmp_path / "checkpoints" / "4"}. Training stopped after '
      'step 5; no checkpoint was saved yet')


# --- a rerun with another config ----------------------------------------------------------------

def test_changed_config_is_refused_before_anything_is_written(config, tmp_path):
  config.training.num_steps = 2
  _train(config, tmp_path)
  before = {p: (tmp_path / p).read_bytes() for p in ('config.json', 'metrics.jsonl')}
  listing = sorted(str(p) for p in tmp_path.rglob('*'))

  changed = config.copy_and_resolve_references()
  changed.model.projection_dim = 32
  changed.seed = 7
  changed.training.num_steps = 4  # Allowed alone; listed with the rest here.
  with pytest.raises(errors.WorkdirMismatchError) as info:
    _train(changed, tmp_path)
  message = str(info.value)
  assert 'changes 2 field(s) that resuming cannot: model.projection_dim: 64 -> 32; seed: 0 -> 7' \
      in message
  assert 'Use a new --workdir' in message and 'training.num_steps' not in message.split('.')[0]
  assert {p: (tmp_path / p).read_bytes() for p in before} == before
  assert sorted(str(p) for p in tmp_path.rglob('*')) == listing

  longer = config.copy_and_resolve_references()
  longer.training.num_steps = 4  # Train longer: allowed, and config.json now says so.
  assert int(_train(longer, tmp_path).step) == 4
  assert json.loads((tmp_path / 'config.json').read_text())['training']['num_steps'] == 4


def test_checkpoint_of_another_model_is_refused_naming_parameters(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1, async_save=False)
  state = lambda n: step_lib.TrainState(
      step=np.int32(3), params={'enc/linear': {'w': np.zeros((4, n), np.float32)}},
      state={}, opt_state=(), rng=np.zeros(2, np.uint32))
  ckpt.save(state(8))
  with pytest.raises(errors.WorkdirMismatchError,
                     match=r'params/enc/linear/w is \(4, 8\) in the checkpoint, \(4, 16\) in this '
                     r'model. Use a new --workdir'):
    ckpt.restore(state(16))
  ckpt.close()


def test_workdir_that_is_a_file_is_refused(config, tmp_path):
  a_file = tmp_path / f'{uuid.uuid4().hex}.txt'
  a_file.write_text('not a directory')
  with pytest.raises(errors.UsageError, match='is a file, not a directory'):
    _train(config, a_file)
  assert a_file.read_text() == 'not a directory'


# --- the command line: one line, no traceback ---------------------------------------------------

def test_main_cli_prints_config_and_workdir_errors_as_one_line(tmp_path, tiny_va_config):
  import conftest  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  tiny = conftest.config_path('brave_rgb_audio', 'tiny')
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  workdir = tmp_path / 'work'  # config.json + one committed checkpoint of the tiny config.
  workdir.mkdir()
  saved_config.write(tiny_va_config, str(workdir))
  ckpt = checkpointing.Checkpointer(str(workdir / 'checkpoints'), keep=1, async_save=False)
  ckpt.save(step_lib.TrainState(step=np.int32(20), params={}, state={}, opt_state=(),
                                rng=np.zeros(2, np.uint32)))
  ckpt.close()
  config_json = (workdir / 'config.json').read_bytes()
  cases = {  # argv -> (exit status, what the one line must say)
      ('--config=configs/nope.py',): (2, "--config=configs/nope.py: config file 'configs/nope.py' "
                                         'not found'),
      (f'--config={tiny}', '--config.training.num_stepz=3'): (
          2, "--config.training.num_stepz: the config has no field 'training.num_stepz' (did you "
             "mean 'num_steps'?)"),
      (f'--config={tiny}', '--config.training.num_steps=abc'): (
          2, "--config.training.num_steps=abc: invalid literal for int()"),
      (f'--config={tiny}', '--config.training.batch_size=0'): (
          2, 'config.training.batch_size: must be a positive integer, got 0'),
      (f'--config={conftest.config_path("brave_rgb_audio", None)}:huge',): (
          2, "unknown config variant 'huge'"),
      (f'--config={tiny}', f'--workdir={a_file}'): (2, 'is a file, not a directory'),
      (f'--config={tiny}', f'--workdir={workdir}', '--config.model.projection_dim=32'): (
          1, 'changes 1 field(s) that resuming cannot: model.projection_dim: 64 -> 32. Use a new '
             '--workdir'),
  }
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(conftest.REPO_ROOT),
                                                     os.environ.get('PYTHONPATH', '')]))
  procs = {argv: subprocess.Popen([sys.executable, '-m', 'brave_jax.main', *argv],
                                  cwd=conftest.REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
           for argv in cases}
  for argv, proc in procs.items():
    out, err = proc.communicate(timeout=120)
    code, expected = cases[argv]
    error_lines = [l for l in (out + err).splitlines() if l.startswith('error: ')]
    assert proc.returncode == code and len(error_lines) == 1, (argv, proc.returncode, out, err)
    assert 'Traceback' not in out + err and expected in error_lines[0], (argv, error_lines)
  assert (workdir / 'config.json').read_bytes() == config_json
