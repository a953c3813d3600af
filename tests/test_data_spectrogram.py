"""The log-mel spectrogram against the published one (tests/testdata/spectrogram.npz)."""
import functools

import jax
import numpy as np
import pytest
import tensorflow as tf

from brave_jax import config_base
from brave_jax.data import spectrogram
from brave_jax.data import spectrogram_device
from conftest import config_path


def _published_settings(golden) -> dict:
  """The published V/A log-mel settings (its config and spectrogram module defaults)."""
  return dict(sample_rate=float(golden['sample_rate']), num_mel_bins=int(golden['num_bins']),
              frame_step=int(golden['fft_step']), frame_length=320, fft_length=320,
              lower_edge_hz=80.0, upper_edge_hz=7600.0)


@pytest.mark.parametrize('length', ['long', 'short'])
def test_log_mel_equals_the_published_spectrogram(length, testdata_dir):
  """tests/testdata/spectrogram.npz: the published log-mel (48 kHz, 80 bins, step 160) of a
  10.24 s (the broad view's 491,520 samples) and a 1 s waveform; ours is bit for bit equal."""
  golden = np.load(testdata_dir / 'spectrogram.npz')
  wave, want = golden[f'{length}_waveform'], golden[f'{length}_log_mel']
  data = config_base.load(config_path('brave_rgb_audio', None)).data  # The full-size V/A config.
  assert (data.audio_sample_rate, data.audio.num_mel_bins, data.audio.frame_step) == (
      golden['sample_rate'], golden['num_bins'], golden['fft_step'])
  got = spectrogram.from_config(tf.constant(wave), data).numpy()
  assert got.shape == want.shape == (spectrogram.num_spectrogram_frames(len(wave), 160), 80)
  print(f'{length}: max |ours - published| = {np.max(np.abs(got - want)):.3g}')
  np.testing.assert_array_equal(got, want)


def test_negative_control_a_symmetric_window_misses_the_published_spectrogram(
    testdata_dir, monkeypatch):
  """The comparison catches a near miss: a symmetric Hann window (periodic=False) instead of
  the published periodic one moves the short waveform's log-mel well past float rounding."""
  golden = np.load(testdata_dir / 'spectrogram.npz')
  monkeypatch.setattr(tf.signal, 'hann_window',
                      functools.partial(tf.signal.hann_window, periodic=False))
  got = spectrogram.log_mel_spectrogram(tf.constant(golden['short_waveform']),
                                        **_published_settings(golden)).numpy()
  assert np.max(np.abs(got - golden['short_log_mel'])) > 1e-3


def test_from_config_uses_config_fields(tiny_va_config):
  c = tiny_va_config
  c.data.audio_sample_rate = 16000
  c.data.audio.num_mel_bins = 12
  out = spectrogram.from_config(tf.zeros([1600]), c.data)
  assert out.shape == (10, 12)
  np.testing.assert_allclose(out.numpy(), 0.0)  # log(1 + 0)


# ---------------------------------------------------------------------------
# The JAX twin (spectrogram_device), which the training step runs with augment_on='device'.

# The JAX log-mel against TF's: only the FFT and the mel sums round differently. Measured on CPU
# (random and published waveforms, 1e3..5e5 samples): max 9.5e-7, one float32 ulp of log-mels in
# [8, 16); the tolerance allows four.
DEVICE_LOG_MEL_TOLERANCE = 4e-6


def _device_log_mel(waveform, **settings):
  return np.asarray(jax.jit(lambda x: spectrogram_device.log_mel_spectrogram(x, **settings))(
      waveform))


@pytest.mark.parametrize('num_samples,frame_length,frame_step,fft_length', [
    (16000, 320, 160, 320),  # A multiple of the step.
    (16001, 320, 160, 320),  # One sample more: one more, mostly padded, frame.
    (1234, 400, 160, 512),  # Frames longer than two steps, FFT longer than the frame.
    (999, 100, 160, 128),  # Frames shorter than the step (samples between frames skipped).
])
def test_device_log_mel_equals_tf_on_random_waveforms(num_samples, frame_length, frame_step,
                                                      fft_length):
  settings = dict(sample_rate=48000.0, num_mel_bins=80, frame_length=frame_length,
                  frame_step=frame_step, fft_length=fft_length, lower_edge_hz=80.0,
                  upper_edge_hz=7600.0)
  wave = (np.random.default_rng(num_samples).standard_normal(num_samples) * 0.3).astype(
      np.float32)
  want = spectrogram.log_mel_spectrogram(tf.constant(wave), **settings).numpy()
  got = _device_log_mel(wave, **settings)
  assert got.shape == want.shape == (spectrogram.num_spectrogram_frames(num_samples, frame_step),
                                     80)
  print(f'{num_samples}: max |jax - tf| = {np.max(np.abs(got - want)):.3g}')
  np.testing.assert_allclose(got, want, rtol=0, atol=DEVICE_LOG_MEL_TOLERANCE)
  # Negative control: the next frame boundary (a one-sample shift) is far from TF's.
  shifted = _device_log_mel(np.roll(wave, 1), **settings)
  assert np.max(np.abs(shifted - want)) > 1e-2


def test_device_log_mel_of_a_batch_is_each_waveforms(tiny_va_config):
  """Leading axes ([devices, batch, ...]) are kept; each row is its own waveform's log-mel."""
  data = tiny_va_config.data
  waves = np.random.default_rng(0).standard_normal((2, 3, 1000)).astype(np.float32)
  batched = np.asarray(spectrogram_device.from_config(waves, data))
  for i, j in np.ndindex(2, 3):
    np.testing.assert_allclose(batched[i, j],
                               spectrogram.from_config(tf.constant(waves[i, j]), data).numpy(),
                               rtol=0, atol=DEVICE_LOG_MEL_TOLERANCE)


@pytest.mark.parametrize('length', ['long', 'short'])
def test_device_log_mel_equals_the_published_spectrogram(length, testdata_dir):
  """The TF path is bit for bit equal to the published log-mel; the JAX one is within
  DEVICE_LOG_MEL_TOLERANCE (measured: 9.5e-7 on both, 15 % of the values differ by an ulp)."""
  golden = np.load(testdata_dir / 'spectrogram.npz')
  wave, want = golden[f'{length}_waveform'], golden[f'{length}_log_mel']
  data = config_base.load(config_path('brave_rgb_audio', None)).data
  got = np.asarray(jax.jit(lambda x: spectrogram_device.from_config(x, data))(wave))
  assert got.shape == want.shape
  print(f'{length}: max |jax - published| = {np.max(np.abs(got - want)):.3g}')
  np.testing.assert_allclose(got, want, rtol=0, atol=DEVICE_LOG_MEL_TOLERANCE)


def test_negative_control_a_symmetric_window_misses_on_the_device_too(testdata_dir, monkeypatch):
  golden = np.load(testdata_dir / 'spectrogram.npz')
  monkeypatch.setattr(spectrogram_device, 'hann_window',
                      lambda n: tf.signal.hann_window(n, periodic=False).numpy())
  got = _device_log_mel(golden['short_waveform'], **_published_settings(golden))
  assert np.max(np.abs(got - golden['short_log_mel'])) > 1e-3
