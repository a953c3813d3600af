"""The log-mel spectrogram against an independent numpy computation (HTK mel, as TF)."""
import numpy as np
import tensorflow as tf

from brave_jax.data import spectrogram


def _hz_to_mel(f):
  return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


def _mel_matrix(num_mel_bins, num_spec_bins, sample_rate, lo, hi):
  """[num_spec_bins, num_mel_bins] triangles in mel space; the DC bin gets no weight."""
  freqs = np.linspace(0.0, sample_rate / 2.0, num_spec_bins)[1:]
  spec_mel = _hz_to_mel(freqs)[:, None]
  edges = np.linspace(_hz_to_mel(lo), _hz_to_mel(hi), num_mel_bins + 2)
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  up = (spec_mel - lower) / (center - lower)
  down = (upper - spec_mel) / (upper - center)
  w = np.maximum(0.0, np.minimum(up, down))
  return np.concatenate([np.zeros((1, num_mel_bins)), w], 0)


def _numpy_log_mel(wave, rate, bins, frame_length, step, fft_length, lo, hi):
  num_frames = -(-len(wave) // step)
  padded = np.zeros((num_frames - 1) * step + frame_length)
  padded[:len(wave)] = wave
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame_length) / frame_length)  # periodic
  frames = np.stack([padded[i * step:i * step + frame_length] for i in range(num_frames)])
  mag = np.abs(np.fft.rfft(frames * window, n=fft_length))
  mel = mag @ _mel_matrix(bins, fft_length // 2 + 1, rate, lo, hi)
  return np.log(1.0 + 10000.0 * mel)


def test_log_mel_matches_numpy():
  rate = 16000
  rng = np.random.RandomState(0)
  t = np.arange(3000) / rate
  wave = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.randn(t.size)).astype(np.float32)
  params = dict(sample_rate=rate, num_mel_bins=20, frame_length=320, frame_step=160,
                fft_length=320, lower_edge_hz=80.0, upper_edge_hz=7600.0)
  got = spectrogram.log_mel_spectrogram(tf.constant(wave), **params).numpy()
  want = _numpy_log_mel(wave.astype(np.float64), rate, 20, 320, 160, 320, 80.0, 7600.0)
  assert got.shape == (spectrogram.num_spectrogram_frames(3000, 160), 20) == (19, 20)
  np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_from_config_uses_config_fields(tiny_va_config):
  c = tiny_va_config
  c.data.audio_sample_rate = 16000
  c.data.audio.num_mel_bins = 12
  out = spectrogram.from_config(tf.zeros([1600]), c.data)
  assert out.shape == (10, 12)
  np.testing.assert_allclose(out.numpy(), 0.0)  # log(1 + 0)
