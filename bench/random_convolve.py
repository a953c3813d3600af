"""CPU cost of the broad view's random convolution, direct vs FFT, per kernel size.

Sets augment.FFT_MIN_KERNEL_SIZE: the direct convolution costs 9k^2
multiply-adds per pixel, the zero-padded FFT about the same for every k, so
the FFT wins from some k on. Runs with one TF op thread, as the input pipeline
does (config.data.tf_intra_op_threads), and reports CPU ms per clip so a busy
machine slows the wall clock but not the comparison.

  python bench/random_convolve.py [--frames=64] [--size=112] [--repeats=10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from brave_jax.data import augment  # pylint: disable=g-import-not-at-top,wrong-import-position


def cpu_ms(fn, repeats: int) -> float:
  fn()  # Trace and compile outside the timing.
  start = time.process_time()
  for _ in range(repeats):
    fn()
  return 1000 * (time.process_time() - start) / repeats


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--frames', type=int, default=64)
  parser.add_argument('--size', type=int, default=112)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  tf.config.threading.set_intra_op_parallelism_threads(1)
  rng = np.random.RandomState(0)
  clip = tf.constant(rng.uniform(size=(args.frames, args.size, args.size, 3)), tf.float32)
  print(f'clip {args.frames}x{args.size}x{args.size}x3, CPU ms per clip (one TF op thread)')
  print(' k  direct     fft   fastest')
  for k in (1, 3, 5, 7, 9, 11):
    kernel = tf.constant(rng.normal(size=(k, k, 3, 3)), tf.float32)
    direct = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, 'SAME'))
    direct_ms = cpu_ms(lambda: direct(clip, kernel).numpy(), args.repeats)
    fft_ms = cpu_ms(lambda: augment.conv_same_fft(clip, kernel).numpy(), args.repeats)
    print(f'{k:2d} {direct_ms:7.1f} {fft_ms:7.1f}   {"fft" if fft_ms < direct_ms else "direct"}')
  print(f'pipeline uses the FFT from k = {augment.FFT_MIN_KERNEL_SIZE}')


if __name__ == '__main__':
  main()
