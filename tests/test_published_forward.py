"""Published checkpoints give the published embeddings (tests/testdata/published_forward.npz).

The golden features were computed by the published BraVe code for full-size V/A
and V/V checkpoints whose every array follows a rule of its path and shape
(shared/reference/golden/README.md, restated in `_published_array`). Here the
same checkpoints are rebuilt from the published parameter manifest and that
rule alone (nothing from our model's init defines them), written in the
published `.npy` format, loaded with `published.load`, and embedded.
"""
import json
import time
import zlib

import numpy as np
import pytest

from brave_jax import published

# The published default model config, with the broad views set per setup.
_PUBLISHED_CONFIG = dict(
    image_size_broad=112, num_frames_broad=64, step_broad=4, image_size_narrow=224,
    num_frames_narrow=16, step_narrow=2, output_dims=128, tsm_resnet_width_multiplier=1,
    num_spectrogram_bins=80, fft_step=160, dataset_shards=[], input_audio_sample_rate=48_000,
    input_video_sample_rate=25.0)
MAX_RELATIVE_ERROR = 1e-4


def _published_array(path: str, shape) -> np.ndarray:
  """The golden README's rule: the array at '<module>/<name>' drawn from a crc32-seeded generator."""
  module, name = path.rsplit('/', 1)
  shape = tuple(shape)
  rng = np.random.default_rng(zlib.crc32(path.encode()))
  if name == 'w':
    value = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))
  elif name == 'b':
    value = 0.01 * rng.standard_normal(shape)
  elif name == 'scale':
    value = rng.uniform(0.8, 1.2, shape)
  elif name == 'offset':
    value = 0.05 * rng.standard_normal(shape)
  elif name == 'average' and module.endswith('mean_ema'):
    value = 0.1 * rng.standard_normal(shape)
  elif name == 'average' and module.endswith('var_ema'):
    value = rng.uniform(0.5, 2.0, shape)
  elif name == 'counter':
    return np.zeros(shape, np.int32)
  else:  # 'hidden'
    value = np.zeros(shape)
  return value.astype(np.float32)


def _tree(shapes):
  tree = {}
  for path, shape in shapes.items():
    module, name = path.rsplit('/', 1)
    tree.setdefault(module, {})[name] = _published_array(path, shape)
  return tree


def _relative_max_error(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))


@pytest.mark.parametrize('setup', ['rgb_audio', 'rgb_rgb'])
def test_published_checkpoint_gives_the_published_embeddings(setup, testdata_dir, tmp_path):
  started = time.perf_counter()
  manifest = json.loads((testdata_dir / 'official_param_manifest.json').read_text())[setup]
  golden = np.load(testdata_dir / 'published_forward.npz')
  config = dict(_PUBLISHED_CONFIG, include_video_in_broad_view=setup == 'rgb_rgb',
                include_audio_in_broad_view=setup == 'rgb_audio')
  path = published.save(str(tmp_path / f'brave_{setup}.npy'), _tree(manifest['params']),
                        _tree(manifest['state']), config)
  m = published.load(path)
  errors = {}
  if setup == 'rgb_audio':
    errors['va_narrow_feats'] = _relative_max_error(m.embed_video(golden['narrow_video']),
                                                    golden['va_narrow_feats'])
    errors['va_broad_audio_feats'] = _relative_max_error(m.embed_audio(golden['broad_audio']),
                                                         golden['va_broad_audio_feats'])
  else:
    errors['vv_narrow_feats'] = _relative_max_error(m.embed_video(golden['narrow_video']),
                                                    golden['vv_narrow_feats'])
    errors['vv_broad_video_feats'] = _relative_max_error(
        m.embed_broad('video', golden['broad_video']), golden['vv_broad_video_feats'])
  print(f'{setup}: relative max errors {errors} ({time.perf_counter() - started:.1f} s)')
  for key, error in errors.items():
    assert error < MAX_RELATIVE_ERROR, (key, error)
