"""Config files and their validation: every shipped config x variant loads and validates, the
CPU variants shrink sizes and keep the view structure, and every bad field is refused before
anything compiles, by name."""
import pytest

from brave_jax import config_base
from brave_jax import cpu_variants
from conftest import config_path, REPO_ROOT

CONFIG_NAMES = tuple(sorted(p.stem for p in (REPO_ROOT / 'configs').glob('*.py')))

# Fields a CPU variant may change: sizes, lengths and the evaluation protocols' settings. Anything
# else (modalities, sampler, augmentation chain, random convolution, optimizer rules, dtype) must
# stay as in the full config, so a tiny run exercises the code a full one runs.
VARIANT_FIELDS = (
    'data.narrow.', 'data.broad.num_frames', 'data.broad.frame_step', 'data.broad.image_size',
    'model.narrow_backbone.', 'model.broad_video_backbone.', 'model.audio_backbone.depth',
    'model.audio_backbone.width_multiplier', 'model.hidden_dim', 'model.projection_dim',
    'training.', 'optimizer.base_learning_rate', 'optimizer.warmup_steps',
    'eval.', 'finetune.', 'audio_eval.', 'knn_monitor.',
    'data.augment_on')  # On a CPU the host chain is the faster one (cpu_variants.augment_on_host).
# Only :demo also changes its data and recipe (its synthetic set, milder crops, the optimizer).
DEMO_ONLY_FIELDS = ('data.synthetic.', 'data.augment.crop_area_range',
                    'data.augment.crop_aspect_range', 'data.augment.grayscale_prob',
                    'optimizer.variant',
                    'data.jpeg_decode')  # 32-px views: cpu_variants.decode_for_small_views.
# Fields every CPU variant must make smaller than the full config's.
SHRUNK_FIELDS = (
    'data.narrow.num_frames', 'data.narrow.image_size',
    'data.broad.num_frames', 'data.broad.image_size',
    'model.narrow_backbone.depth', 'model.narrow_backbone.width_multiplier',
    'model.broad_video_backbone.depth', 'model.audio_backbone.depth',
    'model.hidden_dim', 'model.projection_dim',
    'training.batch_size', 'training.num_steps', 'optimizer.warmup_steps',
    'eval.num_frames', 'eval.image_size', 'finetune.batch_size', 'finetune.num_steps',
    'knn_monitor.max_videos')


def _leaves(config, prefix: str = '') -> dict:
  """{'section.field': value} for every leaf of a ConfigDict."""
  out = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      out.update(_leaves(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _changed_fields(name: str, variant: str) -> set[str]:
  full = _leaves(config_base.load(config_path(name, None)))
  small = _leaves(config_base.load(config_path(name, variant)))
  assert full.keys() == small.keys()
  return {field for field in full if full[field] != small[field]}


def test_every_config_file_is_covered():  # An empty glob would parametrize nothing.
  assert {'brave_rgb_audio', 'brave_rgb_rgb', 'brave_rgb_flow', 'brave_rgb_flow_audio',
          'brave_rgb_rc'} <= set(CONFIG_NAMES)


@pytest.mark.parametrize('name', CONFIG_NAMES)
@pytest.mark.parametrize('variant', (None, 'tiny', 'demo'))
def test_shipped_configs_validate(name, variant):
  config = config_base.load(config_path(name, variant))
  config_base.validate(config)


@pytest.mark.parametrize('name', CONFIG_NAMES)
@pytest.mark.parametrize('variant', cpu_variants.VARIANTS)
def test_cpu_variants_change_only_sizes_and_protocols(name, variant):
  allowed = VARIANT_FIELDS + (DEMO_ONLY_FIELDS if variant == 'demo' else ())
  changed = _changed_fields(name, variant)
  assert {f for f in changed if not f.startswith(allowed)} == set()
  assert set(SHRUNK_FIELDS) <= changed


@pytest.mark.parametrize('name', CONFIG_NAMES)
@pytest.mark.parametrize('variant', cpu_variants.VARIANTS)
def test_cpu_variants_shrink_and_keep_peak_lr_at_half(name, variant):
  full = _leaves(config_base.load(config_path(name, None)))
  config = config_base.load(config_path(name, variant))
  small = _leaves(config)
  assert {f: (small[f], full[f]) for f in SHRUNK_FIELDS if not small[f] < full[f]} == {}
  assert config_base.peak_learning_rate(config) == 0.5  # Full size: 1.0.
  sizes = {(config.model[b].depth, config.model[b].width_multiplier)
           for b in cpu_variants.BACKBONES}
  assert len(sizes) == 1  # One size for every backbone, used or not.


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_only_demo_changes_the_recipe_and_probes_after_training(name):
  full, tiny, demo = (config_base.load(config_path(name, v)) for v in (None, 'tiny', 'demo'))
  assert full.optimizer.variant == tiny.optimizer.variant == 'published'
  assert demo.optimizer.variant == 'corrected'
  assert demo.data.augment.grayscale_prob > full.data.augment.grayscale_prob
  assert demo.data.synthetic.train_videos_per_class > full.data.synthetic.train_videos_per_class
  assert demo.eval.run_after_training and demo.eval.compare_random_init
  assert not (full.eval.run_after_training or tiny.eval.run_after_training)


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
    ('data.jpeg_decode', 'fast', 'data.jpeg_decode: must be one of'),
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


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_unknown_variant_is_refused_naming_the_choices(name):
  with pytest.raises(config_base.ConfigError,
                     match=r"unknown config variant 'huge'; choose from \('tiny', 'demo'\)"):
    config_base.load(config_path(name, 'huge'))


def test_audio_window_too_short_is_refused():
  config = config_base.load(config_path('brave_rgb_audio', 'tiny'))
  config.data.broad.update(num_frames=2, frame_step=1)
  config.data.narrow.update(num_frames=1, frame_step=1)
  with pytest.raises(config_base.ConfigError, match='spectrogram frames'):
    config_base.validate(config)
