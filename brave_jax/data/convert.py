r"""Converts a folder (or CSV) of video files into DMVR shards.

Every training and evaluation dataset enters the project through this file, so
it is written to survive real collections: mixed containers and codecs,
variable frame rates, files without audio, truncated downloads and files that
will not open at all. Bad files are reported by name and skipped; the rest
still convert.

  python -m brave_jax.data.convert --videos=/data/UCF-101 --output_dir=/data/ucf_dmvr \
      --prefix=train --split_file=/data/ucfTrainTestlist/trainlist01.txt \
      --classes_file=/data/ucfTrainTestlist/classInd.txt --workers=8

Frames are resampled by timestamp to `--fps` (for output time t = k/fps the
latest decoded frame with pts <= t is kept), resized so the short side is
`--short_side` and JPEG-encoded; audio is resampled to mono float PCM at
`--audio_rate`, aligned to the first video frame and cut to the video's length.
Shards are written by `dmvr_format.write_shards` in the parent process, and a
summary is printed and saved as `<output_dir>/<prefix>_summary.json`. Both are
written under temporary names and renamed when complete, so an interrupted or
failed run never leaves a half-written file, and a run that converts nothing
writes (and replaces) nothing and exits 1. Reconverting a prefix with another
`--num_shards` deletes the old `<prefix>-*-of-<old total>` set once the new
set is complete.

`--audio_only` converts sound collections (ESC-50, AudioSet): audio files
(wav, flac, ogg, mp3, ...) and the audio of video files become waveform-only
records (mono float PCM at `--audio_rate`, no frames). Labels come from the
first sub-folder, or from a CSV: `path,label[;label...]` rows, or a metadata
CSV with a header naming `--path_column` and `--label_column` (several labels
per clip separated by `--label_separator`, e.g. AudioSet's positive labels):

  python -m brave_jax.data.convert --audio_only --videos=/data/ESC-50/meta/esc50.csv \
      --media_root=/data/ESC-50/audio --path_column=filename --label_column=category \
      --output_dir=/data/esc50_shards --prefix=esc50

`--flow` also stores optical flow (`flow/encoded`, one JPEG per frame) for the
broad 'flow' view, computed by `brave_jax.data.flow` inside the worker
processes between consecutive stored frames at the stored resolution, with
`--flow_method=tvl1|dis|farneback` (recorded per clip as `flow/method` and in
the summary). TV-L1 runs at about 1 frame/s per core at 256 px, DIS at ~150
(bench/flow_extraction.py): use many --workers, or --flow_method=dis.

`--clip_seconds=S [--clip_stride=S2]` cuts each (long) video into records of
round(S * fps) frames starting every round(S2 * fps) frames (stride default:
S, back to back), from one decode of the file: its video stream and its audio
stream are each decoded once, whatever the number of clips. Each record holds
its frames and the audio of exactly those frames (sample k * rate / fps for
frame k, the whole video's alignment kept), its source (`clip/source`: the
video's id, which clip/id extends as `<id>#t=<start>`) and `clip/start_seconds`
(frame 0's time in the source). The tail shorter than a clip is dropped; a
video shorter than one clip gives one record of its whole length. The summary
counts clips per source (`clips_per_source`). Memory: one video's JPEG frames
and waveform, then its serialized clips (each frame freed once no later clip
holds it): 1.9 GB peak RSS for the 596 s Big Buck Bunny at 256 px (as one
whole-video record: 4.2 GB).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import csv
import dataclasses
import fractions
import glob
import json
import math
import multiprocessing
import os
import re
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import av
import cv2
import numpy as np

from brave_jax import tf_startup

tf_startup.import_tensorflow()  # Before dmvr_format's import: TF's start-up banners once.

from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import flow as flow_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.avi', '.mkv', '.webm', '.mov', '.mpg', '.mpeg', '.m2v',
                    '.ts', '.mts', '.m2ts', '.flv', '.wmv', '.3gp', '.ogv', '.ogg', '.vob')
AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.oga', '.opus', '.mp3', '.m4a', '.aac', '.aif',
                    '.aiff', '.wma')
_HMDB_SPLIT_RE = re.compile(r'^(?P<cls>.+)_test_split\d+\.txt$')
_HMDB_SPLIT_CODES = {'train': '1', 'test': '2'}
_MAX_GAP_S = 30.0  # Longer pauses between video frames are treated as broken timestamps.
_MAX_AUDIO_OFFSET_S = 10.0  # Larger audio/video start offsets are treated as broken timestamps.
# Downmixed audio peaking at most this far above full scale (about +0.8 dB) is clipped and only
# counted in the summary: ordinary lossy files (Vorbis, MP3) overshoot 1.0 slightly all the time.
# Louder peaks also get a warning line naming the file.
CLIP_WARN_PEAK = 1.1
# A record whose frames are more than this fraction held (decoded frames repeated to cover
# timestamps where nothing decoded) is counted as "mostly held frames" in the summary.
MOSTLY_HELD = 0.5
SHORT_AUDIO_CLIPS = ('drop', 'pad')  # --short_audio_clips: what to do with a clip whose audio ends early.


class ConvertError(Exception):
  """A problem with one video file; the message names the file, `reason` groups it in the summary."""

  def __init__(self, message: str, reason: str = 'does not decode'):
    super().__init__(message)
    self.reason = reason


# ----------------------------------------------------------------------------- decoding


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
  # exist (it may be set by a longer audio stream): convert_one compares it with the audio.
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
        container_s = min(declared, limit)  # Maybe the audio's length: convert_one decides.
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


# ----------------------------------------------------------------------------- clips


def clip_frame_ranges(num_frames: int, fps: float, clip_seconds: float,
                      clip_stride: float | None = None) -> list[tuple[int, int]]:
  """[start, end) frame ranges of the clips of a num_frames-long video (module docstring).

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


# ----------------------------------------------------------------------------- one video


Label = str | tuple[str, ...] | None  # One class name, several (multi-label), or none.


@dataclasses.dataclass
class Task:
  """One video to convert (picklable, sent to a worker)."""
  path: str
  video_id: str
  label_index: int | list[int] | None
  label_text: str | list[str] | None


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
  reason: str | None = None  # Skip category (ConvertError.reason) when there is no record.
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
    audio = decode_audio(path, audio_rate, max_seconds, kind='audio')
    if audio is None:
      raise ConvertError(f'{path}: no audio stream', reason='no audio stream')
    waveform = audio.waveform
    if max_seconds and max_seconds > 0:
      waveform = waveform[:int(round(max_seconds * audio_rate))]
    if not waveform.size:
      raise ConvertError(f'{path}: no audio sample could be decoded'
                         + (f' ({"; ".join(audio.warnings)})' if audio.warnings else ''),
                         reason='no audio decodes')
    clip = dmvr_format.Clip(waveform=waveform, label_index=label_index, label_text=label_text,
                            video_id=video_id, audio_rate=audio_rate)
    serialized = dmvr_format.encode_clip(clip)
  except ConvertError as e:
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

  With `flow_method` the clip also gets one flow JPEG per frame (module docstring);
  with `audio_only` it holds only the waveform (`convert_audio_one`); with
  `clip_seconds` the file is cut into clips (`cut_clips`), returned in Result.clips,
  and clips whose audio ends early are dropped or padded (`fit_clip_audio`).
  Records more than `max_held_fraction` held frames are left out (None keeps all).
  """
  if audio_only:
    if clip_seconds:
      raise ValueError('--clip_seconds cuts videos; it does not combine with --audio_only')
    return convert_audio_one(path, label_index, label_text, video_id, audio_rate, max_seconds)
  video_id = video_id or os.path.basename(path)
  try:
    encoded_flow = None
    if flow_method:
      flow_encoder = flow_lib.StreamingFlowEncoder(flow_method, jpeg_quality)
      video = decode_video(path, fps, short_side, max_seconds, frame_fn=flow_encoder.add)
      encoded_flow = flow_encoder.encoded_flow(video.frames)
      video.frames = [f.jpeg for f in video.frames]
    else:
      video = decode_video(path, fps, short_side, max_seconds,
                           frame_fn=lambda f: dmvr_format.encode_jpeg(f, jpeg_quality))
    warnings = list(video.warnings)
    waveform, short_audio = None, False
    audio = decode_audio(path, audio_rate, max_seconds)
    warnings += truncation_note(video, audio, path)
    if audio is not None:
      warnings += audio.warnings
      waveform, short_audio, notes = align_audio(audio, video.start_s, video.duration_s, path,
                                                 tolerance_s=1.0 / fps)
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
      ranges = clip_frame_ranges(len(video.frames), fps, clip_seconds, clip_stride)
      clips = []
      for i, cut in enumerate(cut_clips(clip, ranges, audio_rate)):
        start, end = ranges[i]
        kept, action = fit_clip_audio(cut, end - start, audio_rate, short_audio_clips)
        counts[action] += 1
        if kept is not None and not too_held(start, end):
          clips.append(dmvr_format.encode_clip(kept, jpeg_quality))
          record_seconds.append((end - start) / fps)
        # Frames before the next clip are in no later record: free them (memory ~ one copy).
        del cut, kept
        for k in range(ranges[i][0], ranges[i + 1][0] if i + 1 < len(ranges) else len(video.frames)):
          video.frames[k] = None
          if encoded_flow is not None:
            encoded_flow[k] = None
      if not clips:
        raise ConvertError(empty_clips_message(path, counts, ranges, fps, waveform, audio_rate),
                           reason=('held frames' if counts['dropped_held'] else
                                   'audio ends early'))
    elif too_held(0, len(video.frames)):
      raise ConvertError(f'{path}: {100 * video.held_fraction():.0f}% of its frames are held '
                         f'(repeated over stretches that did not decode), above '
                         f'--max_held_fraction={max_held_fraction:g}; left out',
                         reason='held frames')
    else:
      serialized = dmvr_format.encode_clip(clip, jpeg_quality)
      record_seconds.append(len(video.frames) / fps)
  except ConvertError as e:
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


# ----------------------------------------------------------------------------- listing


def read_classes_file(path: str) -> list[str]:
  """Class names in label order: one name per line, or UCF `classInd.txt` lines `N name`."""
  entries = []
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) == 2 and parts[0].isdigit():
        entries.append((int(parts[0]), parts[1]))
      elif len(parts) == 1:
        entries.append((len(entries), parts[0]))
      else:
        raise ValueError(f'{path}:{line_no}: expected "name" or "index name", got {line!r}')
  names = [name for _, name in sorted(entries)]
  if len(set(names)) != len(names):
    raise ValueError(f'{path}: duplicate class names')
  return names


def list_folder(root: str, extensions: Sequence[str] = VIDEO_EXTENSIONS,
                left_out: list[dict[str, str]] | None = None) -> list[tuple[str, str, Label]]:
  """(path, video_id, label) for every media file under root; label = first sub-folder name.

  Files whose extension is not in `extensions` are appended to `left_out` (when given) as
  {'file': relative path, 'reason': ...}, so the summary can say what was not converted
  and which flag would add it; hidden files (.DS_Store, ...) are ignored silently.
  """
  found = []
  extensions = tuple(e.lower() for e in extensions)
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
      if name.startswith('.'):
        continue
      if not name.lower().endswith(extensions):
        if left_out is not None:
          left_out.append({'file': os.path.relpath(os.path.join(dirpath, name), root),
                           'reason': left_out_reason(name)})
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      parts = rel.split(os.sep)
      found.append((path, rel.replace(os.sep, '/'), parts[0] if len(parts) > 1 else None))
  return found


def left_out_reason(name: str) -> str:
  """Why a listed folder's file is not converted, and the flag that would convert it."""
  ext = os.path.splitext(name)[1].lower()
  if not ext:
    return 'no file extension; rename it with its container\'s extension (e.g. .mp4)'
  if ext in AUDIO_EXTENSIONS:
    return f'{ext} is an audio extension; --audio_only converts audio files'
  return (f'extension {ext} is not in the list of media extensions; '
          f'--extra_extensions={ext} adds it')


def parse_extensions(text: str | Sequence[str] | None) -> tuple[str, ...]:
  """'.rm,swf' -> ('.rm', '.swf'): --extra_extensions as lower-case suffixes with a dot."""
  items = text.split(',') if isinstance(text, str) else list(text or ())
  out = []
  for item in items:
    item = item.strip().lower()
    if item:
      out.append(item if item.startswith('.') else '.' + item)
  return tuple(out)


def _split_labels(text: str, separator: str) -> Label:
  """'a;b' -> ('a', 'b') (multi-label), 'a' -> 'a', '' -> None."""
  names = [n.strip() for n in text.split(separator)] if separator else [text.strip()]
  names = [n for n in names if n]
  if not names:
    return None
  return names[0] if len(names) == 1 else tuple(names)


def list_csv(csv_path: str, *, path_column: str | None = None, label_column: str | None = None,
             media_root: str | None = None, label_separator: str = ';'
             ) -> list[tuple[str, str, Label]]:
  """(path, video_id, label) from a CSV; relative paths are relative to `media_root` (or the CSV).

  Without `path_column`: `path[,label]` rows (an optional header row is
  skipped), the label field may hold several labels separated by
  `label_separator`. With `path_column` (and `label_column`): a metadata CSV
  whose header names those columns, e.g. ESC-50's `filename`/`category`.
  """
  base = media_root or os.path.dirname(os.path.abspath(csv_path))
  found = []
  with open(csv_path, newline='') as f:
    rows = [[c.strip() for c in row] for row in csv.reader(f)]
  columns = None
  if path_column:
    header = rows[0] if rows else []
    missing = [c for c in (path_column, label_column) if c and c not in header]
    if missing:
      raise ValueError(f'{csv_path}: no column(s) {missing} in the header {header}')
    columns = (header.index(path_column), header.index(label_column) if label_column else None)
  for row_no, row in enumerate(rows, 1):
    if not row or not row[0] or row[0].startswith('#'):
      continue
    if columns:
      if row_no == 1:
        continue  # Header.
      if len(row) <= max(c for c in columns if c is not None):
        raise ValueError(f'{csv_path}:{row_no}: too few columns for {path_column}/{label_column}')
      rel = row[columns[0]]
      label = _split_labels(row[columns[1]], label_separator) if columns[1] is not None else None
    else:
      if row_no == 1 and row[0].lower() in ('path', 'video', 'filename', 'file'):
        continue  # Header.
      if len(row) > 2:
        raise ValueError(f'{csv_path}:{row_no}: expected "path[,label]", got {row}; for a '
                         'metadata CSV name its columns with --path_column/--label_column')
      rel = row[0]
      label = _split_labels(row[1], label_separator) if len(row) > 1 else None
    path = rel if os.path.isabs(rel) else os.path.join(base, rel)
    found.append((path, rel, label))
  return found


def read_split_files(patterns: Sequence[str], hmdb_split: str | None
                     ) -> dict[str, str | None]:
  """Selected videos from UCF101/HMDB51 split files: {relative path or basename: label}.

  UCF lines are `Class/v_x.avi [index]` (label = Class); HMDB files
  `<class>_test_splitN.txt` hold `x.avi 0|1|2` (1 train, 2 test), picked by `hmdb_split`.
  """
  files = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise ValueError(f'--split_file {pattern!r} matches no file')
    files += matches
  selected: dict[str, str | None] = {}
  for split_path in files:
    hmdb = _HMDB_SPLIT_RE.match(os.path.basename(split_path))
    if hmdb and hmdb_split not in _HMDB_SPLIT_CODES:
      raise ValueError(f'{split_path} is an HMDB51 split file: pass --hmdb_split=train|test')
    with open(split_path) as f:
      for line_no, line in enumerate(f, 1):
        parts = line.split()
        if not parts:
          continue
        if hmdb:
          if len(parts) != 2:
            raise ValueError(f'{split_path}:{line_no}: expected "video.avi 0|1|2", got {line!r}')
          if parts[1] == _HMDB_SPLIT_CODES[hmdb_split]:
            selected[parts[0]] = hmdb.group('cls')
        else:
          rel = parts[0].replace('\\', '/')
          selected[rel] = rel.split('/')[0] if '/' in rel else None
  return selected


def apply_split(videos: list[tuple[str, str, str | None]], selected: dict[str, str | None]
                ) -> tuple[list[tuple[str, str, str | None]], list[str]]:
  """Keeps videos named in the split (by relative path, else basename); lists the missing."""
  by_key = {}
  for entry in videos:
    by_key.setdefault(entry[1], entry)
    by_key.setdefault(os.path.basename(entry[1]), entry)
  kept, missing = [], []
  for key, label in selected.items():
    entry = by_key.get(key) or by_key.get(os.path.basename(key))
    if entry is None:
      missing.append(key)
    else:
      kept.append((entry[0], entry[1], label if label is not None else entry[2]))
  return kept, missing


def label_names(label: Label) -> tuple[str, ...]:
  """The class names of one listed label (none, one, or several)."""
  if label is None:
    return ()
  return (label,) if isinstance(label, str) else tuple(label)


def make_tasks(videos: list[tuple[str, str, Label]], classes: list[str]) -> list[Task]:
  """Attaches label indices (positions in `classes`) to the listed videos (lists when multi-label)."""
  index = {name: i for i, name in enumerate(classes)}
  unknown = sorted({n for _, _, label in videos for n in label_names(label) if n not in index})
  if unknown:
    raise ValueError(f'labels not in the class list: {unknown[:10]}; fix --classes_file or the '
                     'input labels')
  tasks = []
  for path, vid, label in videos:
    if isinstance(label, tuple):
      tasks.append(Task(path, vid, [index[n] for n in label], list(label)))
    else:
      tasks.append(Task(path, vid, index[label] if label is not None else None, label))
  return tasks


# ----------------------------------------------------------------------------- running


def _convert_task(task: Task, options: dict[str, Any]) -> Result:
  """Worker entry point (module level so it pickles)."""
  return convert_one(task.path, task.label_index, task.label_text, task.video_id, **options)


def _init_worker() -> None:
  """One OpenCV thread per worker process: the workers already fill the cores (flow solves)."""
  cv2.setNumThreads(1)


def _run_tasks(tasks: Sequence[Task], options: dict[str, Any], workers: int) -> Iterator[Result]:
  """Results in task order; at most 2*workers videos in flight, so memory stays bounded."""
  if workers <= 1:
    for task in tasks:
      yield _convert_task(task, options)
    return
  # spawn: the parent may already run TensorFlow threads, which fork does not survive safely.
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                              initializer=_init_worker) as pool:
    pending: collections.deque = collections.deque()  # (task, future), in task order.
    task_iter = iter(tasks)
    for task in task_iter:
      pending.append((task, pool.submit(_convert_task, task, options)))
      if len(pending) >= 2 * workers:
        break
    while pending:
      task, future = pending.popleft()
      try:
        yield future.result()
      except concurrent.futures.BrokenExecutor as e:
        raise RuntimeError(
            f'a worker process died while converting {task.path} or a neighbour (FFmpeg crash or '
            'out of memory?); rerun with --workers=1 to find the file, or lower --workers') from e
      task = next(task_iter, None)
      if task is not None:
        pending.append((task, pool.submit(_convert_task, task, options)))


@dataclasses.dataclass
class Summary:
  """What the run did, printed at the end and saved beside the shards."""
  prefix: str
  videos_listed: int = 0
  converted: int = 0
  total_seconds: float = 0.0
  total_frames: int = 0
  no_audio: int = 0
  no_audio_files: list[str] = dataclasses.field(default_factory=list)
  short_audio_files: list[str] = dataclasses.field(default_factory=list)
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  skipped_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
  # Files in the folder that were not listed (extension not in the list), with the reason.
  left_out: list[dict[str, str]] = dataclasses.field(default_factory=list)
  missing_from_split: list[str] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)
  classes: list[str] = dataclasses.field(default_factory=list)
  shards: list[str] = dataclasses.field(default_factory=list)
  # Shards of this prefix with another total, deleted once the new set was complete.
  replaced_shards: list[str] = dataclasses.field(default_factory=list)
  fps: float = 25.0
  audio_rate: int = 48000
  short_side: int = 256
  flow_method: str | None = None  # Optical flow algorithm of flow/encoded; None = no flow.
  audio_only: bool = False  # Waveform-only records (no frames).
  clip_seconds: float | None = None  # --clip_seconds: videos cut into clips of this length ...
  clip_stride: float | None = None  # ... starting this far apart (None: back to back).
  clips_per_source: dict[str, int] = dataclasses.field(default_factory=dict)
  records: int = 0  # Records written: one per video, or its clips.
  short_audio_clips: str = 'drop'  # --short_audio_clips policy ...
  clips_dropped_short_audio: int = 0  # ... clips it left out (audio ends early) ...
  clips_padded_short_audio: int = 0  # ... or padded with silence.
  # Records shorter than one clip (sources shorter than --clip_seconds, kept whole): the
  # pipelines loop them (repeat from their start) to fill their windows.
  looped_short_records: int = 0
  shortest_record_seconds: float | None = None
  clipped_audio: int = 0  # Files whose downmixed audio peaked above 1.0 and was clipped.
  clipped_audio_max_peak: float = 0.0
  max_held_fraction: float | None = None  # --max_held_fraction (None: held records kept).
  mostly_held_records: int = 0  # Records written with more than MOSTLY_HELD held frames ...
  mostly_held_sources: list[str] = dataclasses.field(default_factory=list)
  dropped_held_records: int = 0  # ... and records left out for it.
  wall_seconds: float = 0.0

  def add(self, result: Result) -> None:
    """Counts one worker result."""
    self.warnings += result.warnings
    self.clips_dropped_short_audio += result.clips_dropped_short_audio
    self.clips_padded_short_audio += result.clips_padded_short_audio
    self.dropped_held_records += result.dropped_held
    if result.audio_peak > 1.0:
      self.clipped_audio += 1
      self.clipped_audio_max_peak = max(self.clipped_audio_max_peak, result.audio_peak)
    if not result.ok:
      reason = result.reason or 'error'
      self.skipped.append({'video': result.video_id, 'reason': result.error or 'unknown',
                           'category': reason})
      self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
      return
    self.converted += 1
    self.records += len(result.records())
    if result.clips is not None:
      self.clips_per_source[result.video_id] = len(result.clips)
    if result.mostly_held:
      self.mostly_held_records += result.mostly_held
      self.mostly_held_sources.append(result.video_id)
    if self.clip_seconds:
      self.looped_short_records += sum(s < self.clip_seconds - 0.5 / self.fps
                                       for s in result.record_seconds)
    if result.record_seconds:
      shortest = min(result.record_seconds)
      if self.shortest_record_seconds is None or shortest < self.shortest_record_seconds:
        self.shortest_record_seconds = shortest
    self.total_seconds += result.duration_s
    self.total_frames += result.num_frames
    if not result.has_audio:
      self.no_audio += 1
      self.no_audio_files.append(result.video_id)
    if result.short_audio:
      self.short_audio_files.append(result.video_id)

  def text(self) -> str:
    """Human-readable lines for the end of the run: details first, the counts last."""
    lines = []
    if self.clip_seconds:
      lines.append(f'  cut into {self.records} clips of {self.clip_seconds:g}s every '
                   f'{self.clip_stride or self.clip_seconds:g}s: '
                   + ', '.join(f'{k} {v}' for k, v in list(self.clips_per_source.items())[:20])
                   + (' ...' if len(self.clips_per_source) > 20 else ''))
    if self.replaced_shards:
      lines.append(f'  removed {len(self.replaced_shards)} shard(s) of an earlier conversion with '
                   f'another --num_shards, e.g. {self.replaced_shards[0]}')
    lines += [f'  skipped {s["video"]}: {s["reason"]}' for s in self.skipped[:50]]
    if self.missing_from_split:
      lines.append(f'  {len(self.missing_from_split)} video(s) named in the split file were not '
                   f'found, e.g. {self.missing_from_split[:5]}')
    lines += [f'  warning: {w}' for w in self.warnings[:50]]
    if len(self.warnings) > 50:
      lines.append(f'  ... {len(self.warnings) - 50} more warnings in the summary JSON')
    counts = self.count_lines()
    lines += [f'  {line}' for line in counts[:-1]] + counts[-1:]  # The totals line last.
    return '\n'.join(lines)

  def count_lines(self) -> list[str]:
    """The counts a user checks after a run, one topic a line, the totals last."""
    what = (f'{self.total_seconds:.1f}s of audio (waveform only, {self.audio_rate} Hz)'
            if self.audio_only else
            f'{self.total_seconds:.1f}s of video ({self.total_frames} frames at {self.fps:g} fps)')
    lines = []
    unlisted = [f for f in self.left_out if f['reason'].startswith('extension ')]
    if unlisted:
      exts = sorted({os.path.splitext(f['file'])[1].lower() for f in unlisted})
      lines.append(f'left out {len(unlisted)} file(s) whose extension is not in the list: '
                   + ', '.join(f['file'] for f in unlisted[:5])
                   + (' ...' if len(unlisted) > 5 else '')
                   + f'; --extra_extensions={",".join(exts)} adds them')
    others = [f for f in self.left_out if f not in unlisted]
    for reason, n in collections.Counter(f['reason'] for f in others).most_common():
      names = [f['file'] for f in others if f['reason'] == reason]
      lines.append(f'left out {n} file(s): {", ".join(names[:5])}{" ..." if n > 5 else ""} '
                   f'({reason})')
    if self.skipped:
      lines.append(f'skipped {len(self.skipped)} file(s) (named above): '
                   + ', '.join(f'{r} {n}' for r, n in sorted(self.skipped_by_reason.items(),
                                                             key=lambda kv: -kv[1])))
    if self.clip_seconds:
      action = ('dropped' if self.short_audio_clips == 'drop' else 'padded with silence')
      other = 'pad' if self.short_audio_clips == 'drop' else 'drop'
      n = (self.clips_dropped_short_audio if self.short_audio_clips == 'drop'
           else self.clips_padded_short_audio)
      lines.append(f'clips whose audio ends early: {n} {action} '
                   f'(--short_audio_clips={self.short_audio_clips}; ={other} to {other} them)')
      lines.append(f'records shorter than one {self.clip_seconds:g}s clip (whole short videos, '
                   f'looped by the pipelines to fill their windows): {self.looped_short_records}')
    if self.shortest_record_seconds is not None:
      lines.append(f'shortest record: {self.shortest_record_seconds:.2f}s (records shorter than '
                   "a model's window are looped to fill it)")
    if not self.audio_only:
      held = f'records made mostly (>{MOSTLY_HELD:.0%}) of held frames: {self.mostly_held_records}'
      if self.mostly_held_sources:
        held += f' (from {", ".join(self.mostly_held_sources[:5])})'
      if self.max_held_fraction is not None:
        held += (f'; left out over --max_held_fraction={self.max_held_fraction:g}: '
                 f'{self.dropped_held_records}')
      elif self.mostly_held_records:
        held += '; kept (--max_held_fraction=F leaves out records with more held frames)'
      lines.append(held)
    lines.append(f'audio clipped (peak above 1.0 after downmix, clipped to [-1, 1]): '
                 f'{self.clipped_audio} file(s)'
                 + (f', largest peak {self.clipped_audio_max_peak:.3f} (files above '
                    f'{CLIP_WARN_PEAK:g} are named in the warnings)' if self.clipped_audio else ''))
    if not self.audio_only:
      lines.append(f'without audio: {self.no_audio}; audio shorter than video: '
                   f'{len(self.short_audio_files)}'
                   + (f'; flow: {self.flow_method}' if self.flow_method else ''))
    lines.append(f'[{self.prefix}] converted {self.converted}/{self.videos_listed} '
                 f'{"clips" if self.audio_only else "videos"} into {self.records} record(s), '
                 f'{what}, in {self.wall_seconds:.1f}s into {len(self.shards)} shard(s); '
                 f'skipped {len(self.skipped)}'
                 + (f'; {len(self.left_out)} other file(s) left out' if self.left_out else ''))
    return lines


def summary_path(output_dir: str, prefix: str) -> str:
  return os.path.join(output_dir, f'{prefix}_summary.json')


def write_summary(summary: Summary, output_dir: str) -> str:
  """Writes <prefix>_summary.json atomically (temporary file, then rename)."""
  path = summary_path(output_dir, summary.prefix)
  tmp = os.path.join(output_dir, f'.{summary.prefix}_summary.json.{os.getpid()}.tmp')
  try:
    with open(tmp, 'w') as f:
      json.dump(dataclasses.asdict(summary), f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def convert(videos: str, output_dir: str, prefix: str = 'train', fps: float = 25.0,
            audio_rate: int = 48000, short_side: int = 256, num_shards: int | None = None,
            workers: int = 1, split_files: Sequence[str] = (), hmdb_split: str | None = None,
            classes_file: str | None = None, jpeg_quality: int = 95,
            max_seconds: float | None = None, progress: bool = True,
            flow_method: str | None = None, audio_only: bool = False,
            path_column: str | None = None, label_column: str | None = None,
            media_root: str | None = None, label_separator: str = ';',
            clip_seconds: float | None = None, clip_stride: float | None = None,
            short_audio_clips: str = 'drop', max_held_fraction: float | None = None,
            extra_extensions: Sequence[str] | str = ()) -> Summary:
  """Lists, converts and shards a dataset; returns (and saves) the summary.

  `flow_method` (one of flow.METHODS) also stores optical flow; None stores none.
  `audio_only` writes waveform-only records of audio files and of videos' audio.
  `clip_seconds` (and `clip_stride`) cut each video into clips (module docstring);
  `short_audio_clips` ('drop' or 'pad') says what happens to a clip whose audio ends early.
  `max_held_fraction` leaves out records with more held frames (None: count them only).
  `extra_extensions` adds file extensions to those a folder listing takes.
  """
  start = time.time()
  if flow_method and flow_method not in flow_lib.METHODS:
    raise ValueError(f'--flow_method={flow_method!r} is unknown; choose from {flow_lib.METHODS}')
  if flow_method:
    flow_lib.make_flow_fn(flow_method)  # Fails here, once, if OpenCV lacks the method.
  if audio_only and flow_method:
    raise ValueError('--audio_only records hold no frames, so no --flow')
  if audio_only and clip_seconds:
    raise ValueError('--clip_seconds cuts videos; it does not combine with --audio_only')
  if clip_stride and not clip_seconds:
    raise ValueError('--clip_stride needs --clip_seconds (the clip length)')
  if clip_seconds is not None:
    clip_frame_ranges(0, fps, clip_seconds, clip_stride)  # Fails here, once, on a bad length.
  if short_audio_clips not in SHORT_AUDIO_CLIPS:
    raise ValueError(f'--short_audio_clips={short_audio_clips!r}: choose from {SHORT_AUDIO_CLIPS}')
  if max_held_fraction is not None and not 0.0 <= max_held_fraction <= 1.0:
    raise ValueError(f'--max_held_fraction={max_held_fraction}: a fraction in [0, 1]')
  left_out: list[dict[str, str]] = []
  if os.path.isdir(videos):
    listed = list_folder(videos, (AUDIO_EXTENSIONS + VIDEO_EXTENSIONS if audio_only
                                  else VIDEO_EXTENSIONS) + parse_extensions(extra_extensions),
                         left_out=left_out)
  elif os.path.isfile(videos):
    listed = list_csv(videos, path_column=path_column, label_column=label_column,
                      media_root=media_root, label_separator=label_separator)
  else:
    raise FileNotFoundError(f'--videos={videos!r} is neither a folder nor a CSV file')
  if classes_file:
    classes = read_classes_file(classes_file)
  else:  # Sorted names, so separately written train and test shards agree.
    classes = sorted({n for _, _, label in listed for n in label_names(label)})
  missing: list[str] = []
  if split_files:
    selection = read_split_files(split_files, hmdb_split)
    listed, missing = apply_split(listed, selection)
    if not classes_file:
      classes = sorted(set(classes) | {n for _, _, l in listed for n in label_names(l)})
  tasks = make_tasks(listed, classes)
  if not tasks:
    raise ValueError(f'no videos found in {videos!r}'
                     + (' after applying the split file(s)' if split_files else '')
                     + (f'; left out {len(left_out)} file(s), e.g. {left_out[0]["file"]}: '
                        f'{left_out[0]["reason"]}' if left_out else ''))
  num_records = (sum(estimate_clips(t.path, clip_seconds, clip_stride, max_seconds) for t in tasks)
                 if clip_seconds else len(tasks))
  num_shards = num_shards or max(1, math.ceil(num_records / 32))

  summary = Summary(prefix=prefix, videos_listed=len(tasks), classes=classes,
                    missing_from_split=missing, fps=fps, audio_rate=audio_rate,
                    short_side=short_side, flow_method=flow_method or None,
                    audio_only=audio_only, clip_seconds=clip_seconds or None,
                    clip_stride=clip_stride or None, left_out=left_out,
                    short_audio_clips=short_audio_clips, max_held_fraction=max_held_fraction)
  options = dict(fps=fps, audio_rate=audio_rate, short_side=short_side,
                 jpeg_quality=jpeg_quality, max_seconds=max_seconds, flow_method=flow_method,
                 audio_only=audio_only, clip_seconds=clip_seconds or None,
                 clip_stride=clip_stride or None)
  if not audio_only:
    options.update(short_audio_clips=short_audio_clips, max_held_fraction=max_held_fraction)
  results: Iterable[Result] = _run_tasks(tasks, options, workers)
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=len(tasks), desc=f'convert {prefix}', unit='video')

  def examples() -> Iterator[bytes]:
    for result in results:
      summary.add(result)
      if bar is not None:
        bar.update(1)
        bar.set_postfix(ok=summary.converted, skipped=len(summary.skipped), refresh=False)
      yield from result.records()

  summary.replaced_shards = dmvr_format.stale_shards(output_dir, prefix, num_shards)
  try:
    summary.shards = dmvr_format.write_shards(examples(), output_dir, prefix, num_shards)
  except dmvr_format.NothingToWriteError:
    summary.shards, summary.replaced_shards = [], []  # Nothing written, replaced or removed.
  finally:
    if bar is not None:
      bar.close()
  summary.wall_seconds = time.time() - start
  if summary.shards:
    write_summary(summary, output_dir)
  return summary


# ----------------------------------------------------------------------------- test videos


_DEFAULT_AUDIO_CODEC = {'.mp4': 'aac', '.m4v': 'aac', '.mov': 'aac', '.mkv': 'aac',
                        '.webm': 'libopus', '.avi': 'pcm_s16le', '.mpg': 'mp2', '.mpeg': 'mp2',
                        '.ts': 'mp2'}


def write_test_video(path: str, frames_TxHxWx3: np.ndarray, fps: float = 25.0,
                     codec: str = 'libx264', audio: np.ndarray | None = None,
                     audio_rate: int = 48000, audio_codec: str | None = None,
                     timestamps_s: Sequence[float] | None = None,
                     pix_fmt: str = 'yuv420p', bit_rate: int | None = None) -> str:
  """Writes a synthetic video (and optional mono float audio) with PyAV, for tests and demos.

  `timestamps_s` gives each frame's presentation time, making a variable-frame-rate
  file; the container follows the extension and the audio codec defaults per container.
  """
  frames_TxHxWx3 = np.asarray(frames_TxHxWx3, np.uint8)
  _, height, width, _ = frames_TxHxWx3.shape
  ext = os.path.splitext(path)[1].lower()
  rate = fractions.Fraction(fps).limit_denominator(1001)
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if bit_rate:
      stream.bit_rate = bit_rate
    elif codec in ('mpeg4', 'mpeg1video', 'mpeg2video'):
      stream.codec_context.qmin, stream.codec_context.qmax = 1, 4  # Near-lossless.
    elif codec in ('libx264', 'h264'):
      stream.options = {'crf': '12'}
    elif codec in ('libx265', 'hevc'):
      stream.options = {'crf': '12', 'x265-params': 'log-level=error'}
    elif codec.startswith('libvpx'):
      stream.bit_rate = 2_000_000
    time_base = fractions.Fraction(1, 1000) if timestamps_s is not None else 1 / rate
    stream.codec_context.time_base = time_base
    a_stream = None
    if audio is not None:
      a_codec = audio_codec or _DEFAULT_AUDIO_CODEC.get(ext, 'aac')
      a_stream = container.add_stream(a_codec, rate=audio_rate)
      a_stream.layout = 'mono'
      a_stream.bit_rate = 192_000
    for i, image in enumerate(frames_TxHxWx3):
      frame = av.VideoFrame.from_ndarray(image, format='rgb24')
      frame.pts = (round(timestamps_s[i] * 1000) if timestamps_s is not None else i)
      frame.time_base = time_base
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
    if a_stream is not None:
      _mux_mono_audio(container, a_stream, audio, audio_rate, chunk=4800)
  return path


def _mux_mono_audio(container: Any, stream: Any, samples: np.ndarray, rate: int,
                    chunk: int) -> None:
  """Encodes mono float samples into `stream` in frames of `chunk` samples, then flushes it."""
  samples = np.asarray(samples, np.float32).reshape(-1)
  for start in range(0, samples.size, chunk):
    frame = av.AudioFrame.from_ndarray(samples[None, start:start + chunk], format='flt',
                                       layout='mono')
    frame.sample_rate = rate
    frame.pts = start
    frame.time_base = fractions.Fraction(1, rate)
    container.mux(stream.encode(frame))
  container.mux(stream.encode())


def write_test_audio(path: str, samples: np.ndarray, rate: int = 48000,
                     codec: str | None = None) -> str:
  """Writes an audio-only file (mono float samples in [-1, 1]) with PyAV, for tests and demos.

  The codec follows the extension: wav pcm_s16le, flac, mp3 (libmp3lame), ogg/opus (opus at 48 kHz).
  """
  ext = os.path.splitext(path)[1].lower()
  codec = codec or {'.wav': 'pcm_s16le', '.flac': 'flac', '.mp3': 'libmp3lame', '.ogg': 'libopus',
                    '.opus': 'libopus', '.m4a': 'aac'}.get(ext, 'pcm_s16le')
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=rate)
    stream.layout = 'mono'
    _mux_mono_audio(container, stream, samples, rate, chunk=960 if codec == 'libopus' else 4800)
  return path


# ----------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m brave_jax.data.convert',
                              description=__doc__.split('\n\n')[0])
  p.add_argument('--videos', required=True,
                 help='folder of videos (labels = first sub-folder) or CSV of path[,label[;label]]')
  p.add_argument('--audio_only', action='store_true',
                 help='waveform-only records from audio files (wav, flac, ogg, mp3, ...) and '
                      "videos' audio, for audio evaluation (ESC-50, AudioSet)")
  p.add_argument('--path_column', default=None,
                 help='CSV with a header: the column of file paths (e.g. ESC-50: filename)')
  p.add_argument('--label_column', default=None,
                 help='CSV with a header: the column of labels (e.g. ESC-50: category)')
  p.add_argument('--label_separator', default=';',
                 help='separates several labels of one clip in the CSV label field')
  p.add_argument('--media_root', default=None,
                 help="CSV paths are relative to this folder (default: the CSV's folder)")
  p.add_argument('--output_dir', required=True)
  p.add_argument('--prefix', default='train', help='shard name prefix, e.g. train or test')
  p.add_argument('--fps', type=float, default=25.0)
  p.add_argument('--audio_rate', type=int, default=48000)
  p.add_argument('--short_side', type=int, default=256, help='<= 0 keeps the source size')
  p.add_argument('--num_shards', type=int, default=None, help='default: one per 32 videos')
  p.add_argument('--workers', type=int, default=1, help='decoding processes')
  p.add_argument('--split_file', action='append', default=[],
                 help='UCF101 train/testlist or HMDB51 *_test_splitN.txt; repeat or glob')
  p.add_argument('--hmdb_split', choices=('train', 'test'), default=None)
  p.add_argument('--classes_file', default=None,
                 help='class list in label order (names, or UCF classInd.txt); default: sorted')
  p.add_argument('--jpeg_quality', type=int, default=95)
  p.add_argument('--max_seconds', type=float, default=None, help='keep at most this much per video')
  p.add_argument('--flow', action='store_true',
                 help='also store optical flow (flow/encoded) for the broad flow view')
  p.add_argument('--flow_method', choices=flow_lib.METHODS, default='tvl1',
                 help='flow algorithm with --flow: tvl1 (accurate, slow), dis or farneback (fast)')
  p.add_argument('--clip_seconds', type=float, default=None,
                 help='cut each video into records of this many seconds (one decode per video); '
                      'each record names its clip/source and clip/start_seconds')
  p.add_argument('--clip_stride', type=float, default=None,
                 help='with --clip_seconds: seconds between clip starts (default: the clip length)')
  p.add_argument('--short_audio_clips', choices=SHORT_AUDIO_CLIPS, default='drop',
                 help='with --clip_seconds: a clip whose audio ends more than a frame early is '
                      'dropped (default) or padded with silence (pad); the summary counts them')
  p.add_argument('--max_held_fraction', type=float, default=None,
                 help='leave out records (clips) with more than this fraction of held frames '
                      '(frames repeated over stretches that did not decode); default: keep and '
                      'count them')
  p.add_argument('--extra_extensions', default='',
                 help='comma list of file extensions a folder listing also converts, e.g. '
                      '.rm,.swf (files with other extensions are named in the summary)')
  p.add_argument('--no_progress', action='store_true')
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI: converts, prints the summary; exit 1 when nothing converted (nothing written), 2 on errors."""
  args = _parse_args(argv)
  split_files = [s for arg in args.split_file for s in arg.split(',') if s]
  try:
    summary = convert(args.videos, args.output_dir, prefix=args.prefix, fps=args.fps,
                      audio_rate=args.audio_rate, short_side=args.short_side,
                      num_shards=args.num_shards, workers=args.workers, split_files=split_files,
                      hmdb_split=args.hmdb_split, classes_file=args.classes_file,
                      jpeg_quality=args.jpeg_quality, max_seconds=args.max_seconds,
                      progress=not args.no_progress,
                      flow_method=args.flow_method if args.flow else None,
                      audio_only=args.audio_only, path_column=args.path_column,
                      label_column=args.label_column, media_root=args.media_root,
                      label_separator=args.label_separator, clip_seconds=args.clip_seconds,
                      clip_stride=args.clip_stride, short_audio_clips=args.short_audio_clips,
                      max_held_fraction=args.max_held_fraction,
                      extra_extensions=args.extra_extensions)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(summary.text())
  if not summary.converted:
    print(f'nothing converted, so nothing written: existing shards and summary in '
          f'{args.output_dir} are untouched', file=sys.stderr)
    return 1
  print(f'summary: {summary_path(args.output_dir, args.prefix)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
