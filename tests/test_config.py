"""Config validation: every bad field is refused before anything compiles, by name."""
import pytest

from brave_jax import config_base
from conftest import config_path

CONFIG_NAMES = ('brave_rgb_audio', 'brave_rgb_rgb', 'brave_rgb_flow', 'brave_rgb_flow_audio',
                'brave_rgb_rc')


@pytest.mark.parametrize('name', CONFIG_NAMES)
@pytest.mark.parametrize('variant', (None, 'tiny', 'demo'))
def test_shipped_configs_validate(name, variant):
  config = config_base.load(config_path(name, variant))
  config_base.validate(config)


def test_full_va_config_has_published_defaults():
  c = config_base.load(config_path('brave_rgb_audio', None))
  assert (c.data.narrow.num_frames, c.data.narrow.frame_step, c.data.narrow.image_size) == (16, 2, 224)
  assert (c.data.broad.num_frames, c.data.broad.frame_step, c.data.broad.image_size) == (64, 4, 112)
  assert c.data.broad_modalities == ('audio',)
  assert c.training.batch_size == 512 and c.training.num_steps == 300_000
  assert config_base.peak_learning_rate(c) == 1.0
  assert c.optimizer.lr_multipliers == (('.*predictor.*', 10.0),)


@pytest.mark.parametrize('name, modalities', [
    ('brave_rgb_flow', ('flow',)), ('brave_rgb_flow_audio', ('flow', 'audio')),
    ('brave_rgb_rc', ('rc',))])
def test_broad_view_configs_pick_their_modalities(name, modalities):
  c = config_base.load(config_path(name, None))
  assert c.data.broad_modalities == modalities
  assert not c.data.random_convolve_broad_video  # 'rc' convolves itself; 'video' is absent.


def test_vv_config_convolves_broad_rgb():
  c = config_base.load(config_path('brave_rgb_rgb', None))
  assert c.data.broad_modalities == ('video',)
  assert c.data.random_convolve_broad_video


@pytest.mark.parametrize('field, value, message', [
    ('data.broad_modalities', ('audio', 'smell'), 'unknown modality'),
    ('data.broad_modalities', (), 'at least one'),
    ('data.broad_start', 'middle', 'broad_start'),
    ('optimizer.variant', 'fixed', 'optimizer.variant'),
    ('data.narrow.image_size', 16, 'at least 32'),
    ('data.narrow.num_frames', 0, 'positive integer'),
    ('model.narrow_backbone.depth', 42, 'must be one of'),
    ('model.compute_dtype', 'float8', 'compute_dtype'),
    ('optimizer.name', 'sgd', 'optimizer.name'),
    ('data.augment.rc_kernel_sizes', (1, 4), 'odd'),
    ('optimizer.warmup_steps', 10**9, 'warmup_steps'),
    ('eval.svm_c', -1.0, 'eval.svm_c'),
    ('data.tf_intra_op_threads', -2, 'tf_intra_op_threads'),
])
def test_bad_fields_are_named(field, value, message):
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_base.ConfigError, match=message) as error:
    config_base.validate(config)
  assert f'config.{field.rsplit(".", 1)[0]}' in str(error.value)


def test_uneven_global_batch_is_refused_before_compiling():
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  config.training.batch_size = 6
  with pytest.raises(config_base.ConfigError, match='does not split evenly'):
    config_base.validate(config, num_processes=1, num_local_devices=4)


def test_unknown_variant_is_refused():
  with pytest.raises(config_base.ConfigError, match='unknown config variant'):
    config_base.load(config_path('brave_rgb_audio', 'huge'))


def test_audio_window_too_short_is_refused():
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  config.data.broad.update(num_frames=2, frame_step=1)
  config.data.narrow.update(num_frames=1, frame_step=1)
  with pytest.raises(config_base.ConfigError, match='spectrogram frames'):
    config_base.validate(config)
