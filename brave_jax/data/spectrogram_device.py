"""The log-mel of `spectrogram.py` in jax.numpy, so the training step can compute it on the device.

With config.data.augment_on='device' the pretraining pipeline ships the broad
audio view as its waveform and the step turns it into the log-mel: on the host
it costs 5-6 CPU ms per full-size V/A clip (about a tenth of the host's work on
the device path), on an accelerator 144 MFLOP (docs/data.md has the numbers).

The same ops as `spectrogram.log_mel_spectrogram` (tf.signal.stft with
pad_end=True): ceil(S / frame_step) frames, the waveform's end padded with
zeros; times the periodic Hann window; rfft of fft_length; magnitude; TF's mel
matrix; log(1 + 10000 * mel). The window and the mel matrix are TF's own,
computed once per setting at trace time, so only the FFT and the sums round
differently from the host (tests/test_data_spectrogram.py measures it).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from brave_jax.data import spectrogram


@functools.lru_cache(maxsize=None)
def hann_window(frame_length: int) -> np.ndarray:
  """float32 [frame_length]: tf.signal.hann_window(periodic=True), TF's values."""
  return tf.signal.hann_window(frame_length, periodic=True).numpy()


@functools.lru_cache(maxsize=None)
def mel_matrix(num_mel_bins: int, fft_length: int, sample_rate: float, lower_edge_hz: float,
               upper_edge_hz: float) -> np.ndarray:
  """float32 [fft_length // 2 + 1, num_mel_bins]: tf.signal.linear_to_mel_weight_matrix's."""
  return tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=num_mel_bins, num_spectrogram_bins=fft_length // 2 + 1,
      sample_rate=sample_rate, lower_edge_hertz=lower_edge_hz,
      upper_edge_hertz=upper_edge_hz).numpy()


def frame(waveform_xS: jax.Array, frame_length: int, frame_step: int) -> jax.Array:
  """[..., F, frame_length] frames as tf.signal.frame(pad_end=True) cuts them: F = ceil(S / step),
  the end zero-padded. Static slices of [step]-sample blocks, no gather: frame f is blocks
  f .. f + ceil(length / step) - 1 joined and cut to frame_length."""
  num_samples = waveform_xS.shape[-1]
  num_frames = spectrogram.num_spectrogram_frames(num_samples, frame_step)
  blocks_per_frame = math.ceil(frame_length / frame_step)
  padded = (num_frames + blocks_per_frame - 1) * frame_step
  lead = waveform_xS.shape[:-1]
  x = jnp.pad(waveform_xS, [(0, 0)] * len(lead) + [(0, padded - num_samples)])
  blocks_xBxP = x.reshape(lead + (num_frames + blocks_per_frame - 1, frame_step))
  frames_xFxL = jnp.concatenate(
      [blocks_xBxP[..., i:i + num_frames, :] for i in range(blocks_per_frame)], axis=-1)
  return frames_xFxL[..., :frame_length]


def log_mel_spectrogram(waveform_xS: jax.Array, *, sample_rate: float, num_mel_bins: int,
                        frame_length: int, frame_step: int, fft_length: int,
                        lower_edge_hz: float, upper_edge_hz: float) -> jax.Array:
  """float32 [..., F, num_mel_bins] log-mel of mono waveforms [..., S]: `spectrogram.py`'s twin."""
  frames_xFxL = frame(jnp.asarray(waveform_xS, jnp.float32), frame_length, frame_step)
  window_L = jnp.asarray(hann_window(frame_length))
  magnitude_xFxK = jnp.abs(jnp.fft.rfft(frames_xFxL * window_L, n=fft_length, axis=-1))
  mel_KxM = jnp.asarray(mel_matrix(num_mel_bins, fft_length, float(sample_rate),
                                   float(lower_edge_hz), float(upper_edge_hz)))
  # HIGHEST: TPUs would otherwise multiply in bfloat16 (log-mel errors of ~1e-2).
  mel_xFxM = jnp.matmul(magnitude_xFxK, mel_KxM, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(1.0 + spectrogram.LOG_OFFSET_SCALE * mel_xFxM)


def from_config(waveform_xS: jax.Array, data_config: ml_collections.ConfigDict) -> jax.Array:
  """log_mel_spectrogram with every parameter read from config.data (as spectrogram.from_config)."""
  return log_mel_spectrogram(waveform_xS, **spectrogram.settings(data_config))
