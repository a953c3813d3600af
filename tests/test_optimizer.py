"""Optimizer: published vs corrected masks and x10 placement (golden updates), warm-up cosine schedule."""
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
                                                      'offset': np.full(3, 0.5, np.float32)},
    'broad_audio_embedding/res_net_v2/~/block_group_0/block_0/batch_norm_1':
        {'scale': np.ones(3, np.float32), 'offset': np.full(3, 0.5, np.float32)},
    'shared_project/projector/linear': {'w': np.ones((3, 2), np.float32),
                                        'b': np.full(2, 0.5, np.float32)},
    'shared_project/predictor/linear': {'w': np.ones((2, 2), np.float32),
                                        'b': np.full(2, 0.5, np.float32)},
    'shared_project/predictor/layer_norm': {'w_like': np.ones(2, np.float32)},
}


WEIGHTS = {'narrow_video_embedding/TSMResNetV2/conv_1/w/w', 'shared_project/projector/linear/w',
           'shared_project/predictor/linear/w'}


def test_published_mask_selects_biases_and_norms_and_corrected_the_weights():
  published = {path for path, m in _flat(optimizer_lib.decay_mask(PARAMS)).items() if m}
  corrected = {path for path, m in _flat(optimizer_lib.decay_mask(PARAMS, 'corrected')).items()
               if m}
  assert corrected == WEIGHTS
  assert published == set(_flat(PARAMS)) - WEIGHTS
  assert 'shared_project/predictor/layer_norm/w_like' in published  # 'norm' in the module name.


def _golden_tree(golden, prefix):
  tree = {}
  for key in golden.files:
    if key.startswith(prefix + ':'):
      module, name = key.split(':', 1)[1].rsplit('/', 1)
      tree.setdefault(module, {})[name] = golden[key]
  return tree


def test_published_lars_equals_the_golden_updates(testdata_dir):
  """Three published updates (tests/testdata/lars_update.npz) within 1e-5; 'corrected' is far off."""
  golden = np.load(testdata_dir / 'lars_update.npz')
  errors = {}
  for variant in ('published', 'corrected'):
    config = _config(warmup_steps=2, num_steps=10)  # Peak 1.0 at batch 512: LRs 0, 0.5, 1.0.
    config.optimizer.variant = variant
    opt, schedule = optimizer_lib.make_optimizer(config), optimizer_lib.make_schedule(config)
    params = _golden_tree(golden, 'params0')
    opt_state = opt.init(params)
    errors[variant] = []
    for i in range(3):
      assert float(schedule(i)) == pytest.approx(float(golden[f'lr{i}']))
      updates, opt_state = opt.update(_golden_tree(golden, f'grads{i}'), opt_state, params)
      params = optax.apply_updates(params, updates)
      expected = _flat(_golden_tree(golden, f'params{i + 1}'))
      errors[variant].append(max(float(np.max(np.abs(v - expected[k])))
                                 for k, v in _flat(params).items()))
  assert max(errors['published']) <= 1e-5, errors
  assert max(errors['corrected']) > 1e-2, errors  # The test can tell the variants apart.


def _run(config, grads, steps=3, params=PARAMS):
  opt = optimizer_lib.make_optimizer(config)
  state = opt.init(params)
  for _ in range(steps):  # Step past warm-up's zero LR at count 0.
    updates, state = opt.update(grads, state, params)
  return _flat(updates)


def _momentum_sgd(config, grads, steps=3):
  """LARS without decay and trust ratio: learning rate, then Nesterov momentum."""
  ref = optax.chain(optax.scale_by_learning_rate(optimizer_lib.make_schedule(config)),
                    optax.trace(decay=0.9, nesterov=True))
  state = ref.init(PARAMS)
  for _ in range(steps):
    updates, state = ref.update(grads, state, PARAMS)
  return _flat(updates)


@pytest.mark.parametrize('variant', ['published', 'corrected'])
def test_lars_unmasked_leaves_get_momentum_sgd_and_masked_ones_the_trust_ratio(variant):
  """Where the mask is False: plain SGD-momentum. Where True: trust ratio shrinks the step ~1e-3x."""
  config = _config(weight_decay=0.5, lr_multipliers=())
  config.optimizer.variant = variant
  grads = jax.tree.map(lambda p: np.full_like(p, 0.1), PARAMS)
  flat_u, flat_ref = _run(config, grads), _momentum_sgd(config, grads)
  for path, applies in _flat(optimizer_lib.decay_mask(PARAMS, variant)).items():
    if not applies:
      np.testing.assert_allclose(flat_u[path], flat_ref[path], rtol=1e-6, err_msg=path)
    else:
      assert np.all(np.abs(flat_u[path]) < 0.1 * np.abs(flat_ref[path])), path


def test_lr_multiplier_tree_matches_from_the_start_and_multiplies():
  mults = _flat(optimizer_lib.lr_multiplier_tree(PARAMS, (('.*predictor.*', 10.0),)))
  for path, m in mults.items():
    assert m == (10.0 if 'predictor' in path else 1.0), path
  rules = (('shared_project/.*', 2.0), ('.*linear/b', 3.0), ('predictor', 5.0))  # Last: no match.
  mults = _flat(optimizer_lib.lr_multiplier_tree(PARAMS, rules))
  assert mults['shared_project/projector/linear/b'] == 6.0
  assert mults['shared_project/predictor/linear/w'] == 2.0
  assert mults['narrow_video_embedding/TSMResNetV2/batch_norm/scale'] == 1.0


def _grads():
  return jax.tree.map(
      lambda p: np.linspace(0.1, 0.5, p.size, dtype=np.float32).reshape(p.shape), PARAMS)


@pytest.mark.parametrize('name', ['lars', 'adamw'])
def test_corrected_predictor_update_is_exactly_10x(name):
  """'corrected': same grads with and without the multiplier; predictor updates x10, rest equal."""
  with_mult = _run(_config(name=name, variant='corrected'), _grads())
  without = _run(_config(name=name, variant='corrected', lr_multipliers=()), _grads())
  for path in with_mult:
    factor = 10.0 if 'predictor' in path else 1.0
    np.testing.assert_allclose(with_mult[path], factor * without[path], rtol=1e-6, err_msg=path)
    assert np.any(without[path] != 0), path


def test_published_lars_x10_is_a_10x_step_for_predictor_weights_only():
  """'published': x10 on gradients before LARS; the trust ratio cancels it on biases and norms."""
  with_mult = _run(_config(), _grads())
  without = _run(_config(lr_multipliers=()), _grads())
  for path in with_mult:
    if 'predictor' in path and not optimizer_lib.is_bias_or_norm(path):
      np.testing.assert_allclose(with_mult[path], 10 * without[path], rtol=1e-6, err_msg=path)
    elif 'predictor' in path:  # Trust-ratio normalised: same size, decay relatively weaker.
      ratio = np.linalg.norm(with_mult[path]) / np.linalg.norm(without[path])
      assert 0.5 < ratio < 2.0, (path, ratio)
    else:
      np.testing.assert_allclose(with_mult[path], without[path], rtol=1e-6, err_msg=path)


def test_published_adamw_x10_is_nearly_a_no_op():
  """Adam divides by the gradient's own scale, so x10 on gradients barely changes the step."""
  with_mult = _run(_config(name='adamw'), _grads())
  without = _run(_config(name='adamw', lr_multipliers=()), _grads())
  for path in with_mult:
    np.testing.assert_allclose(with_mult[path], without[path], rtol=1e-4, err_msg=path)


def test_both_variants_share_one_state_layout():
  """So a checkpoint written under one variant (or before variants existed) restores under the other."""
  layouts = {v: jax.tree.structure(optimizer_lib.make_optimizer(_config(variant=v)).init(PARAMS))
             for v in optimizer_lib.VARIANTS}
  assert layouts['published'] == layouts['corrected']


def test_unknown_variant_names_the_field():
  with pytest.raises(config_base.ConfigError, match='optimizer.variant'):
    optimizer_lib.make_optimizer(_config(variant='fixed'))


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
            batch_size=512, warmup_steps=1, num_steps=10, end_learning_rate=0.0,
            variant='published'):
  c = config_base.base_config()
  c.optimizer.name = name
  c.optimizer.variant = variant
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
