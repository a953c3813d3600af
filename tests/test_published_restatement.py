"""bench/published_pipeline.py, our re-statement of the published input chain used as a
yardstick: its crops and log-mel are ours exactly, and it yields batches of our shapes."""
import os
import sys

import numpy as np
import tensorflow as tf

import conftest

from brave_jax.data import decode
from brave_jax.data import dmvr_format
from brave_jax.data import pipeline
from brave_jax.data import spectrogram

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'bench'))
import published_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position


def _jpegs(rng, t=3, h=72, w=96):
  frames = rng.uniform(0, 255, size=(t, h, w, 3)).astype(np.uint8)
  return tf.stack([tf.io.encode_jpeg(f, quality=90) for f in frames])


def test_crop_and_log_mel_equal_ours(tiny_va_config):
  """Same seed, same window, same pixels: the full-decode crop of the re-statement is our default
  decode_random_crop bit for bit, and its log-mel is spectrogram.from_config's."""
  aug = tiny_va_config.data.augment
  rng = np.random.RandomState(0)
  for i in range(4):
    jpegs, seed = _jpegs(rng), tf.constant([i, 5], tf.int64)
    theirs, _ = published_pipeline.crop_resize(published_pipeline.decode_frames(jpegs), 40, aug,
                                               seed)
    ours = decode.decode_random_crop(jpegs, 40, aug.crop_area_range, aug.crop_aspect_range, seed)
    np.testing.assert_array_equal(theirs.numpy(), ours.numpy())
  wave = tf.constant(rng.uniform(-1, 1, 16000).astype(np.float32))
  np.testing.assert_array_equal(published_pipeline.log_mel(wave, tiny_va_config).numpy(),
                                spectrogram.from_config(wave, tiny_va_config.data).numpy())


def test_batches_have_our_shapes(tmp_path, tiny_vv_config):
  """The whole re-stated chain (V/V: randomly convolved broad view) on real shards."""
  clips = [dmvr_format.Clip(frames_TxHxWx3=np.random.RandomState(i).randint(
      0, 255, (40, 48, 64, 3)).astype(np.uint8), label_index=i, video_id=f'v{i}')
           for i in range(4)]
  conftest.write_clip_shards(tmp_path, clips, 'x', 2)
  batch = next(published_pipeline.make_dataset(tiny_vv_config, str(tmp_path), 2)
               .as_numpy_iterator())
  shapes = pipeline.batch_shapes(tiny_vv_config)
  assert batch['narrow']['video'].shape == (2,) + shapes['narrow']['video']
  assert batch['broad']['video'].shape == (2,) + shapes['broad']['video']
  assert np.isfinite(batch['broad']['video']).all() and batch['broad']['video'].std() > 0
