"""CPU cost per clip of the broad audio view's log-mel on the host (TF, spectrogram.from_config in
a tf.function, as the input pipeline runs it) and as the jitted device version
(spectrogram_device.from_config) run by XLA on this CPU, at the full-size V/A settings
(configs/brave_rgb_audio.py: 10.24 s of 48 kHz audio -> 3072 x 80).

With config.data.augment_on='device' the pipeline ships the waveform and the
pretraining step makes the log-mel: this prints the host CPU that saves, what
the device version costs (CPU ms here, FLOPs per clip from XLA's cost analysis:
what an accelerator does instead) and the bytes per clip shipped either way.
TF runs with one op thread, as the input pipeline does; CPU ms count every
thread of the process (run it under `taskset -c 0` for one core).

  python bench/log_mel_device.py [--clips=4] [--repeats=5]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_BENCH))
sys.path.insert(0, _BENCH)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import augment_device as augment_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax import config_base  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import spectrogram  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import spectrogram_device  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG = os.path.join(os.path.dirname(_BENCH), 'configs', 'brave_rgb_audio.py')


def uptime() -> str:
  return subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--clips', type=int, default=4, help='waveforms per batch')
  parser.add_argument('--repeats', type=int, default=5, help='timed batches per measurement')
  args = parser.parse_args()
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  config = config_base.load(CONFIG)
  num_samples = pipeline.audio_num_samples(config)
  frames, bins = pipeline.batch_shapes(config)['broad']['audio']
  print(f'uptime: {uptime()}')
  print(f'{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'tf {tf.__version__}; {args.clips} clips of {num_samples} samples x {args.repeats} '
        f'repeats -> {frames} x {bins} log-mel')
  waves = (np.random.default_rng(0).standard_normal((args.clips, num_samples)) * 0.1).astype(
      np.float32)

  host_log_mel = tf.function(lambda w: spectrogram.from_config(w, config.data))
  host_waves = [tf.constant(w) for w in waves]

  def host():
    for w in host_waves:
      host_log_mel(w).numpy()

  device_waves = jax.device_put(waves)
  compiled = jax.jit(lambda w: spectrogram_device.from_config(w, config.data)).lower(
      device_waves).compile()

  def device():
    compiled(device_waves).block_until_ready()

  host_cpu, host_wall = augment_bench.timed(host, args.repeats)
  device_cpu, device_wall = augment_bench.timed(device, args.repeats)
  diff = np.abs(np.asarray(compiled(device_waves))
                - np.stack([host_log_mel(w).numpy() for w in host_waves])).max()
  wave_bytes, log_mel_bytes = num_samples * 4, frames * bins * 4
  print(f'host   (TF)  cpu {1000 * host_cpu / args.clips:6.2f} ms/clip  '
        f'wall {1000 * host_wall / args.clips:6.2f} ms/clip')
  print(f'device (XLA) cpu {1000 * device_cpu / args.clips:6.2f} ms/clip  '
        f'wall {1000 * device_wall / args.clips:6.2f} ms/clip  '
        f'{augment_bench.flops_of(compiled) / args.clips / 1e6:.1f} MFLOP/clip (XLA cost analysis)')
  print(f'max |device - host| = {diff:.3g}')
  print(f'shipped per clip: waveform {wave_bytes} B, log-mel {log_mel_bytes} B '
        f'(+{wave_bytes - log_mel_bytes} B, {wave_bytes / log_mel_bytes:.2f}x)')
  print(f'uptime: {uptime()}')


if __name__ == '__main__':
  main()
