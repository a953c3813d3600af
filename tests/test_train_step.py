"""pmapped update: 1 device == 2 devices on the same global batch; uneven batches refused."""
import chex
import jax
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib
import train_test_double

GLOBAL_BATCH = 4


def _optimizer():
  c = config_base.base_config()
  c.training.update(batch_size=GLOBAL_BATCH, num_steps=10)
  c.optimizer.update(warmup_steps=1, base_learning_rate=64.0)  # Big enough to move params.
  return optimizer_lib.make_optimizer(c), optimizer_lib.make_schedule(c)


def _run(num_devices, num_steps=2):
  devices = jax.devices()[:num_devices]
  model = train_test_double.build_test_double_model('i')
  optimizer, schedule = _optimizer()
  batches = [step_lib.shard_batch(train_test_double.make_global_batch(s, GLOBAL_BATCH), num_devices)
             for s in range(num_steps)]
  ts = step_lib.make_init(model, optimizer, devices)(jax.random.PRNGKey(0), batches[0])
  update = step_lib.make_pmapped_update(model, optimizer, 'i', devices, schedule)
  for batch in batches:
    ts, metrics = update(ts, batch)
  return ts, metrics


def test_two_devices_match_one_device():
  assert jax.device_count() >= 2, 'tests/conftest.py should force 2 CPU devices'
  ts1, m1 = _run(1)
  ts2, m2 = _run(2)
  chex.assert_trees_all_close(step_lib.unreplicate(ts1.params), step_lib.unreplicate(ts2.params),
                              atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(step_lib.unreplicate(ts1.state), step_lib.unreplicate(ts2.state),
                              atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(step_lib.unreplicate(m1), step_lib.unreplicate(m2), atol=1e-5,
                              rtol=1e-5)
  assert int(step_lib.unreplicate(ts2.step)) == 2
  # Replicas agree exactly after pmean.
  leaves = jax.tree.leaves(ts2.params)
  for x in leaves:
    np.testing.assert_array_equal(np.asarray(x)[0], np.asarray(x)[1])


def test_params_move_and_metrics_present():
  _, metrics = _run(2, num_steps=1)
  m = step_lib.unreplicate(metrics)
  assert {'loss', 'loss/narrow_to_audio', 'loss/audio_to_narrow', 'grad_norm',
          'learning_rate'} <= set(m)
  assert all(np.isfinite(v) for v in m.values())


def test_uneven_global_batch_refused():
  batch = train_test_double.make_global_batch(0, 3)
  with pytest.raises(ValueError, match='does not split evenly over 2 device'):
    step_lib.shard_batch(batch, 2)


def test_wrong_leading_dims_refused_by_update():
  devices = jax.devices()[:2]
  model = train_test_double.build_test_double_model('i')
  optimizer, _ = _optimizer()
  good = step_lib.shard_batch(train_test_double.make_global_batch(0, 4), 2)
  ts = step_lib.make_init(model, optimizer, devices)(jax.random.PRNGKey(0), good)
  update = step_lib.make_pmapped_update(model, optimizer, 'i', devices)
  bad = jax.tree.map(lambda x: x.reshape((1, 4) + x.shape[2:]), good)  # [1, 4] on 2 devices.
  with pytest.raises(ValueError, match=r"needs \[devices=2, per_device_batch"):
    update(ts, bad)


def test_replicate_unreplicate_roundtrip():
  tree = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'k': np.asarray(3, np.int32)}
  rep = step_lib.replicate(tree, jax.devices()[:2])
  chex.assert_shape(rep['a'], (2, 2, 3))
  back = step_lib.unreplicate(rep)
  chex.assert_trees_all_equal(back, tree)
  assert isinstance(back['k'], np.ndarray) and back['k'].shape == ()
