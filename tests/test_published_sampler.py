"""The training view sampler against the published one (tests/testdata/sampler.npz).

The golden file holds, for videos of N = 20, 100, 250, 300 and 1000 frames
(frame i labelled i, audio sample j holding j, 48 kHz, 25 fps) and 22 fixed
narrow starts s, the published sampler's narrow and broad frame labels and its
whole broad waveform (491,520 samples) as exact run-length rows
(first value, length, step; step 0 = zeros). The starts include those where
looping the video only to s + 253 frames (the broad span) instead of the
published s + 256 (= 64 frames x step 4) leaves the last broad samples empty.
"""
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from brave_jax.data import sampling

VIEWS = dict(narrow_frames=16, narrow_step=2, broad_frames=64, broad_step=4)  # Published views.
# Where an s + 253 loop leaves zeros at the end of the broad audio (the golden README's list).
SHORT_LOOP_CASES = {(100, 45), (100, 46), (100, 47), (300, 45), (300, 46), (300, 47),
                    (1000, 745), (1000, 746), (1000, 747)}


@pytest.fixture(scope='module')
def golden():
  return dict(np.load(pathlib.Path(__file__).parent / 'testdata' / 'sampler.npz'))


def _expand_runs(runs: np.ndarray) -> np.ndarray:
  """The golden run-length rows (first, length, step) as the float32 waveform they describe."""
  parts = [np.zeros(length) if step == 0 else first + step * np.arange(length)
           for first, length, step in runs]
  return np.concatenate(parts).astype(np.float32)


def _broad_audio(golden, num_video_frames: int, win) -> np.ndarray:
  rate, fps = int(golden['audio_rate']), int(golden['video_fps'])
  wave = tf.range(round(num_video_frames / fps * rate), dtype=tf.float32)
  num_samples = sampling.num_audio_samples(VIEWS['broad_frames'], VIEWS['broad_step'], fps, rate)
  assert num_samples == int(golden['num_audio_samples']) == 491_520
  return sampling.broad_audio_window(wave, win['broad_start'], num_samples, num_video_frames,
                                     win['looped_frames']).numpy()


def _golden_audio(golden, i: int) -> np.ndarray:
  offsets = golden['audio_runs_offsets']
  return _expand_runs(golden['audio_runs'][offsets[i]:offsets[i + 1]])


def test_every_stored_case_gives_the_published_frames_and_audio_exactly(golden):
  cases = golden['cases']
  assert len(cases) == 22
  for i, (n, s) in enumerate(cases):
    win = sampling.windows_at(int(n), int(s), broad_start='at_narrow', **VIEWS)
    np.testing.assert_array_equal(win['narrow'], golden['narrow_frames'][i], err_msg=f'N={n} s={s}')
    np.testing.assert_array_equal(win['broad'], golden['broad_frames'][i], err_msg=f'N={n} s={s}')
    audio = _broad_audio(golden, int(n), win)
    want = _golden_audio(golden, i)
    assert len(audio) == len(want) == golden['audio_len'][i]
    np.testing.assert_array_equal(audio, want, err_msg=f'N={n} s={s}')
    np.testing.assert_array_equal(audio[:2000], golden['audio_head'][i])
    np.testing.assert_array_equal(audio[-2000:], golden['audio_tail'][i])
    assert np.count_nonzero(audio == 0) == golden['audio_num_zeros'][i]


def test_twenty_frame_clip_loops_as_published(golden):
  """A clip shorter than the narrow span (31 frames) is sampled too: narrow 0, 2, ..., 18, 0, ..., 10."""
  (i,) = np.flatnonzero(golden['cases'][:, 0] == 20)
  np.testing.assert_array_equal(golden['narrow_frames'][i], 2 * np.arange(16) % 20)
  win = sampling.windows_at(20, 0, broad_start='at_narrow', **VIEWS)
  np.testing.assert_array_equal(win['narrow'], golden['narrow_frames'][i])


def test_negative_control_an_s_plus_253_loop_misses_the_published_audio(golden):
  """The old loop length (s + the broad span, 253 frames) fails on exactly the listed starts:
  its last 1-3 frames of broad audio are zeros where the published audio wraps to the start."""
  span = sampling.span(VIEWS['broad_frames'], VIEWS['broad_step'])
  failing = set()
  for i, (n, s) in enumerate(golden['cases']):
    win = dict(sampling.windows_at(int(n), int(s), broad_start='at_narrow', **VIEWS))
    win['looped_frames'] = sampling.looped_length(int(n), int(s) + span)
    if not np.array_equal(_broad_audio(golden, int(n), win), _golden_audio(golden, i)):
      failing.add((int(n), int(s)))
  assert failing == SHORT_LOOP_CASES
