"""Writes small synthetic videos and audio files with PyAV, for the converter's tests.

Test-only: every real dataset comes from users' files; these make files with
known content (codecs, containers, variable frame rates, audio offsets).
"""
from __future__ import annotations

import fractions
import os
from typing import Any, Sequence

import av
import numpy as np


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
