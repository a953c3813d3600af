"""Pretraining through the loop: resume is bit-identical, a non-finite loss stops before saving."""
import json
import os

import numpy as np

import chex
import jax
import pytest

from brave_jax import errors
from brave_jax.data import pipeline
from brave_jax.data import spectrogram_device
from brave_jax.train import checkpointing
from brave_jax.train import faults
from brave_jax.train import pretrain
from brave_jax.train import step as step_lib
import train_test_double

BATCH = 4


@pytest.fixture
def config(tiny_va_config):
  c = tiny_va_config
  c.training.update(batch_size=BATCH, num_steps=6, checkpoint_every=2, log_every=2,
                    keep_checkpoints=5, plot_every=0)
  c.optimizer.warmup_steps = 1
  c.optimizer.base_learning_rate = 2.0  # The test double diverges at the tiny config's peak LR.
  return c


def _iter_fn(**kwargs):
  return train_test_double.make_batch_iterator_fn(BATCH, jax.local_device_count(), **kwargs)


def _model():
  return train_test_double.build_test_double_model('i')


def _host(ts):
  return step_lib.unreplicate(ts)


def test_stop_and_resume_is_bit_identical(config, tmp_path):
  straight = _host(pretrain.train(config, str(tmp_path / 'a'), _iter_fn(), _model()))

  pretrain.train(config, str(tmp_path / 'b'), _iter_fn(), _model(), stop_at_step=4)
  assert checkpointing.Checkpointer(str(tmp_path / 'b' / 'checkpoints'), 5).latest_step() == 4
  resumed = _host(pretrain.train(config, str(tmp_path / 'b'), _iter_fn(), _model()))

  assert int(straight.step) == int(resumed.step) == 6
  chex.assert_trees_all_equal(resumed.params, straight.params)
  chex.assert_trees_all_equal(resumed.state, straight.state)
  chex.assert_trees_all_equal(resumed.opt_state, straight.opt_state)
  records = [json.loads(l) for l in open(tmp_path / 'b' / 'metrics.jsonl')]
  assert [r['step'] for r in records] == [2, 4, 6]
  for r in records:
    assert {'loss', 'loss/narrow_to_audio', 'learning_rate', 'clips_per_s',
            'input_wait_fraction'} <= set(r)
  for name in ('loss.png', 'config.json', 'tensorboard'):
    assert os.path.exists(tmp_path / 'b' / name), name
  assert json.load(open(tmp_path / 'b' / 'config.json'))['training']['num_steps'] == 6


def test_crash_then_resume_is_bit_identical(config, tmp_path):
  """A run killed by its input pipeline resumes from the last checkpoint to the same params."""
  straight = _host(pretrain.train(config, str(tmp_path / 'a'), _iter_fn(), _model()))
  make = _iter_fn()

  def crashing(start_step):
    for i, batch in enumerate(make(start_step)):
      if start_step + i == 5:
        raise RuntimeError('input pipeline died')
      yield batch

  with pytest.raises(RuntimeError, match='input pipeline died'):
    pretrain.train(config, str(tmp_path / 'b'), crashing, _model())
  ckpt_dir = str(tmp_path / 'b' / 'checkpoints')
  assert checkpointing.Checkpointer(ckpt_dir, 5).latest_step() in (2, 4)
  resumed = _host(pretrain.train(config, str(tmp_path / 'b'), _iter_fn(), _model()))
  chex.assert_trees_all_equal(resumed.params, straight.params)


def test_non_finite_loss_raises_and_keeps_last_checkpoint(config, tmp_path):
  with pytest.raises(faults.NonFiniteError, match=r'non-finite loss = nan at step 4'):
    pretrain.train(config, str(tmp_path / 'w'), _iter_fn(nan_at_step=3), _model())
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'w' / 'checkpoints'), 5)
  assert ckpt.all_steps() == [2]  # Step 4 was never written.
  # Step 2 is intact: it restores to exactly the state of a clean two-step run.
  config.training.num_steps = 2
  clean = _host(pretrain.train(config, str(tmp_path / 'clean'), _iter_fn(), _model()))
  restored, _ = ckpt.restore(clean, step=2)
  chex.assert_trees_all_equal(restored.params, clean.params)
  chex.assert_trees_all_equal(restored.opt_state, clean.opt_state)


def test_uneven_batch_from_iterator_refused(config, tmp_path):
  def bad(start_step):
    del start_step
    while True:  # [1, 4, ...] on 2 devices.
      yield jax.tree.map(lambda x: x[None], train_test_double.make_global_batch(0, BATCH))

  with pytest.raises(ValueError, match='devices=2'):
    pretrain.train(config, str(tmp_path / 'w'), bad, _model())


def test_says_it_is_compiling_before_the_first_step(config, tmp_path, capsys):
  """Before: minutes of silence before step 10 while XLA compiled. Now a line says so first."""
  config.training.num_steps = 2
  pretrain.train(config, str(tmp_path / 'w'), _iter_fn(), _model())
  out = capsys.readouterr().out
  compiling = out.index('Compiling the training step')
  compiled = out.index('Compiled the training step in')
  assert (out.index('Reading the first batch') < out.index('Compiling and running the model '
                                                          'initialisation')
          < out.index('Initialised the model in') < compiling < compiled)
  assert 'training from step 0' in out[compiled:]


def _shipped_iter_fn(config):
  """Batches as the pipeline ships them with augment_on='device': narrow pixels plus draws, the
  broad audio as waveforms."""
  return _iter_fn(draws=True, audio_samples=pipeline.audio_num_samples(config))


def test_device_augmentation_trains_and_resumes_bit_identical(config, tmp_path):
  """augment_on='device': the step augments each batch's narrow clips with their shipped draws
  and makes the broad audio's log-mel (data/augment_device.py), and a stopped run resumes to the
  same state as a straight one."""
  config.data.augment_on = 'device'
  shipped = _shipped_iter_fn(config)
  straight = _host(pretrain.train(config, str(tmp_path / 'a'), shipped, _model()))
  pretrain.train(config, str(tmp_path / 'b'), shipped, _model(), stop_at_step=4)
  resumed = _host(pretrain.train(config, str(tmp_path / 'b'), shipped, _model()))
  assert int(straight.step) == int(resumed.step) == 6
  chex.assert_trees_all_equal(resumed.params, straight.params)
  chex.assert_trees_all_equal(resumed.opt_state, straight.opt_state)
  # Control: the draws do act (the same pixels and log-mels without augmentation train to other
  # params).
  config.data.augment_on = 'host'

  def unaugmented(start_step):
    for batch in shipped(start_step):
      batch = dict(batch)
      del batch['draws']
      batch['narrow'] = {'video': batch['narrow']['video'] / 255.0}
      batch['broad'] = {'audio': np.asarray(jax.jit(jax.vmap(
          lambda w: spectrogram_device.from_config(w, config.data)))(batch['broad']['audio']))}
      yield batch
  plain = _host(pretrain.train(config, str(tmp_path / 'c'), unaugmented, _model()))
  leaf = lambda t: np.asarray(jax.tree.leaves(t.params)[0])
  assert np.abs(leaf(plain) - leaf(straight)).max() > 1e-4


def test_device_batch_without_draws_is_refused(config, tmp_path):
  config.data.augment_on = 'device'
  config.training.num_steps = 2
  with pytest.raises(ValueError, match="augment_on is 'device' but the batch has no 'draws'"):
    pretrain.train(config, str(tmp_path / 'w'), _iter_fn(), _model())


def test_device_batch_with_log_mels_is_refused(config, tmp_path):
  """With augment_on='device' the step expects the broad audio as waveforms: log-mels (a batch
  made for the host path) are refused naming the view, not fed to the model."""
  config.data.augment_on = 'device'
  config.training.num_steps = 2
  with pytest.raises(ValueError, match=r"batch\['broad'\]\['audio'\] has shape \(\d+, 4, 3\)"):
    pretrain.train(config, str(tmp_path / 'w'), _iter_fn(draws=True), _model())


def test_resume_with_another_augment_on_is_refused(config, tmp_path):
  """Where the views are augmented changes their numbers (to rounding): a resumed run could not
  repeat the straight one, so augment_on may not change on resume, also for a config.json
  written before the field existed (it trained on the host)."""
  config.training.num_steps = 2
  pretrain.train(config, str(tmp_path / 'w'), _iter_fn(), _model())
  config.training.num_steps = 4
  config.data.augment_on = 'device'
  with pytest.raises(errors.WorkdirMismatchError, match="data.augment_on: 'host' -> 'device'"):
    pretrain.train(config, str(tmp_path / 'w'), _iter_fn(draws=True), _model())
  saved = json.load(open(tmp_path / 'w' / 'config.json'))
  del saved['data']['augment_on']  # As written before the field existed.
  json.dump(saved, open(tmp_path / 'w' / 'config.json', 'w'))
  with pytest.raises(errors.WorkdirMismatchError, match="data.augment_on: 'host' -> 'device'"):
    pretrain.train(config, str(tmp_path / 'w'), _iter_fn(draws=True), _model())
  config.data.augment_on = 'host'  # Control: the workdir's own setting resumes.
  assert int(_host(pretrain.train(config, str(tmp_path / 'w'), _iter_fn(), _model())).step) == 4
