"""Shared by the evaluation tests: tiny labelled shards and random model variables made in numpy."""
from __future__ import annotations

import jax
import numpy as np

from brave_jax.models import classifier as classifier_lib

_BUILD_CLASSIFIER = classifier_lib.build_classifier  # The real one, before any test patches it.

NUM_CLASSES = 3


def write_tiny_shards(directory, split, videos_per_class, seed, num_classes=NUM_CLASSES,
                      with_audio=False):
  """Class k: frames of uniform brightness (k+1)/4 plus noise; 10 frames of 36x44 (+ a k-pitched tone)."""
  from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  examples = []
  for i in range(videos_per_class):
    for label in range(num_classes):
      level = (label + 1) / 4 * 255
      frames = np.clip(level + 20 * rng.normal(size=(10, 36, 44, 3)), 0, 255).astype(np.uint8)
      wave = None
      if with_audio:
        t = np.arange(int(0.4 * 48000)) / 48000
        wave = (0.5 * np.sin(2 * np.pi * 300 * (label + 1) * t)).astype(np.float32)
      examples.append(dmvr_format.encode_clip(dmvr_format.Clip(
          frames_TxHxWx3=frames, waveform=wave, label_index=label, label_text=f'class_{label}',
          video_id=f'{split}_{label}_{i}')))
  paths = dmvr_format.write_shards(examples, str(directory), split, num_shards=2)
  return ','.join(paths)


def random_variables(model, config, seed=0):
  """Params/state shaped like model.init's, filled in numpy (a jitted init is slow on a busy CPU)."""
  from brave_jax.eval import backbone  # pylint: disable=g-import-not-at-top
  params_shape, state_shape = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                             backbone.init_batch(config))
  rng = np.random.default_rng(seed)

  def param(path, s):
    name = path[-1].key
    if name == 'w':
      return (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(s.dtype)
    return (np.ones if name == 'scale' else np.zeros)(s.shape, s.dtype)

  def stat(path, s):
    is_var = 'var_ema' in path[0].key and path[-1].key != 'counter'
    return (np.ones if is_var else np.zeros)(s.shape, s.dtype)
  return (jax.tree_util.tree_map_with_path(param, params_shape),
          jax.tree_util.tree_map_with_path(stat, state_shape))


def random_source(config, seed=0, kind='workdir'):
  """A backbone.Source with numpy-random weights (as if restored from a workdir)."""
  from brave_jax.eval import backbone  # pylint: disable=g-import-not-at-top
  model = backbone.build_model(config)
  params, state = random_variables(model, config, seed)
  return backbone.Source(model, config.model, tuple(config.data.broad_modalities), params, state,
                         60, kind)


def tiny_classifier(model_config, num_classes, **kwargs):
  """classifier.build_classifier with a one-layer stand-in backbone under the same module root.

  Trains the fine-tuning plumbing (data, loop, resume, test crops, reports) without compiling a
  TSM-ResNet.
  """
  import haiku as hk  # pylint: disable=g-import-not-at-top

  def backbone(x_BxTxHxWx3, is_training, axis):
    with hk.experimental.name_scope('narrow_video_embedding'):
      h = hk.Linear(8, name='linear')(x_BxTxHxWx3.mean(axis=(1, 2, 3)))
      h = hk.BatchNorm(True, True, 0.9, cross_replica_axis=axis, name='batch_norm')(h, is_training)
    return jax.nn.relu(h)
  return _BUILD_CLASSIFIER(model_config, num_classes, backbone=backbone, **kwargs)
