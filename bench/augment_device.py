"""CPU cost per clip of the view chain on the host (TF, augment.augment_clip) and as the jitted
device version (augment_device.apply_views) run by XLA on this CPU, at full view size.

The narrow view is blur + flip + colour + grey at 16x224x224x3, the broad RGB
view of V/V or 'rc' the same chain at 64x112x112x3 then random convolution.
Draws come from `--clips` seeds, so both paths see the same mix of kernel sizes,
jitters and greys. TF runs with one op thread, as the input pipeline does
(config.data.tf_intra_op_threads); XLA uses its own thread pool. CPU ms count
every thread of the process, so a busy machine slows the wall clock more than
them. Also prints the device version's FLOPs per clip from XLA's cost analysis,
what an accelerator would have to do instead of the host.

  python bench/augment_device.py [--clips=4] [--repeats=3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from brave_jax import config_base  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import augment  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import augment_device  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

VIEWS = {  # name: (frames, size, random convolution)
    'narrow': (16, 224, False),
    'broad_rc': (64, 112, True),
}


def timed(fn, repeats: int) -> tuple[float, float]:
  """(CPU s, wall s) per call of fn, after one untimed call (tracing and compiling)."""
  fn()
  cpu, wall = time.process_time(), time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.process_time() - cpu) / repeats, (time.perf_counter() - wall) / repeats


def flops_of(compiled) -> float:
  """XLA's FLOP count of a compiled computation (a dict, or a list of one in older jax)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan')))


def bench_view(name: str, frames: int, size: int, random_conv: bool, clips: int,
               repeats: int) -> None:
  aug = config_base.base_config().data.augment
  rng = np.random.RandomState(0)
  x_uint8 = rng.randint(0, 256, size=(clips, frames, size, size, 3)).astype(np.uint8)
  x_float = x_uint8.astype(np.float32)  # The host chain gets the resize's float32 frames.
  seeds = [tf.constant([7, i], tf.int64) for i in range(clips)]

  def host():
    for i in range(clips):
      augment.augment_clip(x_float[i], aug, seeds[i], random_conv=random_conv).numpy()

  draws = [augment_device.draw_view(aug, s, random_conv=random_conv) for s in seeds]
  draws_B = jax.tree.map(lambda *t: np.stack([a.numpy() for a in t]), *draws)
  x_device = jax.device_put(x_uint8)
  draws_device = jax.device_put(draws_B)
  # Compiled as the training step is (step.compiler_options: XLA options on a CPU).
  compiled = jax.jit(augment_device.apply_views).lower(x_device, draws_device).compile(
      compiler_options=step_lib.compiler_options(jax.local_devices()))

  def device():
    compiled(x_device, draws_device).block_until_ready()

  # FLOPs from one clip's chain (apply_view), what every clip of the batch costs.
  one_clip = jax.jit(augment_device.apply_view).lower(
      x_device[0], jax.tree.map(lambda a: a[0], draws_device)).compile()

  host_cpu, host_wall = timed(host, repeats)
  device_cpu, device_wall = timed(device, repeats)
  print(f'{name:9s} {frames}x{size}x{size}x3  host  cpu {1000 * host_cpu / clips:7.1f} ms/clip  '
        f'wall {1000 * host_wall / clips:7.1f} ms/clip')
  print(f'{"":9s} {"":14s}  device cpu {1000 * device_cpu / clips:7.1f} ms/clip  '
        f'wall {1000 * device_wall / clips:7.1f} ms/clip  '
        f'{flops_of(one_clip) / 1e9:.3g} GFLOP/clip (XLA cost analysis)', flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--clips', type=int, default=4, help='clips per batch, each its own seed')
  parser.add_argument('--repeats', type=int, default=3, help='timed batches per measurement')
  args = parser.parse_args()
  tf.config.threading.set_intra_op_parallelism_threads(1)
  print(f'uptime: {subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}')
  print(f'{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'tf {tf.__version__}; {args.clips} clips x {args.repeats} repeats')
  for name, (frames, size, random_conv) in VIEWS.items():
    bench_view(name, frames, size, random_conv, args.clips, args.repeats)
  print(f'uptime: {subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}')


if __name__ == '__main__':
  main()
