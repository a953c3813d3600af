"""Which frames and which audio samples make up each view of a clip (the published sampler).

Index arithmetic only (no decoding), so windows, looping and audio alignment
are tested on integers. Windows that run past the end loop, as the published
code loops a video by repeating it whole: frame i of a window is frame
`i mod num_video_frames`, and the waveform loops the same way.
"""
from __future__ import annotations

import tensorflow as tf

from brave_jax import config_base


def window_indices(start: tf.Tensor, num_frames: int, frame_step: int,
                   num_video_frames: tf.Tensor) -> tf.Tensor:
  """int32 [num_frames] frame indices from `start`, looping past the end of the video."""
  steps = tf.range(num_frames, dtype=tf.int32) * frame_step
  return tf.math.floormod(tf.cast(start, tf.int32) + steps, tf.cast(num_video_frames, tf.int32))


def _uniform_int(seed: tf.Tensor, maxval_inclusive: tf.Tensor) -> tf.Tensor:
  """Stateless integer uniform in [0, maxval_inclusive]."""
  return tf.random.stateless_uniform([], seed, minval=0, maxval=tf.int32.max,
                                     dtype=tf.int32) % (tf.cast(maxval_inclusive, tf.int32) + 1)


def span(num_frames: int, frame_step: int) -> int:
  """Frames a window covers from its first to its last sampled frame: (T - 1) * step + 1."""
  return (num_frames - 1) * frame_step + 1


def looped_length(num_video_frames: tf.Tensor, frames_needed: tf.Tensor) -> tf.Tensor:
  """Length of the video repeated whole (published `extend_sequence`) until it holds frames_needed."""
  n = tf.cast(num_video_frames, tf.int32)
  repeats = tf.maximum((tf.cast(frames_needed, tf.int32) + n - 1) // n, 1)
  return n * repeats


BROAD_STARTS = config_base.BROAD_STARTS


def train_windows(num_video_frames: tf.Tensor, *, narrow_frames: int, narrow_step: int,
                  broad_frames: int, broad_step: int, broad_start: str,
                  seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """Narrow and broad frame indices of one training example, as the published sampler draws them.

  The narrow clip starts at s, uniform over [0, max(N, Ln) - Ln] (Ln = its
  span): anywhere in the video; a clip shorter than Ln has s = 0 and loops, as
  in the published code. The rest is `windows_at(s)`.
  Returns {'narrow': [Tn], 'broad': [Tb], 'broad_start': b, 'looped_frames': scalar} (int32).
  """
  if broad_start not in BROAD_STARTS:
    raise ValueError(f'config.data.broad_start must be one of {BROAD_STARTS}, got {broad_start!r}')
  n = tf.cast(num_video_frames, tf.int32)
  seed_narrow, seed_broad = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  narrow_start = _uniform_int(seed_narrow, tf.maximum(n - span(narrow_frames, narrow_step), 0))
  return windows_at(n, narrow_start, narrow_frames=narrow_frames, narrow_step=narrow_step,
                    broad_frames=broad_frames, broad_step=broad_step, broad_start=broad_start,
                    seed_broad=seed_broad)


def frames_shared_at_narrow_start(narrow_frames: int, narrow_step: int, broad_frames: int,
                                  broad_step: int) -> dict[int, int]:
  """{k: j}: narrow frame k is broad frame j whenever both windows start at the same frame.

  With broad_start='at_narrow' (published) frame k of the narrow clip is s + k * ns and
  frame j of the broad window s + j * nb (both mod N), so they are the same frame when
  k * ns == j * nb: at full size (16 x 2 against 64 x 4) the even narrow frames, 8 of
  16. The pipeline decodes such a frame once for both views.
  """
  broad_position = {j * broad_step: j for j in range(broad_frames)}
  return {k: broad_position[k * narrow_step] for k in range(narrow_frames)
          if k * narrow_step in broad_position}


def broad_extent(broad_frames: int, broad_step: int) -> int:
  """Frames the broad view's audio covers: T * step (256 at full size), 3 more than its span.

  The published sampler loops the video to s + T * step frames (not s + span),
  so the broad audio, which also covers T * step frames, always lies inside
  the looped waveform.
  """
  return broad_frames * broad_step


def windows_at(num_video_frames: tf.Tensor, narrow_start: tf.Tensor, *, narrow_frames: int,
               narrow_step: int, broad_frames: int, broad_step: int, broad_start: str,
               seed_broad: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """The training windows for a given narrow start s (the published sampler's only draw).

  The video is looped (repeated whole, published `extend_sequence`) until it
  holds s + Tb * step_b frames (`broad_extent`), and the broad window starts at
  b: 'at_narrow' (published): b = s; 'uniform_after_narrow' (an option, needs
  `seed_broad`): b uniform over [s, looped - Tb * step_b], so it may start
  later than the narrow clip and its audio still fits the looped video.
  Indices are into the original video (index mod N).
  """
  if broad_start not in BROAD_STARTS:
    raise ValueError(f'config.data.broad_start must be one of {BROAD_STARTS}, got {broad_start!r}')
  n = tf.cast(num_video_frames, tf.int32)
  s = tf.cast(narrow_start, tf.int32)
  extent = broad_extent(broad_frames, broad_step)
  looped = looped_length(n, s + extent)
  b = s
  if broad_start == 'uniform_after_narrow':
    if seed_broad is None:
      raise ValueError("broad_start='uniform_after_narrow' draws the broad start: pass seed_broad")
    b = s + _uniform_int(seed_broad, looped - extent - s)
  return {
      'narrow': window_indices(s, narrow_frames, narrow_step, n),
      'broad': window_indices(b, broad_frames, broad_step, n),
      'broad_start': b,
      'looped_frames': looped,
  }


def random_window(num_video_frames: tf.Tensor, num_frames: int, frame_step: int,
                  seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(start, indices [num_frames]) of one window at a uniformly random start (eval 'train' mode).

  As published: the video is looped whole until it holds the window's span, then
  the start is uniform over every position where the window fits.
  """
  n = tf.cast(num_video_frames, tf.int32)
  window_span = span(num_frames, frame_step)
  start = _uniform_int(seed, looped_length(n, window_span) - window_span)
  return start, window_indices(start, num_frames, frame_step, n)


def evenly_spaced_starts(num_video_frames: tf.Tensor, num_frames: int, frame_step: int,
                         num_windows: int) -> tf.Tensor:
  """int32 [num_windows] test-window starts, as published: int(linspace(0, last, num_windows)).

  `last` is the last start where the window fits in the video looped whole to
  hold its span; one window starts at 0, two at 0 and `last`.
  """
  window_span = span(num_frames, frame_step)
  last = looped_length(num_video_frames, window_span) - window_span
  return tf.cast(tf.linspace(0.0, tf.cast(last, tf.float32), num_windows), tf.int32)


def evenly_spaced_windows(num_video_frames: tf.Tensor, num_frames: int, frame_step: int,
                          num_windows: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(starts [N], indices [N, num_frames]) for N deterministic test windows."""
  starts = evenly_spaced_starts(num_video_frames, num_frames, frame_step, num_windows)
  steps = tf.range(num_frames, dtype=tf.int32) * frame_step
  idx = tf.math.floormod(starts[:, None] + steps[None, :], tf.cast(num_video_frames, tf.int32))
  return starts, idx


def num_audio_samples(num_frames: int, frame_step: int, video_fps: float,
                      audio_sample_rate: float) -> int:
  """Samples covering num_frames*frame_step video frames, truncated as published: int(T*step/fps*rate)."""
  return int(num_frames * frame_step / video_fps * audio_sample_rate)


def broad_audio_window(waveform: tf.Tensor, start_frame: tf.Tensor, num_samples: int,
                       num_video_frames: tf.Tensor, looped_frames: tf.Tensor) -> tf.Tensor:
  """float32 [num_samples]: the waveform of a broad training window, as the published sampler cuts it.

  The waveform is looped as often as the video was (looped_frames / N times),
  the window starts at sample int(float32(start_frame) * float32(A / N)) (A
  samples, N frames: the record's own audio-to-video ratio), and samples past
  the looped waveform's end are zeros. An empty waveform raises
  InvalidArgumentError, which the pipeline turns into a skipped, counted record.
  """
  length = tf.size(waveform, out_type=tf.int32)
  check = tf.debugging.assert_positive(
      length, message='record has no audio (WAVEFORM/feature/floats) but the config needs it')
  with tf.control_dependencies([check]):
    n = tf.cast(num_video_frames, tf.int32)
    ratio = tf.cast(tf.cast(length, tf.float64) / tf.cast(n, tf.float64), tf.float32)
    start = tf.cast(tf.cast(start_frame, tf.float32) * ratio, tf.int32)
  looped_samples = length * (tf.cast(looped_frames, tf.int32) // n)

  # Copies instead of a gather over every position (same samples, a fraction of the host CPU:
  # the broad window of a 10-12 s clip wraps round its end on most draws).
  reps = (start + num_samples + length - 1) // length
  looped = tf.tile(waveform, [reps])
  valid = tf.clip_by_value(looped_samples - start, 0, num_samples)
  window = tf.concat([looped[start:start + valid], tf.zeros([num_samples - valid], waveform.dtype)],
                     axis=0)
  return tf.ensure_shape(window, [num_samples])


def audio_window(waveform: tf.Tensor, start_frame: tf.Tensor, num_samples: int, *,
                 video_fps: float, audio_sample_rate: float) -> tf.Tensor:
  """float32 [num_samples] of the waveform aligned with video frame `start_frame`, looped if short.

  The start sample is start_frame/fps*rate (rounded), taken modulo the
  waveform length so a looped video window gets looped audio. An empty
  waveform raises InvalidArgumentError, which the pipeline turns into a
  skipped, counted record.
  """
  length = tf.size(waveform, out_type=tf.int32)
  check = tf.debugging.assert_positive(
      length, message='record has no audio (WAVEFORM/feature/floats) but the config needs it')
  with tf.control_dependencies([check]):
    start = tf.cast(tf.round(tf.cast(start_frame, tf.float64) * audio_sample_rate / video_fps),
                    tf.int32)
    start = tf.math.floormod(start, length)
  reps = (start + num_samples + length - 1) // length
  looped = tf.cond(reps > 1, lambda: tf.tile(waveform, [reps]), lambda: waveform)
  return tf.reshape(looped[start:start + num_samples], [num_samples])
