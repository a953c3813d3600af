"""Tests for the second, independent synthetic dataset: format, determinism, balance, selection."""
import dataclasses
import os

import ml_collections
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax.data import synthetic
from brave_jax.data import synthetic_independent as si

import shard_test_utils

TINY = dataclasses.replace(si.DEFAULT_SPEC, seconds=1.0, height=24, width=32, train_per_class=2,
                           test_per_class=1)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  cache = tmp_path_factory.mktemp('independent')
  config = ml_collections.ConfigDict(dict(cache_dir=str(cache), seed=0))
  return si.ensure_dataset(config, show_progress=False, spec=TINY)


def test_shapes_rates_and_balanced_labels(tiny):
  assert tiny['class_names'] == sorted(tiny['class_names']) == list(si.CLASS_NAMES)
  for split, per_class in (('train', TINY.train_per_class), ('test', TINY.test_per_class)):
    examples = shard_test_utils.parse_labelled_clips(tiny[split])
    labels = [e[0] for e in examples]
    assert np.bincount(labels, minlength=len(si.CLASSES)).tolist() == [per_class] * len(si.CLASSES)
    for label, text, frames, wave in examples:
      assert text == si.CLASS_NAMES[label]
      assert frames.shape == (TINY.num_frames, 24, 32, 3) == (12, 24, 32, 3)
      assert wave.shape == (TINY.audio_rate,)  # 1 s at 16 kHz.
      assert 0.1 < np.abs(wave).max() <= 1.0


def test_generation_is_deterministic_and_seeded(tmp_path):
  a = si.write_dataset(str(tmp_path / 'a'), TINY, show_progress=False)
  b = si.write_dataset(str(tmp_path / 'b'), TINY, show_progress=False)
  c = si.write_dataset(str(tmp_path / 'c'), dataclasses.replace(TINY, seed=1), show_progress=False)
  read = lambda paths: b''.join(open(p, 'rb').read() for p in paths)
  assert read(a['train']) == read(b['train']) and read(a['test']) == read(b['test'])
  assert read(a['train']) != read(c['train'])  # Negative control: the seed changes the content.


def test_motion_and_sound_differ_between_classes():
  """Frame-to-frame change and the sound's spectrum depend on the class, not just nuisances."""
  spec = dataclasses.replace(si.DEFAULT_SPEC, seconds=2.0)
  motion, centroid = {}, {}
  for name in si.CLASS_NAMES:
    rng = np.random.default_rng([3, si.CLASS_NAMES.index(name)])
    frames, events = si.render_video(rng, name, spec)
    wave = si.render_audio(rng, name, events, spec)
    motion[name] = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean()
    power = np.abs(np.fft.rfft(wave)) ** 2
    centroid[name] = float((np.fft.rfftfreq(len(wave), 1 / spec.audio_rate) * power).sum()
                           / power.sum())
  assert motion['hop'] > 0 and motion['jitter'] > 0
  assert len({round(v) for v in centroid.values()}) >= 5  # Sounds are not one spectrum.


def test_config_selects_it_and_validate_names_the_rates():
  config = config_base.load('configs/brave_rgb_audio.py:demo')
  config.data.synthetic.generator = 'independent'
  with pytest.raises(config_base.ConfigError, match='data.video_fps'):
    config_base.validate(config)
  config.data.video_fps = config_base.INDEPENDENT_FPS
  config.data.audio_sample_rate = config_base.INDEPENDENT_AUDIO_RATE
  config_base.validate(config)
  assert config_base.INDEPENDENT_FPS == si.DEFAULT_SPEC.fps
  assert config_base.INDEPENDENT_AUDIO_RATE == si.DEFAULT_SPEC.audio_rate
  config.data.synthetic.generator = 'other'
  with pytest.raises(config_base.ConfigError, match='data.synthetic.generator'):
    config_base.validate(config)


def test_ensure_dataset_dispatches_on_the_generator_field(tmp_path, monkeypatch):
  monkeypatch.setattr(si, 'DEFAULT_SPEC', TINY)
  config = ml_collections.ConfigDict(dict(cache_dir=str(tmp_path), seed=0, generator='independent'))
  dataset = synthetic.ensure_dataset(config, show_progress=False)
  assert os.path.basename(os.path.dirname(dataset['train'][0])).startswith(f'{si.NAME}-')
  assert dataset['class_names'] == list(si.CLASS_NAMES)
  assert synthetic.generator_name(ml_collections.ConfigDict(dict(seed=0))) == 'embedded'
