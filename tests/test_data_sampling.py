"""Window indices, looping and audio alignment, checked on integers."""
import numpy as np
import pytest
import tensorflow as tf

from brave_jax.data import sampling

SEED = tf.constant([3, 4], tf.int64)


def test_window_indices_loop_past_the_end():
  idx = sampling.window_indices(3, num_frames=5, frame_step=2, num_video_frames=7).numpy()
  np.testing.assert_array_equal(idx, [3, 5, 0, 2, 4])


FULL_SIZE = dict(narrow_frames=16, narrow_step=2, broad_frames=64, broad_step=4)  # Published views.


def _draw(num_video_frames, broad_start='at_narrow', draws=400, **views):
  """Many training windows of one video: arrays of narrow starts, broad starts, windows."""
  views = views or FULL_SIZE
  out = {'s': [], 'b': [], 'looped': [], 'narrow': [], 'broad': []}
  for i in range(draws):
    w = sampling.train_windows(num_video_frames, broad_start=broad_start,
                               seed=tf.constant([7, i], tf.int64), **views)
    out['s'].append(int(w['narrow'][0]))
    out['b'].append(int(w['broad_start']))
    out['looped'].append(int(w['looped_frames']))
    out['narrow'].append(w['narrow'].numpy())
    out['broad'].append(w['broad'].numpy())
  return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize('spec', ['configs/brave_rgb_audio.py', 'configs/brave_rgb_rc.py',
                                  'configs/brave_rgb_audio.py:demo'])
def test_default_is_the_published_broad_start(spec):
  from brave_jax import config_base
  assert config_base.load(spec).data.broad_start == 'at_narrow'


def test_ten_second_clip_narrow_start_covers_the_whole_video_and_the_broad_window_wraps():
  """250 frames (10 s at 25 fps): the narrow start is uniform over [0, 250 - 31]; the broad
  window starts at the same frame; the video is looped to 500 frames (>= s + 256), so every
  broad window (span 253 frames) wraps."""
  d = _draw(250)
  s, b = d['s'], d['b']
  assert s.min() >= 0 and s.max() <= 219
  assert s.min() < 10 and s.max() > 209  # Starts reach both ends of the video...
  quarters = np.histogram(s, bins=4, range=(0, 220))[0]
  assert quarters.min() > 0.15 * len(s), quarters  # ...uniformly (each quarter ~25 %).
  np.testing.assert_array_equal(b, s)
  np.testing.assert_array_equal(d['looped'], 500)
  for start, narrow, broad in zip(s, d['narrow'], d['broad']):
    np.testing.assert_array_equal(narrow, start + 2 * np.arange(16))
    assert broad[0] == narrow[0]
    assert np.any(np.diff(broad) < 0)  # 253 frames of a 250-frame video: always wraps.
  np.testing.assert_array_equal(d['broad'], (s[:, None] + 4 * np.arange(64)) % 250)


def test_twenty_frame_clip_loops_both_views():
  """20 frames, shorter than the narrow span (31): both views start at 0 and loop; the video
  is looped to 260 frames (13 copies) to hold the broad window's 64 x 4 = 256 frames."""
  d = _draw(20, draws=50)
  np.testing.assert_array_equal(d['s'], 0)
  np.testing.assert_array_equal(d['b'], 0)
  np.testing.assert_array_equal(d['narrow'], np.tile(2 * np.arange(16) % 20, (50, 1)))
  np.testing.assert_array_equal(d['looped'], 260)
  np.testing.assert_array_equal(d['broad'], np.tile(4 * np.arange(64) % 20, (50, 1)))


def test_long_clip_loops_only_when_the_broad_window_would_run_past_its_end():
  d = _draw(1000, draws=100)
  fits = d['s'] + 256 <= 1000  # Published: loop to s + 64 * 4 frames, what the audio covers.
  assert fits.any() and not fits.all()
  np.testing.assert_array_equal(d['looped'], np.where(fits, 1000, 2000))
  wraps = d['s'] + 253 > 1000  # The frames wrap only past the span; s = 745-747 loop, no wrap.
  assert np.all(np.diff(d['broad'][~wraps], axis=1) == 4)
  assert np.all(np.any(np.diff(d['broad'][wraps], axis=1) < 0, axis=1))


def test_uniform_after_narrow_draws_the_broad_start_between_s_and_the_last_fitting_start():
  """The option: b uniform over [s, looped - 256], so its 256 frames of audio fit the looped
  video; on 250 frames looped to 500, b <= 244."""
  d = _draw(250, broad_start='uniform_after_narrow')
  s, b = d['s'], d['b']
  assert np.all(b >= s) and np.all(b <= 244)
  fraction = (b - s) / np.maximum(244 - s, 1)
  assert abs(fraction.mean() - 0.5) < 0.06, fraction.mean()
  assert (b - s).min() <= 2 and b.max() >= 240
  np.testing.assert_array_equal(d['broad'], (b[:, None] + 4 * np.arange(64)) % 250)
  d20 = _draw(20, broad_start='uniform_after_narrow', draws=200)
  assert set(d20['b']) == set(range(5))  # [0, 260 - 256].


def test_unknown_broad_start_raises():
  with pytest.raises(ValueError, match='broad_start'):
    sampling.train_windows(10, narrow_frames=2, narrow_step=1, broad_frames=4, broad_step=1,
                           broad_start='middle', seed=SEED)


@pytest.mark.parametrize('num_samples_audio', [1000, 999])  # 4 per frame, and a ratio of 3.996.
def test_broad_audio_is_aligned_with_the_broad_window_and_looped(num_samples_audio):
  """250 frames, audio at 100 Hz: the broad audio starts at sample int(f32(b) * f32(A / N)) and
  continues into the looped waveform (test_published_sampler.py holds it to the published
  sampler at 48 kHz; here the ratio A / N need not be an integer)."""
  fps, rate = 25, 100
  wave = np.arange(num_samples_audio, dtype=np.float32)
  num_samples = sampling.num_audio_samples(64, 4, fps, rate)
  assert num_samples == 1024  # 256 frames / 25 fps * 100 Hz.
  d = _draw(250, draws=40)
  for b, looped in zip(d['b'], d['looped']):
    out = sampling.broad_audio_window(tf.constant(wave), b, num_samples, 250, looped).numpy()
    start = int(np.float32(b) * np.float32(num_samples_audio / 250))
    np.testing.assert_array_equal(out, (start + np.arange(num_samples)) % num_samples_audio)
  # Past the looped waveform's end the window reads zeros (only reachable with a loop shorter
  # than the sampler's): start 4 * 247 = 988; the looped 2000 samples end after 1012.
  out = sampling.broad_audio_window(tf.constant(wave), 247, num_samples, 250, 500).numpy()
  if num_samples_audio == 1000:
    assert out[0] == 988 and out[1011] == 999 and np.count_nonzero(out[1012:]) == 0


def _published_broad_audio(wave, b, num_samples, n, looped):
  """The published cut, restated in numpy: looped waveform, zeros past its end."""
  length = len(wave)
  start = int(np.float32(b) * np.float32(length / n))
  positions = start + np.arange(num_samples)
  return np.where(positions < length * (looped // n), wave[positions % length], 0.0)


@pytest.mark.parametrize('frame_offset', [-1, 0, 1])
def test_broad_audio_window_inside_and_across_the_waveform_end(frame_offset):
  """The tiled-and-sliced cut gives the published samples (a gather over the looped positions)
  at the boundary (the window ending 10 samples before, at and 10 after
  the end) and over random draws. Negative control: a window one frame off differs."""
  n, num_samples = 100, 400
  length = 1000  # 10 samples per frame.
  wave = np.random.default_rng(0).normal(size=length).astype(np.float32)
  b = (length - num_samples) // 10 + frame_offset  # Starts at sample 10 * b; 60 ends at 1000.
  for start_frame, looped in [(b, 100), (b, 200), (b, 50)] + [(int(s), 200) for s in
                                                               np.random.default_rng(1).integers(0, 100, 20)]:
    got = sampling.broad_audio_window(tf.constant(wave), start_frame, num_samples, n, looped).numpy()
    want = _published_broad_audio(wave, start_frame, num_samples, n, looped)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (num_samples,)
  off_by_one = _published_broad_audio(wave, b + 1, num_samples, n, 200)
  assert not np.array_equal(
      sampling.broad_audio_window(tf.constant(wave), b, num_samples, n, 200).numpy(), off_by_one)


def test_eval_audio_window_is_aligned_and_has_broad_length():
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


def test_missing_broad_audio_raises():
  with pytest.raises(tf.errors.InvalidArgumentError, match='no audio'):
    sampling.broad_audio_window(tf.zeros([0]), 0, 10, 20, 20)


def test_evenly_spaced_windows_as_published():
  """int(linspace(0, last, n)), last = the last start that fits (span = (T - 1) * step + 1)."""
  starts, idx = sampling.evenly_spaced_windows(100, num_frames=4, frame_step=2, num_windows=3)
  np.testing.assert_array_equal(starts, [0, 46, 93])
  np.testing.assert_array_equal(idx[1], [46, 48, 50, 52])
  starts, _ = sampling.evenly_spaced_windows(100, num_frames=4, frame_step=2, num_windows=1)
  np.testing.assert_array_equal(starts, [0])
  # 5 frames, span 7: looped to 10, starts 0 and 3.
  starts, idx = sampling.evenly_spaced_windows(5, num_frames=4, frame_step=2, num_windows=2)
  np.testing.assert_array_equal(starts, [0, 3])
  np.testing.assert_array_equal(idx, [[0, 2, 4, 1], [3, 0, 2, 4]])


def test_random_window_starts_anywhere_the_window_fits_in_the_looped_video():
  starts = {int(sampling.random_window(10, 4, 2, tf.constant([1, i], tf.int64))[0])
            for i in range(200)}
  assert starts == set(range(4))  # Span 7 fits at 0..3 of 10 frames.
  starts = {int(sampling.random_window(5, 4, 2, tf.constant([1, i], tf.int64))[0])
            for i in range(200)}
  assert starts == set(range(4))  # Looped to 10 frames.
