"""Checkpointer: exact round trip of TrainState, last K kept, latest step found."""
import os

import chex
import jax
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax.train import checkpointing
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib
import train_test_double


def _host_state(step=0):
  model = train_test_double.build_test_double_model(None)
  c = config_base.base_config()
  c.training.update(batch_size=4, num_steps=10)
  c.optimizer.warmup_steps = 1
  optimizer = optimizer_lib.make_optimizer(c)
  batch = train_test_double.make_global_batch(0, 4)
  params, state = model.init(jax.random.PRNGKey(0), batch)
  opt_state = optimizer.init(params)
  ts = step_lib.TrainState(np.asarray(step, np.int32), params, state, opt_state,
                           jax.random.PRNGKey(1))
  return jax.tree.map(lambda x: np.array(x), ts)


def test_roundtrip_is_exact(tmp_path):
  ts = _host_state(step=7)
  ts = ts._replace(params=jax.tree.map(lambda x: x + np.float32(0.123), ts.params))
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'ckpt'), keep=2)
  assert ckpt.latest_step() is None
  ckpt.save(ts, meta={'data_step': 7})
  ckpt.wait_until_finished()
  template = _host_state(step=0)
  restored, meta = checkpointing.Checkpointer(str(tmp_path / 'ckpt'), keep=2).restore(template)
  assert meta['step'] == 7 and meta['data_step'] == 7
  chex.assert_trees_all_equal(restored, ts)
  assert jax.tree.structure(restored) == jax.tree.structure(ts)
  ckpt.close()


def test_keeps_last_k(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'ckpt'), keep=2)
  for step in (2, 4, 6):
    ckpt.save(_host_state(step))
  ckpt.close()
  reopened = checkpointing.Checkpointer(str(tmp_path / 'ckpt'), keep=2)
  assert reopened.all_steps() == [4, 6]
  assert reopened.latest_step() == 6
  assert sorted(os.listdir(tmp_path / 'ckpt')) == ['4', '6']


def test_restore_without_checkpoint_raises(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'empty'), keep=1)
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    ckpt.restore(_host_state())
