"""Optimizer: decay/trust masks, predictor LR multiplier, warm-up cosine schedule."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from brave_jax import config_base
from brave_jax.train import optimizer as optimizer_lib

PARAMS = {
    'narrow_video_embedding/TSMResNetV2/conv_1/w': {'w': np.ones((3, 3), np.float32)},
    'narrow_video_embedding/TSMResNetV2/batch_norm': {'scale': np.ones(3, np.float32),
                                                      'offset': np.zeros(3, np.float32)},
    'broad_audio_embedding/res_net_v2/~/block_group_0/block_0/batch_norm_1':
        {'scale': np.ones(3, np.float32), 'offset': np.zeros(3, np.float32)},
    'shared_project/projector/linear': {'w': np.ones((3, 2), np.float32),
                                        'b': np.zeros(2, np.float32)},
    'shared_project/predictor/linear': {'w': np.ones((2, 2), np.float32),
                                        'b': np.zeros(2, np.float32)},
    'shared_project/predictor/layer_norm': {'w_like': np.ones(2, np.float32)},
}


def test_decay_mask_selects_only_weights():
  mask = optimizer_lib.decay_mask(PARAMS)
  decayed = {path for path, m in _flat(mask).items() if m}
  assert decayed == {
      'narrow_video_embedding/TSMResNetV2/conv_1/w/w',
      'shared_project/projector/linear/w',
      'shared_project/predictor/linear/w',
  }


def test_lars_masks_skip_biases_and_norms():
  """Masked leaves get plain SGD-momentum updates: no decay, no trust ratio."""
  config = _config(weight_decay=0.5, lr_multipliers=())
  opt = optimizer_lib.make_optimizer(config)
  grads = jax.tree.map(lambda p: np.full_like(p, 0.1), PARAMS)
  state = opt.init(PARAMS)
  for _ in range(3):  # Step past warm-up's zero LR at count 0.
    updates, state = opt.update(grads, state, PARAMS)
  lr = float(optimizer_lib.make_schedule(config)(2))
  flat_u = _flat(updates)
  # Excluded leaves must match LARS without decay and trust ratio: LR, then Nesterov momentum.
  ref = optax.chain(optax.scale_by_learning_rate(optimizer_lib.make_schedule(config)),
                    optax.trace(decay=0.9, nesterov=True))
  ref_state = ref.init(PARAMS)
  for _ in range(3):
    ref_u, ref_state = ref.update(grads, ref_state, PARAMS)
  flat_ref = _flat(ref_u)
  mask = _flat(optimizer_lib.decay_mask(PARAMS))
  for path, m in mask.items():
    if not m:
      np.testing.assert_allclose(flat_u[path], flat_ref[path], rtol=1e-6, err_msg=path)
    else:  # Trust ratio shrinks these by ~1e-3 relative to SGD.
      assert np.all(np.abs(flat_u[path]) < 0.1 * np.abs(flat_ref[path])), path
  assert lr > 0


def test_lr_multiplier_tree_matches_predictor_only():
  mults = _flat(optimizer_lib.lr_multiplier_tree(PARAMS, (('.*predictor.*', 10.0),)))
  for path, m in mults.items():
    assert m == (10.0 if 'predictor' in path else 1.0), path


@pytest.mark.parametrize('name', ['lars', 'adamw'])
def test_predictor_update_is_exactly_10x(name):
  """Same grads with and without the multiplier: predictor updates x10, everything else equal."""
  params = PARAMS
  grads = jax.tree.map(lambda p: np.linspace(0.1, 0.5, p.size, dtype=np.float32).reshape(p.shape),
                       params)
  with_mult = optimizer_lib.make_optimizer(_config(name=name))
  without = optimizer_lib.make_optimizer(_config(name=name, lr_multipliers=()))
  s1, s2 = with_mult.init(params), without.init(params)
  for _ in range(3):
    u1, s1 = with_mult.update(grads, s1, params)
    u2, s2 = without.update(grads, s2, params)
  f1, f2 = _flat(u1), _flat(u2)
  for path in f1:
    factor = 10.0 if 'predictor' in path else 1.0
    np.testing.assert_allclose(f1[path], factor * f2[path], rtol=1e-6, err_msg=path)
    assert np.any(f2[path] != 0), path


def test_schedule_warmup_peak_and_end():
  config = _config(batch_size=1024, warmup_steps=10, num_steps=100, end_learning_rate=1e-3)
  schedule = optimizer_lib.make_schedule(config)
  peak = config_base.peak_learning_rate(config)
  assert peak == pytest.approx(2.0)  # Linear scaling from batch 512.
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(peak / 2)
  assert float(schedule(10)) == pytest.approx(peak)
  assert float(schedule(100)) == pytest.approx(1e-3)
  assert float(schedule(55)) == pytest.approx(1e-3 + (peak - 1e-3) * 0.5, rel=1e-5)


def test_unknown_optimizer_names_the_field():
  config = _config(name='sgd')
  with pytest.raises(config_base.ConfigError, match='optimizer.name'):
    optimizer_lib.make_optimizer(config)


def test_optimizer_jits():
  opt = optimizer_lib.make_optimizer(_config())
  params = jax.tree.map(jnp.asarray, PARAMS)
  state = opt.init(params)
  updates, _ = jax.jit(opt.update)(params, state, params)
  chex.assert_trees_all_equal_shapes(updates, params)


def _config(name='lars', weight_decay=1e-2, lr_multipliers=(('.*predictor.*', 10.0),),
            batch_size=512, warmup_steps=1, num_steps=10, end_learning_rate=0.0):
  c = config_base.base_config()
  c.optimizer.name = name
  c.optimizer.weight_decay = weight_decay
  c.optimizer.lr_multipliers = lr_multipliers
  c.optimizer.warmup_steps = warmup_steps
  c.optimizer.end_learning_rate = end_learning_rate
  c.training.batch_size = batch_size
  c.training.num_steps = num_steps
  return c


def _flat(tree):
  return {optimizer_lib.param_path(kp): v
          for kp, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
