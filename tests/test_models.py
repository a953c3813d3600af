"""Backbones, heads and the BraVe model: shapes, temporal shift, pmap, published names, bf16, remat."""
import json

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax.models import brave
from brave_jax.models import resnet_v2
from brave_jax.models import tsm_resnet
from conftest import config_path

B, T, SIZE, SPEC_FRAMES, MEL_BINS = 4, 2, 32, 64, 80


def _backbone_apply(make_module, x, is_training=True):
  """init + apply of a bare backbone; returns the features (runs on the values or shapes given)."""
  fn = hk.transform_with_state(lambda x: make_module()(x, is_training))

  def init_and_apply(x):
    params, state = fn.init(jax.random.PRNGKey(0), x)
    return fn.apply(params, state, None, x)[0]

  return jax.jit(init_and_apply)(x)


def _tiny_batch(modalities, seed=0):
  rng = np.random.default_rng(seed)
  broad = {}
  for m in modalities:
    if m == 'audio':
      broad[m] = rng.normal(size=(B, SPEC_FRAMES, MEL_BINS)).astype(np.float32)
    else:
      broad[m] = rng.uniform(size=(B, T, SIZE, SIZE, brave.INPUT_CHANNELS[m])).astype(np.float32)
  return {'narrow': {'video': rng.uniform(size=(B, T, SIZE, SIZE, 3)).astype(np.float32)},
          'broad': broad, 'label': np.full((B,), -1, np.int32)}


def _flat_shapes(tree):
  return {f'{module}/{name}': list(np.shape(v)) for module, leaves in tree.items()
          for name, v in leaves.items()}


@pytest.mark.parametrize('depth,width,channels', [
    (18, 0.25, 3), (18, 0.25, 2), (18, 1.0, 3), (18, 2.0, 2),
    (50, 0.25, 3), (50, 1.0, 3), (50, 1.0, 2), (50, 2.0, 3),
])
def test_tsm_resnet_output_shape(depth, width, channels):
  """Traced shapes only (no FLOPs); concrete RGB and audio forwards run in the tiny_va fixture."""
  video = jnp.zeros((B, T, SIZE, SIZE, channels))
  make = lambda: tsm_resnet.TSMResNetV2(depth=depth, width_multiplier=width)
  feats = jax.eval_shape(lambda v: _backbone_apply(make, v), video)
  expected = int((2048 if depth >= 50 else 512) * width)
  chex.assert_shape(feats, (B, expected))
  assert tsm_resnet.output_dim(depth, width) == expected


def test_tsm_resnet_stem_and_unit_widths_follow_the_multiplier():
  video = jax.ShapeDtypeStruct((1, 2, SIZE, SIZE, 2), jnp.float32)
  fn = hk.transform_with_state(lambda v: tsm_resnet.TSMResNetV2(50, 0.25)(v, True))
  params, _ = jax.eval_shape(fn.init, jax.random.PRNGKey(0), video)
  chex.assert_shape(params['TSMResNetV2/tsm_resnet_stem']['w'], (7, 7, 2, 16))
  chex.assert_shape(params['TSMResNetV2/tsm_resnet_unit_3/block_0/conv_1']['w'], (3, 3, 128, 128))
  chex.assert_shape(params['TSMResNetV2/tsm_resnet_unit_3/block_2/conv_2']['w'], (1, 1, 128, 512))


@pytest.mark.parametrize('depth,width', [(18, 0.25), (18, 1.0), (50, 1.0), (50, 2.0)])
def test_audio_resnet_output_shape(depth, width):
  """Traced shapes only; the concrete audio forward runs in the tiny_va fixture."""
  log_mel = jnp.zeros((B, SPEC_FRAMES, MEL_BINS))
  make = lambda: resnet_v2.ResNetV2(depth=depth, width_multiplier=width)
  feats = jax.eval_shape(lambda x: _backbone_apply(make, x), log_mel)
  chex.assert_shape(feats, (B, int((2048 if depth >= 50 else 512) * width)))


@pytest.mark.parametrize('basic_block,kernels', [('published', (1, 3)), ('two_3x3', (3, 3))])
def test_audio_basic_block_convs(basic_block, kernels):
  """Depth 18: 'published' (the published resnet.py) is bn-relu-1x1 conv, then bn-relu-3x3 conv
  carrying the block's stride; 'two_3x3' the usual 3x3 (strided), 3x3. Same output size."""
  log_mel = jnp.zeros((B, SPEC_FRAMES, MEL_BINS))
  make = lambda: resnet_v2.ResNetV2(depth=18, width_multiplier=0.25, basic_block=basic_block)
  forward = hk.transform_with_state(lambda x: make()(x, True))
  params, _ = jax.eval_shape(forward.init, jax.random.PRNGKey(0), log_mel)
  block = 'res_net_v2/~/block_group_1/block_0/~'
  chex.assert_shape(params[f'{block}/conv_0']['w'], (kernels[0], kernels[0], 16, 32))
  chex.assert_shape(params[f'{block}/conv_1']['w'], (kernels[1], kernels[1], 32, 32))
  feats = jax.eval_shape(lambda x: _backbone_apply(make, x), log_mel)
  chex.assert_shape(feats, (B, 128))


def test_published_audio_basic_block_is_the_default_and_unknown_names_are_refused():
  assert config_base.base_config().model.audio_backbone.basic_block == 'published'
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  config.model.audio_backbone.basic_block = 'three_3x3'
  with pytest.raises(config_base.ConfigError, match='model.audio_backbone.basic_block'):
    config_base.validate(config)


def test_loss_runs_broad_views_through_the_head_video_first_whatever_the_config_order():
  assert brave.head_order(('audio', 'flow', 'video')) == ('video', 'flow', 'audio')


def test_temporal_shift_equals_the_published_golden_output(testdata_dir):
  """Float equality with the published code's shift (tests/testdata/temporal_shift.npz)."""
  golden = np.load(testdata_dir / 'temporal_shift.npz')
  out = tsm_resnet.temporal_shift(jnp.asarray(golden['x']), int(golden['num_frames']))
  np.testing.assert_array_equal(np.asarray(out), golden['shifted'])


def test_temporal_shift_moves_one_eighth_each_way_and_swaps_the_groups():
  b, t, c = 2, 3, 16  # n = 2 channels each way.
  x_BxTxHxWxC = jnp.arange(b * t * 2 * 2 * c, dtype=jnp.float32).reshape(b, t, 2, 2, c) + 1
  out = tsm_resnet.temporal_shift(x_BxTxHxWxC.reshape(b * t, 2, 2, c), t).reshape(x_BxTxHxWxC.shape)
  chex.assert_shape(out, x_BxTxHxWxC.shape)
  n = 2
  # First n output channels: the LAST n channels of frame t+1; zeros at the last frame.
  chex.assert_trees_all_equal(out[:, :-1, ..., :n], x_BxTxHxWxC[:, 1:, ..., c - n:])
  chex.assert_trees_all_equal(out[:, -1, ..., :n], jnp.zeros_like(out[:, -1, ..., :n]))
  # Last n output channels: the FIRST n channels of frame t-1; zeros at the first frame.
  chex.assert_trees_all_equal(out[:, 1:, ..., c - n:], x_BxTxHxWxC[:, :-1, ..., :n])
  chex.assert_trees_all_equal(out[:, 0, ..., c - n:], jnp.zeros_like(out[:, 0, ..., c - n:]))
  # The rest stays; nothing leaks between clips of the batch.
  chex.assert_trees_all_equal(out[..., n:c - n], x_BxTxHxWxC[..., n:c - n])


def test_temporal_shift_rounds_the_fraction_down():
  x = jnp.ones((2 * 2, 1, 1, 15))  # int(15 / 8) = 1 channel each way.
  out = tsm_resnet.temporal_shift(x, 2).reshape(2, 2, 15)
  np.testing.assert_array_equal(out[:, 0, -1], 0.0)  # Nothing before the first frame.
  np.testing.assert_array_equal(out[:, 1, 0], 0.0)  # Nothing after the last frame.
  assert float(out.sum()) == 2 * 2 * 15 - 4
  x7 = jnp.ones((4, 1, 1, 7))  # Fewer than 8 channels: nothing moves.
  chex.assert_trees_all_equal(tsm_resnet.temporal_shift(x7, 2), x7)


def test_shared_head_with_unequal_feature_sizes_is_refused(tiny_va_config):
  tiny_va_config.model.audio_backbone.width_multiplier = 0.5
  with pytest.raises(config_base.ConfigError, match='model.shared_head'):
    brave.build_model(tiny_va_config.model, ('audio',))


def test_unknown_modality_is_refused(tiny_va_config):
  with pytest.raises(config_base.ConfigError, match='broad_modalities'):
    brave.build_model(tiny_va_config.model, ('depth',))


@pytest.fixture(scope='module')
def tiny_va():
  """Tiny V/A model, its batch, params and state, and one f32 training-mode loss (reused)."""
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  model = brave.build_model(config.model, config.data.broad_modalities, axis_name=None)
  batch = _tiny_batch(config.data.broad_modalities)
  params, state = jax.jit(model.init)(jax.random.PRNGKey(0), batch)  # Eager init: 1.5x slower.
  loss_and_grad = jax.jit(jax.value_and_grad(model.loss, has_aux=True))
  (loss, (new_state, metrics)), grads = loss_and_grad(params, state, jax.random.PRNGKey(1), batch)
  return dict(config=config, model=model, batch=batch, params=params, state=state, loss=loss,
              new_state=new_state, metrics=metrics, grads=grads)


def test_model_runs_outside_pmap(tiny_va):
  loss, metrics, grads = tiny_va['loss'], tiny_va['metrics'], tiny_va['grads']
  chex.assert_shape(loss, ())
  chex.assert_tree_all_finite((loss, metrics, grads))
  assert set(metrics) == {'loss', 'loss/narrow_to_audio', 'loss/audio_to_narrow'}
  np.testing.assert_allclose(
      loss, (metrics['loss/narrow_to_audio'] + metrics['loss/audio_to_narrow']) / 2, rtol=1e-6)
  assert 0.0 < float(loss) < 2.0
  roots = {k.split('/')[0] for k in tiny_va['params']}
  assert roots == {'narrow_video_embedding', 'broad_audio_embedding', 'shared_project'}
  # Both backbones and the head learn from the loss.
  for root in roots:
    norm = sum(float(jnp.abs(v).sum()) for k, leaves in grads.items() if k.startswith(root)
               for v in leaves.values())
    assert norm > 0, root
  # Batch norm statistics moved.
  before = tiny_va['state']['shared_project/projector/batch_norm/~/mean_ema']['counter']
  after = tiny_va['new_state']['shared_project/projector/batch_norm/~/mean_ema']['counter']
  assert int(after) > int(before)


def test_model_outside_pmap_equals_the_model_inside_pmap(tiny_va):
  """axis_name=None (no cross-replica reductions) gives what the pmapped model gives on 1 device."""
  config, params, state, batch = (tiny_va[k] for k in ('config', 'params', 'state', 'batch'))
  model_i = brave.build_model(config.model, config.data.broad_modalities, axis_name='i')
  loss_and_grad = jax.value_and_grad(model_i.loss, has_aux=True)
  add_axis = lambda tree: jax.tree.map(lambda x: x[None], tree)
  (loss, (new_state, metrics)), grads = jax.pmap(loss_and_grad, axis_name='i')(
      add_axis(params), add_axis(state), add_axis(jax.random.PRNGKey(1)), add_axis(batch))
  first = lambda tree: jax.tree.map(lambda x: x[0], tree)
  np.testing.assert_allclose(loss[0], tiny_va['loss'], rtol=1e-5)
  chex.assert_trees_all_close(first(metrics), tiny_va['metrics'], rtol=1e-5)
  chex.assert_trees_all_close(first(new_state), tiny_va['new_state'], rtol=1e-4, atol=1e-5)
  # Training-mode batch norm amplifies float32 rounding in single gradient entries, and some
  # arrays' true gradient is zero (a bias just before a batch norm): compare each array's L2
  # distance with its own norm plus a floor of rounding noise on the whole gradient's norm.
  norm = lambda tree: float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree))))
  floor = 1e-4 * norm(tiny_va['grads'])
  too_far = jax.tree.map(
      lambda a, b: float(norm(a - b) - 1e-2 * norm(b) - floor), first(grads), tiny_va['grads'])
  assert max(jax.tree.leaves(too_far)) <= 0, too_far


def test_embed_functions_use_inference_batch_norm(tiny_va):
  model, params, state, batch = (tiny_va[k] for k in ('model', 'params', 'new_state', 'batch'))
  video_feats = jax.jit(model.embed_narrow)(params, state, batch['narrow']['video'])
  audio_feats = jax.jit(model.embed_broad['audio'])(params, state, batch['broad']['audio'])
  chex.assert_shape([video_feats, audio_feats], (B, 128))
  chex.assert_tree_all_finite((video_feats, audio_feats))
  # Inference mode: one example's features do not depend on the rest of the batch.
  other = batch['narrow']['video'].copy()
  other[1] = 1.0 - other[1]
  other_feats = jax.jit(model.embed_narrow)(params, state, other)
  np.testing.assert_allclose(other_feats[0], video_feats[0], rtol=1e-4, atol=1e-5)
  assert not np.allclose(other_feats[1], video_feats[1])


def test_model_under_pmap_matches_single_device(tiny_va):
  assert jax.local_device_count() >= 2, 'conftest.py should simulate 2 CPU devices'
  model = brave.build_model(tiny_va['config'].model, ('audio',), axis_name='i')
  replicate = lambda tree: jax.tree.map(lambda x: np.stack([x, x]), tree)
  # The same batch on both devices: cross-replica statistics equal the local ones.
  loss, (new_state, metrics) = jax.pmap(model.loss, axis_name='i')(
      replicate(tiny_va['params']), replicate(tiny_va['state']),
      jax.random.split(jax.random.PRNGKey(1), 2), replicate(tiny_va['batch']))
  chex.assert_shape(loss, (2,))
  np.testing.assert_allclose(loss, np.full(2, tiny_va['loss']), rtol=1e-4)
  np.testing.assert_allclose(metrics['loss/audio_to_narrow'],
                             np.full(2, tiny_va['metrics']['loss/audio_to_narrow']), rtol=1e-4)
  key = 'narrow_video_embedding/TSMResNetV2/batch_norm/~/mean_ema'
  np.testing.assert_allclose(new_state[key]['hidden'][0], tiny_va['new_state'][key]['hidden'],
                             rtol=1e-4, atol=1e-6)


def test_cross_replica_batch_norm_shares_statistics_over_different_data(tiny_va):
  """Each device gets a DIFFERENT half of the batch: with statistics shared over 'i' the mean
  loss and the BN state equal one device's on the whole batch; with per-device statistics
  (the control) they do not."""
  assert jax.local_device_count() >= 2, 'conftest.py should simulate 2 CPU devices'
  halves = jax.tree.map(lambda x: x.reshape((2, B // 2) + x.shape[1:]), tiny_va['batch'])
  replicate = lambda tree: jax.tree.map(lambda x: np.stack([x, x]), tree)
  rngs = jax.random.split(jax.random.PRNGKey(1), 2)
  results = {}
  for axis in ('i', None):
    model = brave.build_model(tiny_va['config'].model, ('audio',), axis_name=axis)
    loss, (new_state, _) = jax.pmap(model.loss, axis_name='i')(
        replicate(tiny_va['params']), replicate(tiny_va['state']), rngs, halves)
    results[axis] = (float(np.mean(loss)), new_state)
  key = 'narrow_video_embedding/TSMResNetV2/batch_norm/~/mean_ema'
  shared_loss, shared_state = results['i']
  np.testing.assert_allclose(shared_loss, float(tiny_va['loss']), rtol=1e-4)
  for device in range(2):
    np.testing.assert_allclose(shared_state[key]['hidden'][device],
                               tiny_va['new_state'][key]['hidden'], rtol=1e-4, atol=1e-6)
  local_loss, local_state = results[None]
  assert abs(local_loss - float(tiny_va['loss'])) > 1e-3 * abs(float(tiny_va['loss']))
  assert not np.allclose(local_state[key]['hidden'][0], tiny_va['new_state'][key]['hidden'],
                         rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('manifest_key,config_name', [
    ('rgb_audio', 'brave_rgb_audio'), ('rgb_rgb', 'brave_rgb_rgb')])
def test_full_size_names_and_shapes_equal_the_published_manifest(testdata_dir, manifest_key,
                                                                  config_name):
  manifest = json.loads((testdata_dir / 'official_param_manifest.json').read_text())[manifest_key]
  config = config_base.load(config_path(config_name, None))
  model = brave.build_model(config.model, config.data.broad_modalities, axis_name='i')
  batch = {'narrow': {'video': jax.ShapeDtypeStruct((1, 2, SIZE, SIZE, 3), jnp.float32)},
           'broad': {'video': jax.ShapeDtypeStruct((1, 2, SIZE, SIZE, 3), jnp.float32),
                     'audio': jax.ShapeDtypeStruct((1, SPEC_FRAMES, MEL_BINS), jnp.float32)}}
  params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
  for kind, ours in (('params', params), ('state', state)):
    published = {k: v for k, v in manifest[kind].items() if not k.startswith('shared_project_1/')}
    assert _flat_shapes(ours) == published, kind


def test_every_modality_with_per_view_heads_traces(tiny_va_config):
  tiny_va_config.model.shared_head = False
  modalities = config_base.BROAD_MODALITIES
  model = brave.build_model(tiny_va_config.model, modalities)
  batch = _tiny_batch(modalities)
  params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
  loss, (_, metrics) = jax.eval_shape(model.loss, params, state, jax.random.PRNGKey(0), batch)
  roots = {k.split('/')[0] for k in params}
  assert roots == ({'narrow_video_embedding', 'narrow_video_project'}
                   | {f'broad_{m}_embedding' for m in modalities}
                   | {f'broad_{m}_project' for m in modalities})
  chex.assert_shape(params['broad_flow_embedding/TSMResNetV2/tsm_resnet_stem']['w'], (7, 7, 2, 16))
  assert set(metrics) == {'loss'} | {f'loss/narrow_to_{m}' for m in modalities} | {
      f'loss/{m}_to_narrow' for m in modalities}
  chex.assert_shape(loss, ())
  for m in modalities:
    feats = jax.eval_shape(model.embed_broad[m], params, state, batch['broad'][m])
    chex.assert_shape(feats, (B, 128))


def test_wrong_input_channels_are_refused(tiny_va_config):
  # Parameters of the right shapes (zeros, from the traced init) suffice: the check comes before
  # any arithmetic, so this stays in the fast tier without the tiny_va fixture's real init.
  modalities = tiny_va_config.data.broad_modalities
  model = brave.build_model(tiny_va_config.model, modalities, axis_name=None)
  batch = _tiny_batch(modalities)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
  params, state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  with pytest.raises(ValueError, match=r'narrow_video_embedding.*\[B, T, H, W, 3\]'):
    model.embed_narrow(params, state, batch['narrow']['video'][..., :2])
  # Control: the same parameters take 3 channels.
  chex.assert_tree_all_finite(model.embed_narrow(params, state, batch['narrow']['video']))


def test_bfloat16_with_remat_is_close_to_float32(tiny_va):
  model_config = tiny_va['config'].model.copy_and_resolve_references()
  model_config.compute_dtype = 'bfloat16'
  model_config.remat = True
  model = brave.build_model(model_config, ('audio',))
  params, batch = tiny_va['params'], tiny_va['batch']
  loss, (_, metrics) = jax.jit(model.loss)(params, tiny_va['state'], jax.random.PRNGKey(1), batch)
  chex.assert_type(loss, jnp.float32)
  chex.assert_tree_all_finite(metrics)
  np.testing.assert_allclose(loss, tiny_va['loss'], atol=3e-2)
  # Inference features, with batch-norm statistics from the f32 step.
  feats = jax.jit(model.embed_narrow)(params, tiny_va['new_state'], batch['narrow']['video'])
  ref = jax.jit(tiny_va['model'].embed_narrow)(params, tiny_va['new_state'], batch['narrow']['video'])
  chex.assert_type(feats, jnp.float32)
  chex.assert_tree_all_finite(feats)
  cos = jnp.sum(feats * ref, -1) / (jnp.linalg.norm(feats, axis=-1) * jnp.linalg.norm(ref, axis=-1))
  # bf16 keeps ~3 significant digits per op; through 8 random-init blocks at width 16, with
  # batch-norm statistics from 8 frames, that leaves features within ~10% of the f32 ones.
  assert float(cos.min()) > 0.98, cos
  rel_err = jnp.linalg.norm(feats - ref, axis=-1) / jnp.linalg.norm(ref, axis=-1)
  assert float(rel_err.max()) < 0.15, rel_err


def test_remat_keeps_names_and_loss(tiny_va):
  model_config = tiny_va['config'].model.copy_and_resolve_references()
  model_config.remat = True
  model = brave.build_model(model_config, ('audio',))
  params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), tiny_va['batch'])
  assert _flat_shapes(params) == _flat_shapes(tiny_va['params'])
  assert _flat_shapes(state) == _flat_shapes(tiny_va['state'])
  loss, (new_state, _) = jax.jit(model.loss)(
      tiny_va['params'], tiny_va['state'], jax.random.PRNGKey(1), tiny_va['batch'])
  np.testing.assert_allclose(loss, tiny_va['loss'], rtol=1e-5)
  chex.assert_trees_all_close(new_state, tiny_va['new_state'], rtol=1e-4, atol=1e-6)
