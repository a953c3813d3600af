"""Which frames and which audio samples make up each view of a clip.

Index arithmetic only (no decoding), so windows, looping and audio alignment
are tested on integers. Short videos loop: frame i of a window is frame
`i mod num_video_frames`, and the waveform loops the same way.
"""
from __future__ import annotations

import tensorflow as tf


def window_indices(start: tf.Tensor, num_frames: int, frame_step: int,
                   num_video_frames: tf.Tensor) -> tf.Tensor:
  """int32 [num_frames] frame indices from `start`, looping past the end of the video."""
  steps = tf.range(num_frames, dtype=tf.int32) * frame_step
  return tf.math.floormod(tf.cast(start, tf.int32) + steps, tf.cast(num_video_frames, tf.int32))


def _uniform_int(seed: tf.Tensor, maxval_inclusive: tf.Tensor) -> tf.Tensor:
  """Stateless integer uniform in [0, maxval_inclusive]."""
  return tf.random.stateless_uniform([], seed, minval=0, maxval=tf.int32.max,
                                     dtype=tf.int32) % (tf.cast(maxval_inclusive, tf.int32) + 1)


def train_windows(num_video_frames: tf.Tensor, *, narrow_frames: int, narrow_step: int,
                  broad_frames: int, broad_step: int, placement: str,
                  seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """Narrow and broad frame indices of one training example.

  The broad window (span broad_frames*broad_step) starts uniformly where it
  fits in the video (at 0 when it does not: the video loops). With placement
  'start' the narrow window starts where the broad one does (published
  BraVe); with 'random' it starts anywhere it fits inside the broad window.
  Returns {'narrow': [Tn], 'broad': [Tb], 'broad_start': scalar} (int32).
  """
  if placement not in ('start', 'random'):
    raise ValueError(f"config.data.narrow_placement must be 'start' or 'random', got {placement!r}")
  n = tf.cast(num_video_frames, tf.int32)
  broad_span = broad_frames * broad_step
  narrow_span = narrow_frames * narrow_step
  seed_start, seed_offset = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  broad_start = _uniform_int(seed_start, tf.maximum(n - broad_span, 0))
  offset = tf.constant(0, tf.int32)
  if placement == 'random':
    offset = _uniform_int(seed_offset, max(broad_span - narrow_span, 0))
  return {
      'narrow': window_indices(broad_start + offset, narrow_frames, narrow_step, n),
      'broad': window_indices(broad_start, broad_frames, broad_step, n),
      'broad_start': broad_start,
  }


def random_window(num_video_frames: tf.Tensor, num_frames: int, frame_step: int,
                  seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(start, indices [num_frames]) of one window at a uniformly random start (eval 'train' mode)."""
  n = tf.cast(num_video_frames, tf.int32)
  start = _uniform_int(seed, tf.maximum(n - num_frames * frame_step, 0))
  return start, window_indices(start, num_frames, frame_step, n)


def evenly_spaced_starts(num_video_frames: tf.Tensor, num_frames: int, frame_step: int,
                         num_windows: int) -> tf.Tensor:
  """int32 [num_windows] starts spread evenly from 0 to the last start that fits (test crops)."""
  last = tf.cast(tf.maximum(tf.cast(num_video_frames, tf.int32) - num_frames * frame_step, 0),
                 tf.float32)
  if num_windows == 1:
    return tf.cast(tf.round(last / 2), tf.int32)[None]
  return tf.cast(tf.round(tf.linspace(0.0, last, num_windows)), tf.int32)


def evenly_spaced_windows(num_video_frames: tf.Tensor, num_frames: int, frame_step: int,
                          num_windows: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(starts [N], indices [N, num_frames]) for N deterministic test windows."""
  starts = evenly_spaced_starts(num_video_frames, num_frames, frame_step, num_windows)
  steps = tf.range(num_frames, dtype=tf.int32) * frame_step
  idx = tf.math.floormod(starts[:, None] + steps[None, :], tf.cast(num_video_frames, tf.int32))
  return starts, idx


def num_audio_samples(num_frames: int, frame_step: int, video_fps: float,
                      audio_sample_rate: float) -> int:
  """Samples covering a window of num_frames*frame_step video frames (SPEC: rounded)."""
  return int(round(num_frames * frame_step / video_fps * audio_sample_rate))


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
