"""Frames both RGB views use are decoded once (pipeline._shared_full_decode).

With the published sampler the broad window starts at the narrow clip's first frame, so at full
size half of the narrow frames are broad frames too. The pipeline cuts those from the broad
view's decode; the batches must be bit for bit those of decoding every view on its own.
"""
import numpy as np
import pytest
import tensorflow as tf

import conftest
from brave_jax import config_base
from brave_jax.data import dmvr_format
from brave_jax.data import pipeline
from brave_jax.data import sampling

H, W, T = 40, 48, 24


def _clip(i):
  """Frames that differ from each other everywhere, so a frame taken from the wrong place shows."""
  rng = np.random.default_rng(i)
  frames = rng.integers(0, 256, (T, H, W, 3)).astype(np.uint8)
  return dmvr_format.Clip(frames_TxHxWx3=frames, label_index=i % 2, label_text=f'c{i % 2}',
                          video_id=f'v{i}')


@pytest.fixture(scope='module')
def shard_dir(tmp_path_factory):
  return conftest.write_clip_shards(tmp_path_factory.mktemp('shards'), [_clip(i) for i in range(4)])


def _config(name, augment_on):
  c = config_base.load(conftest.config_path(name, 'tiny'))
  c.data.update(num_parallel_calls=2, augment_on=augment_on)
  c.training.batch_size = 4
  return c


def _batch(shard_dir, config):
  batch = next(pipeline.make_train_dataset(config, shard_dir, num_local_devices=1, seed=3))
  return {k: np.asarray(v) for k, v in _flat(batch)}


_DEFAULT_BATCHES = {}  # (config name, augment_on) -> the default pipeline's first batch.


def _default_batch(shard_dir, name, augment_on):
  """The first batch with nothing patched, built once per module (each build takes seconds)."""
  key = (shard_dir, name, augment_on)
  if key not in _DEFAULT_BATCHES:
    _DEFAULT_BATCHES[key] = _batch(shard_dir, _config(name, augment_on))
  return _DEFAULT_BATCHES[key]


def _flat(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flat(v, f'{prefix}/{k}')
  else:
    yield prefix, tree


@pytest.mark.parametrize('narrow_frames,narrow_step,broad_frames,broad_step',
                         [(16, 2, 64, 4), (4, 2, 8, 4), (4, 3, 8, 2), (16, 1, 64, 4), (5, 4, 3, 4),
                          (3, 5, 2, 7)])
def test_shared_frames_are_the_same_frame_indices(narrow_frames, narrow_step, broad_frames,
                                                  broad_step):
  shared = sampling.frames_shared_at_narrow_start(narrow_frames, narrow_step, broad_frames,
                                                  broad_step)
  for n in (7, 300):  # Looping (short video) and not.
    for s in (0, 5):
      win = sampling.windows_at(tf.constant(n), tf.constant(s), narrow_frames=narrow_frames,
                                narrow_step=narrow_step, broad_frames=broad_frames,
                                broad_step=broad_step, broad_start='at_narrow')
      narrow, broad = win['narrow'].numpy(), win['broad'].numpy()
      for k, j in shared.items():
        assert narrow[k] == broad[j]
  # Every pair of positions that coincide by construction (k * ns == j * nb) is found.
  expected = {k for k in range(narrow_frames) for j in range(broad_frames)
              if k * narrow_step == j * broad_step}
  assert set(shared) == expected


def test_full_size_shares_the_even_narrow_frames():
  assert (sampling.frames_shared_at_narrow_start(16, 2, 64, 4)
          == {k: k // 2 for k in range(0, 16, 2)})


@pytest.mark.parametrize('name,augment_on', [('brave_rgb_rgb', 'host'), ('brave_rgb_rc', 'device')])
def test_shared_decode_gives_the_batch_of_separate_decodes(shard_dir, monkeypatch, name,
                                                           augment_on):
  config = _config(name, augment_on)
  assert sampling.frames_shared_at_narrow_start(
      config.data.narrow.num_frames, config.data.narrow.frame_step, config.data.broad.num_frames,
      config.data.broad.frame_step), 'the tiny config must share frames for this test to hold'
  calls = []
  real_shared = pipeline._shared_full_decode  # pylint: disable=protected-access

  def counting(*args):
    calls.append(1)
    return real_shared(*args)
  monkeypatch.setattr(pipeline, '_shared_full_decode', counting)
  _DEFAULT_BATCHES.pop((shard_dir, name, augment_on), None)  # Built here, with the counter on.
  shared = _default_batch(shard_dir, name, augment_on)
  assert calls, 'the shared decode was not used'
  monkeypatch.setattr(sampling, 'frames_shared_at_narrow_start', lambda *a: {})
  separate = _batch(shard_dir, config)
  assert shared.keys() == separate.keys()
  for key in shared:
    np.testing.assert_array_equal(shared[key], separate[key], err_msg=key)


def test_a_wrong_frame_mapping_would_show(shard_dir, monkeypatch):
  """Negative control: sharing each narrow frame with the next broad frame changes the batch."""
  config = _config('brave_rgb_rgb', 'host')
  right = _default_batch(shard_dir, 'brave_rgb_rgb', 'host')
  real = sampling.frames_shared_at_narrow_start
  monkeypatch.setattr(sampling, 'frames_shared_at_narrow_start',
                      lambda *a: {k: j + 1 for k, j in real(*a).items()})
  wrong = _batch(shard_dir, config)
  assert np.abs(right['/narrow/video'] - wrong['/narrow/video']).max() > 0.05  # In [0, 1].
  np.testing.assert_array_equal(right['/broad/video'], wrong['/broad/video'])


def test_reduced_scale_decode_does_not_share(shard_dir, monkeypatch):
  """The reduced-scale decode crops inside libjpeg, per view: nothing to share."""
  config = _config('brave_rgb_rgb', 'host')
  config.data.jpeg_decode = 'reduced_scale'
  monkeypatch.setattr(pipeline, '_shared_full_decode',
                      lambda *a: pytest.fail('shared decode used with reduced_scale'))
  _batch(shard_dir, config)


@pytest.mark.parametrize('name,augment_on,broad_start', [
    ('brave_rgb_rgb', 'host', 'at_narrow'), ('brave_rgb_rc', 'device', 'at_narrow'),
    ('brave_rgb_rgb', 'host', 'uniform_after_narrow')])  # No frames shared: each view alone.
def test_widened_window_decode_gives_the_batch_of_whole_frame_decodes(shard_dir, name, augment_on,
                                                                      broad_start):
  """jpeg_decode 'full' (libjpeg decodes widened windows, shared frames once over both views'
  windows) against 'full_frame' (the published whole-frame decode): the same batch, bit for bit."""
  config = _config(name, augment_on)
  config.data.broad_start = broad_start
  windowed = (_default_batch(shard_dir, name, augment_on) if broad_start == 'at_narrow'
              else _batch(shard_dir, config))
  config.data.jpeg_decode = 'full_frame'
  whole = _batch(shard_dir, config)
  assert windowed.keys() == whole.keys()
  for key in windowed:
    np.testing.assert_array_equal(windowed[key], whole[key], err_msg=key)
