"""Log-mel spectrogram of the broad-view waveform, as the published audio backbone expects.

STFT (Hann window, end padded) -> magnitude -> mel (HTK scale, TF's matrix)
-> log(1 + 10000 * mel); every number comes from config.data.audio.
"""
from __future__ import annotations

import math
from typing import Any

import ml_collections
import tensorflow as tf

LOG_OFFSET_SCALE = 10000.0  # log(1 + 10000 * mel), as published.


def num_spectrogram_frames(num_samples: int, frame_step: int) -> int:
  """Frames tf.signal.stft(pad_end=True) gives: ceil(samples / step)."""
  return int(math.ceil(num_samples / frame_step))


def log_mel_spectrogram(waveform_S: tf.Tensor, *, sample_rate: float, num_mel_bins: int,
                        frame_length: int, frame_step: int, fft_length: int,
                        lower_edge_hz: float, upper_edge_hz: float) -> tf.Tensor:
  """float32 [F, num_mel_bins] log-mel of a mono waveform."""
  stft = tf.signal.stft(tf.cast(waveform_S, tf.float32), frame_length=frame_length,
                        frame_step=frame_step, fft_length=fft_length,
                        window_fn=tf.signal.hann_window, pad_end=True)
  magnitude_FxK = tf.abs(stft)
  mel_KxM = tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=num_mel_bins, num_spectrogram_bins=fft_length // 2 + 1,
      sample_rate=sample_rate, lower_edge_hertz=lower_edge_hz, upper_edge_hertz=upper_edge_hz)
  mel_FxM = tf.matmul(magnitude_FxK, mel_KxM)
  return tf.math.log(1.0 + LOG_OFFSET_SCALE * mel_FxM)


def settings(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The log-mel's keyword arguments read from config.data, for this module and its jax twin
  (spectrogram_device), so both always compute the same spectrogram."""
  a = data_config.audio
  return dict(sample_rate=float(data_config.audio_sample_rate), num_mel_bins=a.num_mel_bins,
              frame_length=a.frame_length, frame_step=a.frame_step, fft_length=a.fft_length,
              lower_edge_hz=a.lower_edge_hz, upper_edge_hz=a.upper_edge_hz)


def from_config(waveform_S: tf.Tensor, data_config: ml_collections.ConfigDict) -> tf.Tensor:
  """log_mel_spectrogram with every parameter read from config.data."""
  return log_mel_spectrogram(waveform_S, **settings(data_config))
