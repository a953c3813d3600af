"""Published-format checkpoints: a manifest-shaped file loads and embeds; bad files are refused by path."""
import dataclasses
import json

import chex
import jax
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax import published
from brave_jax.models import brave
from conftest import config_path


def _manifest(testdata_dir, key):
  return json.loads((testdata_dir / 'official_param_manifest.json').read_text())[key]


def _random_tree(shapes, seed):
  """Manifest paths/shapes filled with values that keep a deep net's activations finite."""
  rng = np.random.default_rng(seed)
  tree = {}
  for path, shape in shapes.items():
    module, name = path.rsplit('/', 1)
    if name == 'counter':
      value = np.array(10, np.int32)
    elif 'var_ema' in module:
      value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif name == 'scale':
      value = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    elif name == 'w':
      value = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    else:
      value = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    tree.setdefault(module, {})[name] = value
  return tree


def _published_va_config():
  return dict(image_size_narrow=224, num_frames_narrow=16, step_narrow=2, image_size_broad=112,
              num_frames_broad=64, step_broad=4, include_video_in_broad_view=False,
              include_audio_in_broad_view=True, output_dims=128, tsm_resnet_width_multiplier=1,
              num_spectrogram_bins=80, fft_step=160, input_video_sample_rate=25,
              input_audio_sample_rate=48000, dataset_shards=32)


@pytest.fixture(scope='module')
def va_checkpoint(tmp_path_factory):
  """A V/A file whose paths/shapes are exactly the published manifest's (shared_project_1 too)."""
  from conftest import TESTDATA  # pylint: disable=g-import-not-at-top
  manifest = _manifest(TESTDATA, 'rgb_audio')
  params, state = _random_tree(manifest['params'], 0), _random_tree(manifest['state'], 1)
  path = str(tmp_path_factory.mktemp('published') / 'brave_va.npy')
  published.save(path, params, state, _published_va_config())
  return path, params, state


def test_manifest_shaped_checkpoint_loads_and_embeds_video_and_audio(va_checkpoint):
  path, _, _ = va_checkpoint
  m = published.load(path)
  assert m.broad_modalities == ('audio',)
  mc = m.model_config
  assert (mc.narrow_backbone.depth, mc.narrow_backbone.width_multiplier) == (50, 1.0)
  assert (mc.audio_backbone.depth, mc.audio_backbone.width_multiplier) == (50, 1.0)
  assert (mc.hidden_dim, mc.projection_dim, mc.shared_head) == (4096, 128, True)
  assert not any(k.startswith('shared_project_1') for k in m.params)
  video = np.random.default_rng(0).uniform(size=(1, 2, 32, 32, 3)).astype(np.float32)
  feats = m.embed_video(video)
  chex.assert_shape(feats, (1, 2048))
  chex.assert_tree_all_finite(feats)
  log_mel = np.random.default_rng(1).normal(size=(1, 32, 80)).astype(np.float32)
  audio_feats = m.embed_audio(log_mel)
  chex.assert_shape(audio_feats, (1, 2048))
  chex.assert_tree_all_finite(audio_feats)


def test_vv_manifest_loads_and_refuses_audio(testdata_dir):
  manifest = _manifest(testdata_dir, 'rgb_rgb')
  config = dict(_published_va_config(), include_video_in_broad_view=True,
                include_audio_in_broad_view=False)
  # Zero-stride arrays: shape checks only, no memory.
  fake = lambda shapes: {m: {n: np.broadcast_to(np.float32(0), s) for n, s in leaves.items()}
                         for m, leaves in _group(shapes).items()}
  m = published.from_arrays(fake(manifest['params']), fake(manifest['state']), config)
  assert m.broad_modalities == ('video',)
  assert m.model_config.broad_video_backbone.depth == 50
  with pytest.raises(ValueError, match='no broad_audio_embedding'):
    m.embed_audio(np.zeros((1, 32, 80), np.float32))


def _group(shapes):
  tree = {}
  for path, shape in shapes.items():
    module, name = path.rsplit('/', 1)
    tree.setdefault(module, {})[name] = tuple(shape)
  return tree


def _copy(tree):
  return {m: dict(leaves) for m, leaves in tree.items()}


def test_missing_parameter_is_named(va_checkpoint):
  _, params, state = va_checkpoint
  params = _copy(params)
  del params['broad_audio_embedding/res_net_v2/~/block_group_2/block_4/~/conv_1']['w']
  with pytest.raises(published.PublishedCheckpointError,
                     match=r'block_group_2/block_4/~/conv_1/w with shape \(3, 3, 256, 256\) is missing'):
    published.from_arrays(params, state, _published_va_config(), where='va.npy')


def test_mismatched_shape_is_named(va_checkpoint):
  _, params, state = va_checkpoint
  params = _copy(params)
  key = 'narrow_video_embedding/TSMResNetV2/tsm_resnet_unit_1/block_0/conv_1'
  params[key]['w'] = np.zeros((3, 3, 128, 64), np.float32)
  with pytest.raises(published.PublishedCheckpointError,
                     match=r'va.npy: parameter .*unit_1/block_0/conv_1/w has shape \(3, 3, 128, 64\)'):
    published.from_arrays(params, state, _published_va_config(), where='va.npy')


def test_unexpected_entries_and_missing_state_are_named(va_checkpoint):
  _, params, state = va_checkpoint
  extra = dict(_copy(params), **{'narrow_video_embedding/TSMResNetV2/extra': {'w': np.zeros(3)}})
  with pytest.raises(published.PublishedCheckpointError, match='unexpected parameter .*extra/w'):
    published.from_arrays(extra, state, _published_va_config())
  state = _copy(state)
  del state['shared_project/projector/batch_norm_1/~/var_ema']
  with pytest.raises(published.PublishedCheckpointError,
                     match='state shared_project/projector/batch_norm_1/~/var_ema/average'):
    published.from_arrays(params, state, _published_va_config())


def test_config_disagreeing_with_shapes_is_refused_by_path(va_checkpoint):
  _, params, state = va_checkpoint
  config = dict(_published_va_config(), tsm_resnet_width_multiplier=2)
  with pytest.raises(published.PublishedCheckpointError,
                     match=r'tsm_resnet_stem/w has shape \(7, 7, 3, 64\), but the '
                     r"config's tsm_resnet_width_multiplier=2 needs 128 output channels"):
    published.from_arrays(params, state, config)
  config = dict(_published_va_config(), output_dims=64)
  with pytest.raises(published.PublishedCheckpointError,
                     match=r'predictor/linear/w has shape \(128, 4096\), the model expects \(64, 4096\)'):
    published.from_arrays(params, state, config)


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.npy'):
    published.load(str(tmp_path / 'nope.npy'))
  np.save(tmp_path / 'array.npy', np.zeros(3))
  with pytest.raises(published.PublishedCheckpointError, match='array.npy'):
    published.load(str(tmp_path / 'array.npy'))
  np.save(tmp_path / 'dict.npy', {'params': {}})
  with pytest.raises(published.PublishedCheckpointError, match=r"dict.npy: holds \['params'\]"):
    published.load(str(tmp_path / 'dict.npy'))


def test_our_tiny_model_round_trips_through_the_published_format(tmp_path):
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  model = brave.build_model(config.model, config.data.broad_modalities)
  batch = {'narrow': {'video': jax.ShapeDtypeStruct((2, 2, 32, 32, 3), np.float32)},
           'broad': {'audio': jax.ShapeDtypeStruct((2, 64, 80), np.float32)}}
  params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
  flat_shapes = lambda tree: {f'{m}/{n}': v.shape for m, leaves in tree.items()
                              for n, v in leaves.items()}
  # Random values (no compile): the same config and arrays make the same embedding function.
  params, state = _random_tree(flat_shapes(params), 0), _random_tree(flat_shapes(state), 1)
  config.model.bn_eps = 1e-3  # Not the published 1e-5: it must travel in the extras.
  path = published.save(str(tmp_path / 'tiny.npy'), params, state,
                        published.published_config(config), published.published_extras(config))
  loaded = published.load(path)
  for field in ('narrow_backbone', 'audio_backbone', 'hidden_dim', 'projection_dim', 'shared_head',
                'bn_eps'):
    assert loaded.model_config[field] == config.model[field], field
  assert loaded.broad_modalities == ('audio',)
  chex.assert_trees_all_equal(loaded.params, params)
  chex.assert_trees_all_equal(loaded.state, state)
  with pytest.raises(ValueError, match='float32'):
    loaded.embed_video(np.zeros((1, 2, 32, 32, 3), np.uint8))


# The fields of the published `BraveConfig` (google-deepmind/brave, brave/models/brave/brave.py,
# `@chex.dataclass class BraveConfig`, in its declaration order), copied here so the test needs
# nothing outside the repository. The published code loads a checkpoint's config with
# `BraveConfig(**config)`, which raises on any other key.
PUBLISHED_BRAVECONFIG_FIELDS = (
    'include_video_in_broad_view', 'include_audio_in_broad_view', 'num_frames_narrow',
    'image_size_narrow', 'step_broad', 'num_frames_broad', 'image_size_broad', 'step_narrow',
    'output_dims', 'tsm_resnet_width_multiplier', 'num_spectrogram_bins', 'fft_step',
    'dataset_shards', 'input_video_sample_rate', 'input_audio_sample_rate')
_PublishedBraveConfig = dataclasses.make_dataclass('BraveConfig', PUBLISHED_BRAVECONFIG_FIELDS)


@pytest.mark.parametrize('name', ['brave_rgb_audio', 'brave_rgb_rgb'])
def test_exported_checkpoint_config_builds_the_published_braveconfig(name, tmp_path):
  """The exported config has exactly the published fields (so `BraveConfig(**config)` works);
  our own `bn_eps` travels beside it, under a top-level key the published loader never reads."""
  config = config_base.load(config_path(name, 'tiny'))
  path = published.save(str(tmp_path / 'm.npy'), {}, {}, published.published_config(config),
                        published.published_extras(config))
  raw = np.load(path, allow_pickle=True).item()
  assert set(raw) == {'params', 'state', 'config', published.EXTRAS_KEY}
  assert set(raw['config']) == set(PUBLISHED_BRAVECONFIG_FIELDS)
  built = _PublishedBraveConfig(**raw['config'])
  assert built.include_audio_in_broad_view == (name == 'brave_rgb_audio')
  assert raw[published.EXTRAS_KEY] == {'bn_eps': config.model.bn_eps}


def test_negative_control_a_config_with_bn_eps_is_refused():
  """The old export (bn_eps inside the config dict) cannot build the published BraveConfig, and
  `save` now refuses such a dict, naming the key."""
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  old = dict(published.published_config(config), bn_eps=config.model.bn_eps)
  with pytest.raises(TypeError, match='bn_eps'):
    _PublishedBraveConfig(**old)
  with pytest.raises(ValueError, match=r"\['bn_eps'\] are not fields of the published"):
    published.save('/nonexistent/m.npy', {}, {}, old)
