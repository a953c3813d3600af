"""One media file -> its serialized DMVR record(s), or the reason there are none.

Runs inside the converter's worker processes (`brave_jax.data.convert`), so
everything it returns is a picklable `Result`, and any failure of one file
comes back as that file's error instead of stopping the run.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Callable, Sequence

import numpy as np

from brave_jax import tf_startup

tf_startup.import_tensorflow()  # Before dmvr_format's import: TF's start-up banners once.

from brave_jax.data import clip_cutting  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import flow as flow_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import media  # pylint: disable=g-import-not-at-top,wrong-import-position

# A record whose frames are more than this fraction held (decoded frames repeated to cover
# timestamps where nothing decoded) is counted as "mostly held frames" in the summary.
MOSTLY_HELD = 0.5


@dataclasses.dataclass
class Result:
  """What a worker sends back: the serialized example or the reason there is none."""
  video_id: str
  serialized: bytes | None
  error: str | None = None
  num_frames: int = 0
  duration_s: float = 0.0
  has_audio: bool = False
  audio_s: float = 0.0
  short_audio: bool = False
  warnings: list[str] = dataclasses.field(default_factory=list)
  clips: list[bytes] | None = None  # With clip_seconds: the serialized clips (serialized is None).
  reason: str | None = None  # Skip category (media.ConvertError.reason) when there is no record.
  audio_peak: float = 0.0  # Peak after downmix, before clipping (> 1: clipped).
  clips_dropped_short_audio: int = 0  # Clips left out because their audio ends early ...
  clips_padded_short_audio: int = 0  # ... or kept, padded with silence (--short_audio_clips).
  mostly_held: int = 0  # Records written whose frames are mostly held frames ...
  dropped_held: int = 0  # ... and records left out for it (--max_held_fraction).
  record_seconds: list[float] = dataclasses.field(default_factory=list)  # Each record's length.

  @property
  def ok(self) -> bool:
    """Converted (one record, or clips)."""
    return self.serialized is not None or self.clips is not None

  def records(self) -> list[bytes]:
    """The serialized records this file gave: its clips, its one record, or none."""
    if self.clips is not None:
      return self.clips
    return [] if self.serialized is None else [self.serialized]


def convert_audio_one(path: str, label_index: int | list[int] | None = None,
                      label_text: str | list[str] | None = None, video_id: str | None = None,
                      audio_rate: int = 48000, max_seconds: float | None = None) -> Result:
  """One audio (or video) file's first audio stream as a waveform-only record."""
  video_id = video_id or os.path.basename(path)
  try:
    audio = media.decode_audio(path, audio_rate, max_seconds, kind='audio')
    if audio is None:
      raise media.ConvertError(f'{path}: no audio stream', reason='no audio stream')
    waveform = audio.waveform
    if max_seconds and max_seconds > 0:
      waveform = waveform[:int(round(max_seconds * audio_rate))]
    if not waveform.size:
      raise media.ConvertError(f'{path}: no audio sample could be decoded'
                         + (f' ({"; ".join(audio.warnings)})' if audio.warnings else ''),
                         reason='no audio decodes')
    clip = dmvr_format.Clip(waveform=waveform, label_index=label_index, label_text=label_text,
                            video_id=video_id, audio_rate=audio_rate)
    serialized = dmvr_format.encode_clip(clip)
  except media.ConvertError as e:
    return Result(video_id, None, error=str(e), reason=e.reason)
  except Exception as e:  # pylint: disable=broad-except  # One bad file must not stop the run.
    return Result(video_id, None, error=f'{path}: {type(e).__name__}: {e}', reason='error')
  return Result(video_id, serialized, duration_s=waveform.size / audio_rate, has_audio=True,
                audio_s=waveform.size / audio_rate, warnings=list(audio.warnings),
                audio_peak=audio.peak, record_seconds=[waveform.size / audio_rate])


def convert_one(path: str, label_index: int | list[int] | None = None,
                label_text: str | list[str] | None = None,
                video_id: str | None = None, fps: float = 25.0, audio_rate: int = 48000,
                short_side: int = 256, jpeg_quality: int = 95,
                max_seconds: float | None = None, flow_method: str | None = None,
                audio_only: bool = False, clip_seconds: float | None = None,
                clip_stride: float | None = None, short_audio_clips: str = 'drop',
                max_held_fraction: float | None = None) -> Result:
  """Converts one file to a serialized SequenceExample; failures come back as Result.error.

  With `flow_method` the clip also gets one flow JPEG per frame (brave_jax.data.convert's
  docstring); with `audio_only` it holds only the waveform (`convert_audio_one`); with
  `clip_seconds` the file is cut into clips (`clip_cutting.cut_clips`), returned in
  Result.clips, and clips whose audio ends early are dropped or padded
  (`clip_cutting.fit_clip_audio`).
  Records more than `max_held_fraction` held frames are left out (None keeps all).
  """
  if audio_only:
    if clip_seconds:
      raise ValueError('--clip_seconds cuts videos; it does not combine with --audio_only')
    return convert_audio_one(path, label_index, label_text, video_id, audio_rate, max_seconds)
  video_id = video_id or os.path.basename(path)
  try:
    video, encoded_flow = _decode_frames(path, fps, short_side, max_seconds, jpeg_quality,
                                         flow_method)
    warnings = list(video.warnings)
    waveform, short_audio = None, False
    audio = media.decode_audio(path, audio_rate, max_seconds)
    warnings += media.truncation_note(video, audio, path)
    if audio is not None:
      warnings += audio.warnings
      waveform, short_audio, notes = media.align_audio(audio, video.start_s, video.duration_s,
                                                       path, tolerance_s=1.0 / fps)
      warnings += notes
    counts = collections.Counter()

    def too_held(start: int, end: int) -> bool:
      """Counts a mostly-held record; True when --max_held_fraction leaves it out."""
      fraction = video.held_fraction(start, end)
      if max_held_fraction is not None and fraction > max_held_fraction:
        counts['dropped_held'] += 1
        return True
      counts['mostly_held'] += fraction > MOSTLY_HELD
      return False
    clip = dmvr_format.Clip(encoded_frames=video.frames, waveform=waveform,
                            label_index=label_index, label_text=label_text, video_id=video_id,
                            fps=fps, audio_rate=audio_rate if waveform is not None else None,
                            encoded_flow=encoded_flow, flow_method=flow_method or None)
    serialized, clips = None, None
    record_seconds = []
    if clip_seconds:
      ranges = clip_cutting.clip_frame_ranges(len(video.frames), fps, clip_seconds, clip_stride)
      clips, record_seconds = _encode_cut_clips(
          clip, video, encoded_flow, ranges, audio_rate=audio_rate, jpeg_quality=jpeg_quality,
          short_audio_clips=short_audio_clips, too_held=too_held, counts=counts)
      if not clips:
        raise media.ConvertError(
            empty_clips_message(path, counts, ranges, fps, waveform, audio_rate),
            reason='held frames' if counts['dropped_held'] else 'audio ends early')
    elif too_held(0, len(video.frames)):
      raise media.ConvertError(
          f'{path}: {100 * video.held_fraction():.0f}% of its frames are held (repeated over '
          f'stretches that did not decode), above --max_held_fraction={max_held_fraction:g}; '
          'left out', reason='held frames')
    else:
      serialized = dmvr_format.encode_clip(clip, jpeg_quality)
      record_seconds.append(len(video.frames) / fps)
  except media.ConvertError as e:
    return Result(video_id, None, error=str(e), reason=e.reason)
  except Exception as e:  # pylint: disable=broad-except  # One bad file must not stop the run.
    return Result(video_id, None, error=f'{path}: {type(e).__name__}: {e}', reason='error')
  return Result(video_id, serialized, num_frames=len(video.frames),
                duration_s=len(video.frames) / fps, has_audio=waveform is not None,
                audio_s=0.0 if waveform is None else waveform.size / audio_rate,
                short_audio=short_audio, warnings=warnings, clips=clips,
                audio_peak=audio.peak if audio is not None else 0.0,
                clips_dropped_short_audio=counts['dropped'],
                clips_padded_short_audio=counts['padded'], mostly_held=counts['mostly_held'],
                dropped_held=counts['dropped_held'], record_seconds=record_seconds)


def _decode_frames(path: str, fps: float, short_side: int, max_seconds: float | None,
                   jpeg_quality: int, flow_method: str | None
                   ) -> tuple[media.DecodedVideo, list[bytes] | None]:
  """The file's frames as JPEGs and, with `flow_method`, the flow JPEGs between them."""
  if not flow_method:
    video = media.decode_video(path, fps, short_side, max_seconds,
                               frame_fn=lambda f: dmvr_format.encode_jpeg(f, jpeg_quality))
    return video, None
  flow_encoder = flow_lib.StreamingFlowEncoder(flow_method, jpeg_quality)
  video = media.decode_video(path, fps, short_side, max_seconds, frame_fn=flow_encoder.add)
  encoded_flow = flow_encoder.encoded_flow(video.frames)
  video.frames = [f.jpeg for f in video.frames]
  return video, encoded_flow


def _encode_cut_clips(clip: dmvr_format.Clip, video: media.DecodedVideo,
                      encoded_flow: list[bytes] | None, ranges: Sequence[tuple[int, int]], *,
                      audio_rate: int, jpeg_quality: int, short_audio_clips: str,
                      too_held: Callable[[int, int], bool], counts: collections.Counter
                      ) -> tuple[list[bytes], list[float]]:
  """The serialized clips of `ranges` and their lengths (s), counting what was left out.

  Each frame is freed once no later clip holds it, so memory stays about one copy of
  the video's JPEGs however many clips overlap.
  """
  records, record_seconds = [], []
  for i, cut in enumerate(clip_cutting.cut_clips(clip, ranges, audio_rate)):
    start, end = ranges[i]
    kept, action = clip_cutting.fit_clip_audio(cut, end - start, audio_rate, short_audio_clips)
    counts[action] += 1
    if kept is not None and not too_held(start, end):
      records.append(dmvr_format.encode_clip(kept, jpeg_quality))
      record_seconds.append((end - start) / clip.fps)
    del cut, kept  # Frames before the next clip are in no later record: free them.
    next_start = ranges[i + 1][0] if i + 1 < len(ranges) else len(video.frames)
    for k in range(start, next_start):
      video.frames[k] = None
      if encoded_flow is not None:
        encoded_flow[k] = None
  return records, record_seconds


def empty_clips_message(path: str, counts: collections.Counter, ranges: Sequence[tuple[int, int]],
                        fps: float, waveform: np.ndarray | None, audio_rate: int) -> str:
  """Why a cut video gave no clip at all (every clip dropped), and the option that keeps them."""
  reasons = []
  if counts['dropped']:
    audio_s = 0.0 if waveform is None else waveform.size / audio_rate
    reasons.append(f'{counts["dropped"]} clip(s) dropped because the audio ends at '
                   f'{audio_s:.2f}s, before their end (the first clip ends at '
                   f'{ranges[0][1] / fps:.2f}s); --short_audio_clips=pad keeps them with silence')
  if counts['dropped_held']:
    reasons.append(f'{counts["dropped_held"]} clip(s) dropped as mostly held frames over '
                   '--max_held_fraction')
  return f'{path}: no clip left: ' + '; '.join(reasons)
