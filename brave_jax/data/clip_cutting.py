"""Cutting one decoded video's record into clips (`convert --clip_seconds`).

Kept apart from decoding so the clip arithmetic (frame ranges, the audio
samples of each range, clip ids) is checked without a video file.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import av
import numpy as np

from brave_jax import tf_startup

tf_startup.import_tensorflow()  # Before dmvr_format's import: TF's start-up banners once.

from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top,wrong-import-position

SHORT_AUDIO_CLIPS = ('drop', 'pad')  # --short_audio_clips: what to do with a clip whose audio ends early.


def clip_frame_ranges(num_frames: int, fps: float, clip_seconds: float,
                      clip_stride: float | None = None) -> list[tuple[int, int]]:
  """[start, end) frame ranges of the clips of a num_frames-long video (brave_jax.data.convert's docstring).

  Clips are round(clip_seconds * fps) frames long and start every
  round(clip_stride * fps) frames (default: back to back); a shorter tail is
  dropped, and a video shorter than one clip is one clip of its whole length.
  """
  clip_frames = round(clip_seconds * fps)
  stride_frames = round((clip_stride if clip_stride else clip_seconds) * fps)
  if clip_frames < 1 or stride_frames < 1:
    raise ValueError(f'--clip_seconds={clip_seconds} / --clip_stride={clip_stride} give clips of '
                     f'{clip_frames} frames every {stride_frames} at {fps:g} fps; both need at '
                     'least one frame')
  if num_frames <= clip_frames:
    return [(0, num_frames)]
  return [(start, start + clip_frames)
          for start in range(0, num_frames - clip_frames + 1, stride_frames)]


def clip_id(source_id: str, start_seconds: float) -> str:
  """clip/id of a cut record: the source's id and its start (a media-fragment style `#t=`)."""
  return f'{source_id}#t={start_seconds:.3f}'


def cut_clips(clip: dmvr_format.Clip, ranges: Sequence[tuple[int, int]],
              audio_rate: int) -> Iterator[dmvr_format.Clip]:
  """One Clip per [start, end) frame range of a whole video's Clip (JPEG frames, flow, audio), in order.

  Frame k of the video is at time k / fps, and its audio starts at sample
  round(k * rate / fps) (the whole video's waveform starts at frame 0), so a
  record's waveform covers exactly its frames.
  """
  for start, end in ranges:
    start_s = start / clip.fps
    waveform = None
    if clip.waveform is not None:
      first, last = (round(k * audio_rate / clip.fps) for k in (start, end))
      waveform = clip.waveform[first:last]
    yield dataclasses.replace(
        clip, encoded_frames=list(clip.encoded_frames[start:end]), waveform=waveform,
        encoded_flow=None if clip.encoded_flow is None else list(clip.encoded_flow[start:end]),
        video_id=clip_id(clip.video_id, start_s), source=clip.video_id, start_seconds=start_s)


def fit_clip_audio(clip: dmvr_format.Clip, num_frames: int, audio_rate: int,
                   policy: str) -> tuple[dmvr_format.Clip | None, str]:
  """A cut clip whose audio ends more than one frame early, dropped or padded with silence.

  Returns (clip or None, what happened: 'ok', 'dropped' or 'padded'). Training counts a
  record with too little audio against its bad-data budget, so such a clip is not kept
  as it is: `policy` 'drop' leaves it out, 'pad' appends zeros up to its frames' length.
  A clip without audio at all (the file has no audio stream) is left alone.
  """
  if policy not in SHORT_AUDIO_CLIPS:
    raise ValueError(f'--short_audio_clips={policy!r}: choose from {SHORT_AUDIO_CLIPS}')
  if clip.waveform is None:
    return clip, 'ok'
  want = round(num_frames * audio_rate / clip.fps)
  missing = want - clip.waveform.size
  if missing <= audio_rate / clip.fps:  # Within one frame: rounding, not a missing tail.
    return clip, 'ok'
  if policy == 'drop':
    return None, 'dropped'
  padded = np.concatenate([clip.waveform, np.zeros([missing], np.float32)])
  return dataclasses.replace(clip, waveform=padded), 'padded'


def estimate_clips(path: str, clip_seconds: float, clip_stride: float | None,
                   max_seconds: float | None = None) -> int:
  """Clips a video will give, from its header's duration (1 when unknown): sizes the shard count."""
  try:
    with av.open(path) as container:
      seconds = container.duration / 1e6 if container.duration else 0.0
  except (av.FFmpegError, OSError, ValueError):
    return 1
  if max_seconds and max_seconds > 0:
    seconds = min(seconds, max_seconds)
  stride = clip_stride or clip_seconds
  return max(1, int((seconds - clip_seconds) // stride) + 1) if seconds > clip_seconds else 1
