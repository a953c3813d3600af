"""Tests for the embedded synthetic dataset: determinism, format, caching, atomicity, class signal."""
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brave_jax.data import dmvr_format
from brave_jax.data import flow as flow_lib
from brave_jax.data import synthetic

import shard_test_utils


def _tiny_config(cache_dir, **overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      cache_dir=str(cache_dir), num_classes=3, train_videos_per_class=2, test_videos_per_class=2,
      seconds=1.0, height=32, width=40, seed=0))
  c.update(overrides)
  return c


@pytest.fixture(scope='module')
def tiny_dataset(tmp_path_factory):
  cache = tmp_path_factory.mktemp('synth_cache')
  return synthetic.ensure_dataset(_tiny_config(cache), show_progress=False), cache


def test_shards_parse_with_labels_frames_and_waveform(tiny_dataset):
  dataset, _ = tiny_dataset
  names = dataset['class_names']
  assert names == sorted(names) and len(names) == 3
  for split, per_class in (('train', 2), ('test', 2)):
    examples = [e for p in dataset[split] for e in shard_test_utils.parse_labelled_clips(p)]
    assert len(examples) == 3 * per_class
    assert sorted(e[0] for e in examples) == sorted(list(range(3)) * per_class)
    for label, text, frames, wave in examples:
      assert text == names[label]  # Label index == position in the sorted class names.
      assert frames.shape == (25, 32, 40, 3)
      assert wave.shape == (synthetic.AUDIO_RATE,)
      assert np.abs(wave).max() <= 1.0 and np.abs(wave).max() > 0.05


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
  a = synthetic.write_dataset(_tiny_config(tmp_path), str(tmp_path / 'a'), show_progress=False)
  b = synthetic.write_dataset(_tiny_config(tmp_path), str(tmp_path / 'b'), show_progress=False)
  c = synthetic.write_dataset(_tiny_config(tmp_path, seed=1), str(tmp_path / 'c'),
                              show_progress=False)
  read = lambda paths: [open(p, 'rb').read() for p in paths]
  assert read(a['train'] + a['test']) == read(b['train'] + b['test'])
  assert read(a['train']) != read(c['train'])
  assert a['class_names'] == c['class_names']
  assert synthetic.config_hash(_tiny_config(tmp_path)) != synthetic.config_hash(
      _tiny_config(tmp_path, seed=1))


def test_cache_is_reused_without_regenerating(tiny_dataset, monkeypatch):
  dataset, cache = tiny_dataset
  mtimes = [os.path.getmtime(p) for p in dataset['train']]
  def fail(*args, **kwargs):
    raise AssertionError('regenerated a cached dataset')
  monkeypatch.setattr(synthetic, 'write_dataset', fail)
  again = synthetic.ensure_dataset(_tiny_config(cache), show_progress=False)
  assert again == dataset
  assert [os.path.getmtime(p) for p in again['train']] == mtimes


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
  calls = []
  real_render = synthetic.render_video
  def crash_on_third(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt('simulated interruption')
    return real_render(*args, **kwargs)
  monkeypatch.setattr(synthetic, 'render_video', crash_on_third)
  config = _tiny_config(tmp_path / 'cache', seed=7)
  with pytest.raises(KeyboardInterrupt):
    synthetic.ensure_dataset(config, show_progress=False)
  assert os.listdir(tmp_path / 'cache') == []  # No temp dir, no half dataset.
  monkeypatch.setattr(synthetic, 'render_video', real_render)
  dataset = synthetic.ensure_dataset(config, show_progress=False)
  assert len([e for p in dataset['train'] for e in shard_test_utils.parse_labelled_clips(p)]) == 6


def test_flow_is_extracted_like_the_converter_does(tmp_path):
  rng = np.random.default_rng(0)
  frames = synthetic.render_video(rng, 'square', 'horizontal', 10, 32, 40)
  flow = flow_lib.compute_flow(frames, synthetic.FLOW_METHOD)
  assert frames.shape == (10, 32, 40, 3) and flow.shape == (10, 32, 40, 2)
  assert np.abs(flow[..., 0]).max() > 0.5  # The object moves horizontally by pixels per frame.
  dataset = synthetic.write_dataset(_tiny_config(tmp_path, num_classes=1, test_videos_per_class=1),
                                    str(tmp_path / 'flow'), with_flow=True, show_progress=False)
  record = next(iter(tf.data.TFRecordDataset(dataset['train'][0])))
  _, seq = tf.io.parse_single_sequence_example(
      record, sequence_features={dmvr_format.FLOW_KEY: tf.io.FixedLenSequenceFeature([], tf.string)})
  assert seq[dmvr_format.FLOW_KEY].shape[0] == 25


def test_class_factors_cover_all_classes_and_reject_too_many():
  factors = synthetic.class_factors(10)
  assert len(set(factors)) == 10
  assert {s for s, _ in factors} == {synthetic.ANY_SHAPE}  # Shape never names the class.
  assert len({synthetic.class_sound(c) for c in range(synthetic.MAX_CLASSES)}) == synthetic.MAX_CLASSES
  with pytest.raises(ValueError, match='num_classes'):
    synthetic.class_factors(synthetic.MAX_CLASSES + 1)


def test_class_is_not_in_mean_colour_but_is_in_audio():
  """Mean RGB (what a random net reads first) is near chance; a coarse spectrum is near perfect."""
  num_classes, per_class, seconds = 5, 12, 0.5
  colour, spectrum, labels = [], [], []
  for i in range(per_class):
    for label, (shape, motion) in enumerate(synthetic.class_factors(num_classes)):
      rng = np.random.default_rng([123, 0, label, i])
      frames = synthetic.render_video(rng, shape, motion, 4, 24, 30)
      wave = synthetic.render_audio(rng, label, seconds)
      colour.append(frames.reshape(-1, 3).mean(0))
      spec = np.abs(np.fft.rfft(wave))[:int(8000 * seconds)]
      spectrum.append(np.log1p(spec.reshape(80, -1).mean(1)))
      labels.append(label)
  labels = np.array(labels)
  probe = lambda x: cross_val_score(
      make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), np.array(x), labels,
      cv=4).mean()
  colour_acc, audio_acc = probe(colour), probe(spectrum)
  print(f'mean-colour probe {colour_acc:.2f}, audio-spectrum probe {audio_acc:.2f}, '
        f'chance {1 / num_classes:.2f}')
  assert colour_acc < 0.4
  assert audio_acc > 0.9
