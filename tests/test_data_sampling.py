"""Window indices, looping and audio alignment, checked on integers."""
import numpy as np
import pytest
import tensorflow as tf

from brave_jax.data import sampling

SEED = tf.constant([3, 4], tf.int64)


def test_window_indices_loop_past_the_end():
  idx = sampling.window_indices(3, num_frames=5, frame_step=2, num_video_frames=7).numpy()
  np.testing.assert_array_equal(idx, [3, 5, 0, 2, 4])


@pytest.mark.parametrize('num_video_frames', [5, 40, 200])
def test_start_placement_aligns_narrow_with_broad(num_video_frames):
  for i in range(5):
    w = sampling.train_windows(num_video_frames, narrow_frames=4, narrow_step=2, broad_frames=8,
                               broad_step=4, placement='start', seed=SEED + i)
    narrow, broad = w['narrow'].numpy(), w['broad'].numpy()
    assert narrow.shape == (4,) and broad.shape == (8,)
    assert narrow[0] == broad[0] == w['broad_start'].numpy()
    assert 0 <= w['broad_start'] <= max(num_video_frames - 32, 0)
    assert narrow.max() < num_video_frames and broad.max() < num_video_frames
    np.testing.assert_array_equal(broad, (w['broad_start'].numpy() + 4 * np.arange(8))
                                  % num_video_frames)


def test_random_placement_keeps_narrow_inside_broad():
  offsets = set()
  for i in range(40):
    w = sampling.train_windows(1000, narrow_frames=4, narrow_step=2, broad_frames=8,
                               broad_step=4, placement='random', seed=SEED + i)
    offset = int(w['narrow'][0] - w['broad_start'])
    assert 0 <= offset <= 32 - 8
    offsets.add(offset)
  assert len(offsets) > 5  # Actually random.


def test_unknown_placement_raises():
  with pytest.raises(ValueError, match='narrow_placement'):
    sampling.train_windows(10, narrow_frames=2, narrow_step=1, broad_frames=4, broad_step=1,
                           placement='middle', seed=SEED)


def test_audio_window_is_aligned_and_has_broad_length():
  rate, fps = 1000, 25
  wave = tf.range(20000, dtype=tf.float32)
  n = sampling.num_audio_samples(8, 4, fps, rate)  # 32 frames = 1.28 s
  assert n == 1280
  out = sampling.audio_window(wave, 10, n, video_fps=fps, audio_sample_rate=rate).numpy()
  np.testing.assert_array_equal(out, np.arange(400, 400 + 1280))  # 10 frames = 0.4 s


def test_short_audio_loops():
  wave = tf.range(100, dtype=tf.float32)
  out = sampling.audio_window(wave, 1, 250, video_fps=10, audio_sample_rate=100).numpy()
  np.testing.assert_array_equal(out, np.arange(10, 260) % 100)


def test_missing_audio_raises():
  with pytest.raises(tf.errors.InvalidArgumentError, match='no audio'):
    sampling.audio_window(tf.zeros([0]), 0, 10, video_fps=25, audio_sample_rate=100)


def test_evenly_spaced_windows():
  starts, idx = sampling.evenly_spaced_windows(100, num_frames=4, frame_step=2, num_windows=3)
  np.testing.assert_array_equal(starts, [0, 46, 92])
  np.testing.assert_array_equal(idx[1], [46, 48, 50, 52])
  starts, idx = sampling.evenly_spaced_windows(5, num_frames=4, frame_step=2, num_windows=2)
  np.testing.assert_array_equal(starts, [0, 0])
  np.testing.assert_array_equal(idx[0], [0, 2, 4, 1])
