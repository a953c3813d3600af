"""TFDS datasets read by name, no conversion: a real dataset written with TFDS's own builder API."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from brave_jax import evaluate
from brave_jax import published
from brave_jax.data import dmvr_format
from brave_jax.data import pipeline
from brave_jax.data import tfds_reader
from brave_jax.eval import splits
import eval_test_utils

CLASSES = ['dark', 'mid', 'bright']
RATE = 48000


def _video(label, i, split):
  # Smooth frames (a moving ramp around the class's brightness, little noise): two JPEG encoders
  # agree on those to a few levels, whereas on pixel noise they differ by ~8 levels on average.
  rng = np.random.default_rng([label, i, split == 'test'])
  level = (label + 1) / 4 * 255
  t, y, x = np.meshgrid(np.arange(10), np.arange(36), np.arange(44), indexing='ij')
  ramp = 20 * np.sin((x + 2 * y) / 9 + t / 3 + rng.uniform(0, 6))[..., None]
  return np.clip(level + ramp + 2 * rng.normal(size=(10, 36, 44, 3)), 0, 255).astype(np.uint8)


def _audio(label, i):
  t = np.arange(int(0.4 * RATE)) / RATE
  return (8000 * np.sin(2 * np.pi * 200 * (label + 1) * t + i)).astype(np.int16)


class BraveTinyAv(tfds.core.GeneratorBasedBuilder):
  """3 classes of brightness, 10 frames of 36x44, a tone per class; JPEG frames like UCF101's build."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'video': tfds.features.Video(shape=(None, 36, 44, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(names=CLASSES),
        'audio': tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=RATE)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples('train', 3), 'test': self._generate_examples('test', 1)}

  def _generate_examples(self, split, per_class):
    for i in range(per_class):
      for label in range(len(CLASSES)):
        yield f'{split}_{label}_{i}', {'video': _video(label, i, split), 'label': label,
                                        'audio': _audio(label, i)}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  BraveTinyAv(data_dir=data_dir).download_and_prepare()
  return data_dir


@pytest.fixture
def config(tiny_va_config):
  tiny_va_config.eval.update(num_temporal_crops=2, num_spatial_crops=1, train_passes=1,
                             batch_size=8, svm_c=1.0)
  return tiny_va_config


def test_tfds_clips_match_the_same_videos_as_dmvr_shards(prepared, config, tmp_path):
  source = tfds_reader.TfdsSplit('brave_tiny_av', 'test', prepared)
  assert tfds_reader.class_names(source) == CLASSES and tfds_reader.num_examples(source) == 3
  shards = dmvr_format.write_shards(
      [dmvr_format.encode_clip(dmvr_format.Clip(frames_TxHxWx3=_video(l, 0, 'test'),
                                                waveform=_audio(l, 0) / 32768.0, label_index=l))
       for l in range(3)], str(tmp_path), 'test', 1)
  from_tfds = list(pipeline.make_eval_dataset(config, source, mode='test', include_audio=True))
  from_dmvr = list(pipeline.make_eval_dataset(config, shards, mode='test', include_audio=True))
  assert len(from_tfds) == len(from_dmvr) == 1
  # TFDS stores examples in its own (key-hashed) order: line the clips up by label.
  a, b = ({k: v[np.argsort(x['label'], kind='stable')] for k, v in x.items()}
          for x in (from_tfds[0], from_dmvr[0]))
  np.testing.assert_array_equal(a['label'], b['label'])
  assert a['video'].shape == b['video'].shape == (6, 4, 32, 32, 3)
  assert np.mean(np.abs(a['video'] - b['video'])) < 0.02  # Two JPEG encoders, same frames.
  np.testing.assert_allclose(a['audio'], b['audio'], rtol=1e-5, atol=1e-5)  # int16 / 32768.


def test_tfds_finetune_batches_and_clear_errors(prepared, config):
  source = tfds_reader.TfdsSplit('brave_tiny_av', 'train', prepared)
  batch = next(pipeline.make_finetune_dataset(config, source, batch_size=4, num_local_devices=2))
  assert batch['video'].shape == (2, 2, 4, 32, 32, 3) and batch['label'].shape == (2, 2)
  assert set(np.unique(batch['label'])) <= {0, 1, 2}
  with pytest.raises(tfds_reader.TfdsError, match='no split'):
    tfds_reader.builder(tfds_reader.TfdsSplit('brave_tiny_av', 'validation', prepared))
  with pytest.raises(tfds_reader.TfdsError, match='tfds build'):
    tfds_reader.builder(tfds_reader.TfdsSplit('no_such_dataset_xyz', 'train', prepared))
  config.data.audio_sample_rate = 16000
  with pytest.raises(tfds_reader.TfdsError, match='48000 Hz'):
    pipeline.make_eval_dataset(config, source, mode='test', include_audio=True)


def test_linear_cli_end_to_end_on_tfds(prepared, config, tmp_path):
  """`--tfds` through the CLI, a published-format checkpoint, class names from TFDS's ClassLabel."""
  source = eval_test_utils.random_source(config)
  npy = published.save(str(tmp_path / 'model.npy'), source.params, source.state,
                       published.published_config(config))
  spec = os.path.join(os.path.dirname(__file__), '..', 'configs', 'brave_rgb_audio.py:tiny')
  out = tmp_path / 'eval'
  assert evaluate.main([f'--checkpoint={npy}', f'--config={spec}', '--tfds=brave_tiny_av',
                        f'--tfds_data_dir={prepared}', f'--output_dir={out}', '--temporal_crops=2',
                        '--spatial_crops=1', '--train_passes=1', '--svm_c=1.0',
                        '--batch_size=8']) == 0
  written = json.loads((out / 'eval.json').read_text())
  assert [c['name'] for c in written['per_class']] == CLASSES
  assert written['data']['num_train_videos'] == 9 and written['data']['num_test_videos'] == 3
  assert written['data']['train_shards'].startswith('tfds:brave_tiny_av[train]')
  assert 0.0 <= written['test']['top1'] <= 1.0
  with pytest.raises(ValueError, match='not both'):
    splits.resolve(config, 'a', 'b', tfds_name='brave_tiny_av')
