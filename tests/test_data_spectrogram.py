"""The log-mel spectrogram against the published one (tests/testdata/spectrogram.npz)."""
import functools

import numpy as np
import pytest
import tensorflow as tf

from brave_jax import config_base
from brave_jax.data import spectrogram
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
