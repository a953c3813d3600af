"""PyAV decoding of one media file: frames resampled by timestamp, audio as aligned mono PCM.

Real collections hold mixed containers and codecs, variable frame rates,
files without audio, truncated downloads and files that will not open at all,
so decoding keeps what decodes, notes what did not, and raises `ConvertError`
naming the file (with a summary category) only when nothing usable is left.
The converter (`brave_jax.data.convert`) and its clip cutter build on this.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable, Iterator

import av
import cv2
import numpy as np

_MAX_GAP_S = 30.0  # Longer pauses between video frames are treated as broken timestamps.
_MAX_AUDIO_OFFSET_S = 10.0  # Larger audio/video start offsets are treated as broken timestamps.
# Downmixed audio peaking at most this far above full scale (about +0.8 dB) is clipped and only
# counted in the summary: ordinary lossy files (Vorbis, MP3) overshoot 1.0 slightly all the time.
# Louder peaks also get a warning line naming the file.
CLIP_WARN_PEAK = 1.1


class ConvertError(Exception):
  """A problem with one video file; the message names the file, `reason` groups it in the summary."""

  def __init__(self, message: str, reason: str = 'does not decode'):
    super().__init__(message)
    self.reason = reason



@dataclasses.dataclass
class DecodedVideo:
  """Resampled frames of one file plus the timing facts the summary reports."""
  frames: list  # One entry per output frame: uint8 [H, W, 3] RGB, or frame_fn's result.
  fps: float  # The output frame rate.
  duration_s: float  # Source duration covered by the frames (first pts to end of last frame).
  start_s: float  # pts of the first decoded frame, the time origin of frame 0.
  source_fps: float | None  # The stream's average rate, for information.
  num_decoded: int  # Source frames decoded (before resampling).
  warnings: list[str] = dataclasses.field(default_factory=list)
  # Per output frame: True when it repeats a decoded frame beyond that frame's own time slot
  # (held over a stretch where nothing decoded, e.g. failed Theora packets).
  held: list[bool] = dataclasses.field(default_factory=list)
  # The container's length when the video stream declares none of its own and other streams
  # exist (it may be set by a longer audio stream): `truncation_note` compares it with the audio.
  container_duration_s: float | None = None

  def held_fraction(self, start: int = 0, end: int | None = None) -> float:
    """Fraction of output frames [start, end) that are held frames (0 for an empty range)."""
    flags = self.held[start:end]
    return sum(flags) / len(flags) if flags else 0.0

  @property
  def frames_TxHxWx3(self) -> np.ndarray:
    """The frames as one array (only when no frame_fn transformed them)."""
    return np.stack(self.frames)


def resize_short_side(image_HxWx3: np.ndarray, short_side: int) -> np.ndarray:
  """Resizes so min(H, W) == short_side (INTER_AREA down, INTER_LINEAR up); <= 0 keeps the size."""
  h, w = image_HxWx3.shape[:2]
  if short_side <= 0 or min(h, w) == short_side:
    return image_HxWx3
  scale = short_side / min(h, w)
  new_w = max(1, round(w * scale)) if w > h else short_side
  new_h = max(1, round(h * scale)) if h >= w else short_side
  if w == h:
    new_h = new_w = short_side
  interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
  return cv2.resize(image_HxWx3, (new_w, new_h), interpolation=interp)


def _frame_time(frame: Any, fallback_index: int, fallback_fps: float) -> float | None:
  """Presentation time of a decoded frame in seconds (index-based when pts is missing)."""
  if frame.pts is not None and frame.time_base is not None:
    return float(frame.pts * frame.time_base)
  if fallback_fps > 0:
    return fallback_index / fallback_fps
  return None


def _not_a_video_hint(path: str, error: Exception, kind: str = 'video') -> str:
  """Why av.open failed, in words that fit what the file is (empty, text, cut-short MP4, other).

  `kind` is what the run wanted from the file ('video', or 'audio' under --audio_only), so a
  text file named `.wav` is not called "not a video".
  """
  try:
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
      head = f.read(512)
  except OSError:
    return ''
  if size == 0:
    return ' -- the file is empty (0 bytes): the download or copy failed; fetch it again'
  text = head.replace(b'\r', b'').replace(b'\n', b'').replace(b'\t', b'')
  if text and all(32 <= c < 127 for c in text[:256]):
    first = head.decode('ascii', 'replace').strip().splitlines()[0][:60]
    what = 'an audio file' if kind == 'audio' else 'a video'
    real = 'audio file' if kind == 'audio' else 'video'
    return (f' -- this is a text file, not {what} (it starts with {first!r}: an HTML error page, '
            f'a Git LFS pointer or a saved link?); download the real {real}')
  if head[4:8] == b'ftyp' and isinstance(error, av.InvalidDataError):
    return (' -- an MP4/MOV whose index (moov atom) is missing, usually a download cut short; '
            're-download it')
  what = 'an audio or video' if kind == 'audio' else 'a video'
  return (f' -- not {what} container FFmpeg recognises ({size} bytes, starts with '
          f'{head[:8]!r})')


def _open_reason(hint: str) -> str:
  """The summary's skip category of a file av.open refused, from its hint."""
  if 'is empty' in hint:
    return 'empty file'
  if 'text file' in hint:
    return 'text file, not media'
  if 'moov atom' in hint:
    return 'cut-short MP4/MOV'
  return 'not a media container'


def _open(path: str, kind: str = 'video') -> Any:
  """av.open, with failures turned into a ConvertError that names the file and says what it is."""
  try:
    return av.open(path)
  except (av.FFmpegError, OSError, ValueError) as e:
    hint = _not_a_video_hint(path, e, kind)
    raise ConvertError(f'{path}: cannot open ({type(e).__name__}: {e}){hint}',
                       reason=_open_reason(hint)) from e


_DURATION_TAG = re.compile(r'^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$')


def _duration_tag(stream: Any) -> float | None:
  """A stream's own length from its Matroska/WebM `DURATION` tag (HH:MM:SS.nnnnnnnnn), if any."""
  for key, value in (getattr(stream, 'metadata', None) or {}).items():
    if key.upper() == 'DURATION':
      m = _DURATION_TAG.match(str(value).strip())
      if m:
        return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
  return None


def _declared_duration(container: Any, stream: Any) -> tuple[float, bool]:
  """(length the headers claim, whether the claim is the video stream's own); 0 when unknown.

  Only the video stream's own length (its duration, or a Matroska/WebM DURATION tag) says
  the video was cut short: the container's length is that of its longest stream, often
  the audio (a WebM or FLV whose audio runs on), so it counts as the video's own only when
  the file has no other stream.
  """
  if stream.duration and stream.time_base is not None:
    claimed = float(stream.duration * stream.time_base)
    if stream.frames and stream.average_rate:  # AVI: header frame count outlives truncation.
      claimed = max(claimed, stream.frames / float(stream.average_rate))
    return claimed, True
  tagged = _duration_tag(stream)
  if tagged:
    return tagged, True
  whole = container.duration / 1e6 if container.duration else 0.0
  return whole, len(container.streams) <= 1


def _own_duration(frame: Any) -> float:
  """A frame's own duration in seconds when the container records one, else 0."""
  if frame.duration and frame.time_base is not None:
    return float(frame.duration * frame.time_base)
  return 0.0


def _rgb(frame: Any, short_side: int) -> np.ndarray:
  """A decoded PyAV frame as an upright, resized uint8 RGB array."""
  image = frame.to_ndarray(format='rgb24')
  rotation = getattr(frame, 'rotation', 0) or 0
  quarter_turns = round(rotation / 90) % 4
  if quarter_turns:
    image = np.ascontiguousarray(np.rot90(image, k=quarter_turns))
  return resize_short_side(image, short_side)


def _decode_packets(container: Any, stream: Any, path: str, kind: str,
                    warnings: list[str]) -> Iterator[Any]:
  """Yields decoded frames, skipping packets that fail and noting them (keeps what decodes)."""
  failed, corrupt, first_error = 0, 0, ''
  try:
    for packet in container.demux(stream):
      try:
        for frame in packet.decode():
          corrupt += bool(getattr(frame, 'is_corrupt', False))
          yield frame
      except (av.FFmpegError, ValueError) as e:  # A corrupt packet: skip it, keep going.
        failed += 1
        first_error = first_error or f'{type(e).__name__}: {e}'
  except (av.FFmpegError, ValueError) as e:  # Demuxer gave up (typically a truncated file).
    warnings.append(f'{path}: {kind} demuxing stopped early ({type(e).__name__}: {e}); '
                    'kept what decoded before it')
  if failed:
    warnings.append(f'{path}: {failed} {kind} packet(s) failed to decode and were skipped '
                    f'(first: {first_error})')
  if corrupt:
    warnings.append(f'{path}: {corrupt} {kind} frame(s) decoded with errors (kept)')


def decode_video(path: str, fps: float = 25.0, short_side: int = 256,
                 max_seconds: float | None = None,
                 frame_fn: Callable[[np.ndarray], Any] | None = None) -> DecodedVideo:
  """Decodes one file's first video stream, resampled by timestamp to `fps`.

  Streaming and memory-bounded: only the current source frame is held, each is
  converted to RGB and resized at most once, and `frame_fn` (e.g. JPEG encoding)
  runs once per distinct kept frame, its result shared by repeated output frames.
  """
  if fps <= 0:
    raise ValueError(f'fps must be > 0, got {fps}')
  frame_fn = frame_fn or (lambda x: x)
  warnings: list[str] = []
  container = _open(path)
  with container:
    if not container.streams.video:
      raise ConvertError(f'{path}: no video stream')
    stream = container.streams.video[0]
    source_fps = float(stream.average_rate) if stream.average_rate else None
    guess_fps = source_fps or fps
    # Output frames one source frame covers in a normal stream; copies beyond this are held.
    normal_run = max(1, math.ceil(fps / source_fps - 1e-6)) if source_fps else 1

    frames: list = []
    held: list[bool] = []
    # [time_s, pyav frame (until converted), converted frame, own duration_s, copies emitted]
    current = None
    t0 = start_s = None  # t0 = time origin; moves when a timestamp gap is closed.
    last_gap = None
    num_decoded = 0
    limit = max_seconds if max_seconds and max_seconds > 0 else math.inf
    end = None  # Set when the time limit cut decoding short.

    def emit_until(t_end: float) -> None:
      """Emits `current` for every output time k/fps in [len(frames)/fps, t_end)."""
      while len(frames) / fps < min(t_end, limit) - 1e-9:
        if current[2] is None:
          current[2] = frame_fn(_rgb(current[1], short_side))
          current[1] = None  # Release the decoder's buffer.
        frames.append(current[2])
        current[4] += 1
        held.append(current[4] > normal_run)

    for av_frame in _decode_packets(container, stream, path, 'video', warnings):
      t = _frame_time(av_frame, num_decoded, guess_fps)
      num_decoded += 1
      if t is None:
        continue
      if t0 is None:
        t0 = start_s = t
      t -= t0
      if current is not None:
        if t <= current[0]:  # Duplicate or out-of-order timestamp.
          if t == current[0] and current[2] is None:  # The later frame wins.
            current = [t, av_frame, None, _own_duration(av_frame), 0]
          continue
        if t - current[0] > _MAX_GAP_S:  # Broken timestamps; do not emit hours of copies.
          warnings.append(f'{path}: video timestamps jump {t - current[0]:.1f}s after '
                          f'{current[0]:.2f}s; the gap was closed')
          t0 += t - current[0] - (last_gap or 1.0 / guess_fps)
          t = current[0] + (last_gap or 1.0 / guess_fps)
        last_gap = t - current[0]
        emit_until(t)
      if t >= limit:
        end = limit
        break
      current = [t, av_frame, None, _own_duration(av_frame), 0]

    if current is None:
      raise ConvertError(f'{path}: no video frame could be decoded'
                         + (f' ({"; ".join(warnings)})' if warnings else ''),
                         reason='no frame decodes')
    if end is None:
      # The last frame lasts its own duration, else the typical gap, else 1/source fps.
      end = min(current[0] + (current[3] or last_gap or 1.0 / guess_fps), limit)
      emit_until(end)
    if not frames:
      raise ConvertError(f'{path}: video is shorter than one output frame at {fps} fps',
                         reason='shorter than one frame')
    declared, own = _declared_duration(container, stream)
    container_s = None
    if end < min(declared, limit) - truncation_tolerance(guess_fps):
      if own:
        warnings.append(f'{path}: decoded {end:.2f}s of video but the video stream declares '
                        f'{declared:.2f}s; the rest did not decode (truncated or corrupt file?)')
      else:
        container_s = min(declared, limit)  # Maybe the audio's length: truncation_note decides.
  return DecodedVideo(frames=frames, fps=fps, duration_s=float(end), start_s=float(start_s),
                      source_fps=source_fps, num_decoded=num_decoded, warnings=warnings,
                      held=held, container_duration_s=container_s)


def truncation_tolerance(source_fps: float) -> float:
  """How far short of a declared length a stream may end before it counts as cut short."""
  return max(2.0 / source_fps, 0.1)


@dataclasses.dataclass
class DecodedAudio:
  """Mono float32 PCM plus where it starts, so it can be aligned to the video."""
  waveform: np.ndarray  # float32 [num_samples] in [-1, 1].
  rate: int
  start_s: float  # Time of the first sample in the container's clock.
  warnings: list[str] = dataclasses.field(default_factory=list)
  peak: float = 0.0  # Largest |sample| after downmix, before clipping to [-1, 1].

  @property
  def end_s(self) -> float:
    """Time just after the last sample in the container's clock."""
    return self.start_s + self.waveform.size / self.rate


def decode_audio(path: str, rate: int = 48000, max_seconds: float | None = None,
                 kind: str = 'video') -> DecodedAudio | None:
  """Decodes the first audio stream to mono float PCM at `rate`; None when there is none.

  `kind` ('audio' under --audio_only) words the message when the file does not open.
  """
  warnings: list[str] = []
  container = _open(path, kind)
  with container:
    if not container.streams.audio:
      return None
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format='flt', layout='mono', rate=rate)
    chunks: list[np.ndarray] = []
    num_samples = 0
    start_s = None
    limit = (max_seconds * rate + rate) if max_seconds and max_seconds > 0 else math.inf
    for frame in _decode_packets(container, stream, path, 'audio', warnings):
      if start_s is None and frame.pts is not None and frame.time_base is not None:
        start_s = float(frame.pts * frame.time_base)
      try:
        out_frames = resampler.resample(frame)
      except (av.FFmpegError, ValueError) as e:
        warnings.append(f'{path}: audio frame could not be resampled ({e}); skipped')
        continue
      for out in out_frames:
        chunk = out.to_ndarray().reshape(-1)
        chunks.append(chunk)
        num_samples += chunk.size
      if num_samples >= limit:
        break
    else:
      for out in resampler.resample(None):  # Flush the resampler's delay line.
        chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
      return DecodedAudio(np.zeros([0], np.float32), rate, start_s or 0.0,
                          warnings + [f'{path}: audio stream holds no decodable samples'])
  waveform = np.concatenate(chunks).astype(np.float32, copy=False)
  if not np.all(np.isfinite(waveform)):
    warnings.append(f'{path}: non-finite audio samples replaced by 0')
    waveform = np.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0)
  peak = float(np.abs(waveform).max()) if waveform.size else 0.0
  if peak > 1.0:  # Counted in the summary; only loud overshoots get their own line.
    if peak > CLIP_WARN_PEAK:
      warnings.append(f'{path}: audio peaked at {peak:.3f} after downmix; clipped to [-1, 1]')
    waveform = np.clip(waveform, -1.0, 1.0)
  return DecodedAudio(waveform, rate, start_s or 0.0, warnings, peak=peak)


def align_audio(audio: DecodedAudio, video_start_s: float, video_duration_s: float,
                path: str = '', tolerance_s: float = 0.04) -> tuple[np.ndarray, bool, list[str]]:
  """Cuts/pads the waveform so sample 0 is the first video frame; cuts it at the video's end.

  Returns (waveform, is_short, notes). Audio that ends more than `tolerance_s`
  before the video is kept as is and reported, never padded at the end.
  """
  notes: list[str] = []
  waveform = audio.waveform
  offset_s = audio.start_s - video_start_s
  if abs(offset_s) > _MAX_AUDIO_OFFSET_S:
    notes.append(f'{path}: audio starts {offset_s:+.3f}s from video; timestamps ignored')
    offset_s = 0.0
  offset = int(round(offset_s * audio.rate))
  if offset > 0:
    waveform = np.concatenate([np.zeros([offset], np.float32), waveform])
  elif offset < 0:
    waveform = waveform[-offset:]
  want = int(round(video_duration_s * audio.rate))
  waveform = waveform[:want]
  short = waveform.size < want - tolerance_s * audio.rate
  if short:
    notes.append(f'{path}: audio ends {(want - waveform.size) / audio.rate:.3f}s before the '
                 'video; kept as is')
  return waveform, short, notes



def truncation_note(video: DecodedVideo, audio: DecodedAudio | None, path: str) -> list[str]:
  """The truncation warning for a video stream without a length of its own.

  Its file's length is then the container's, the longest stream's: when the audio runs
  to it, the audio set it and the video is intact; when the audio stops early too, the
  file was cut short.
  """
  declared = video.container_duration_s
  if declared is None:
    return []
  tolerance = truncation_tolerance(video.source_fps or video.fps)
  if audio is not None and audio.waveform.size and audio.end_s >= declared - tolerance:
    return []
  return [f'{path}: decoded {video.duration_s:.2f}s of video but the file declares '
          f'{declared:.2f}s and no stream reaches that; the rest did not decode (truncated or '
          'corrupt file?)']
