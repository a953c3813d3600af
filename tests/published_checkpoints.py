"""Full-size published-model checkpoints rebuilt from the parameter manifest and the crc32 rule.

The goldens `published_forward.npz` and `train_step.npz` were computed by the
published BraVe code on checkpoints whose every array (parameters and batch-norm
state) is set from its path and shape alone by the rule in `published_array`.
Rebuilding them here from `official_param_manifest.json` (every path and shape
of the published V/A `rgb_audio` and V/V `rgb_rgb` models) means nothing of our
model's own init defines the arrays the tests compare.
"""
from __future__ import annotations

import json
import pathlib
import zlib
from typing import Any

import numpy as np

TESTDATA = pathlib.Path(__file__).parent / 'testdata'

# The published default model config, with the broad views set per setup by `published_config`.
PUBLISHED_CONFIG = dict(
    image_size_broad=112, num_frames_broad=64, step_broad=4, image_size_narrow=224,
    num_frames_narrow=16, step_narrow=2, output_dims=128, tsm_resnet_width_multiplier=1,
    num_spectrogram_bins=80, fft_step=160, dataset_shards=[], input_audio_sample_rate=48_000,
    input_video_sample_rate=25.0)


def published_config(setup: str) -> dict[str, Any]:
  """The published default config dict for 'rgb_audio' (V/A) or 'rgb_rgb' (V/V)."""
  return dict(PUBLISHED_CONFIG, include_video_in_broad_view=setup == 'rgb_rgb',
              include_audio_in_broad_view=setup == 'rgb_audio')


def published_array(path: str, shape) -> np.ndarray:
  """The goldens' rule: the array at '<module>/<name>' drawn from a crc32-seeded generator."""
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


def published_tree(shapes: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
  """Haiku-style {module: {name: array}} for a manifest's {path: shape}."""
  tree: dict[str, dict[str, np.ndarray]] = {}
  for path, shape in shapes.items():
    module, name = path.rsplit('/', 1)
    tree.setdefault(module, {})[name] = published_array(path, shape)
  return tree


def published_checkpoint(setup: str) -> tuple[dict, dict, dict]:
  """(params, state, config) of the full-size published `setup` checkpoint."""
  manifest = json.loads((TESTDATA / 'official_param_manifest.json').read_text())[setup]
  return (published_tree(manifest['params']), published_tree(manifest['state']),
          published_config(setup))


def relative_max_error(ours, theirs) -> float:
  """max |ours - theirs| / max |theirs|."""
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) / np.max(np.abs(theirs)))
