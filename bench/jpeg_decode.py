"""config.data.jpeg_decode: 'full' (published) against 'reduced_scale', speed and pixels.

  python bench/jpeg_decode.py [--crops=120 --frames=16]

On frames like the bench shards' (bench/make_bench_shards.py: 256x340, JPEG
quality 95, 4:4:4 as our converter writes them; and the same frames 4:2:0, as
ffmpeg-made DMVR shards usually are), for --crops random training windows
(tf.image's sampler, area 0.3-1, aspect 0.5-2) per view size (the broad 112
and narrow 224 px): CPU ms per frame of decode + crop + resize, one TF thread,
for each mode, and how far 'reduced_scale' lands from the published pixels
(crops that differ at all, mean and max |difference| in 0-255 levels).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_BENCH))
sys.path.insert(0, _BENCH)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from brave_jax.data import decode  # pylint: disable=g-import-not-at-top,wrong-import-position
import make_bench_shards  # pylint: disable=g-import-not-at-top,wrong-import-position


def measure(jpegs: tf.Tensor, size: int, num_crops: int) -> dict[str, float]:
  """Both modes on `num_crops` random windows of one clip: CPU ms per frame and the differences."""
  fns = {mode: tf.function(lambda j, w, m=mode: decode.decode_train_crop(j, w, size, m))
         for mode in ('full', 'reduced_scale')}
  hw = decode.jpeg_shape(jpegs[0])
  windows = [decode.random_crop_window(hw, (0.3, 1.0), (0.5, 2.0), tf.constant([i, 99], tf.int64))
             for i in range(num_crops)]
  out, cpu_ms = {}, {}
  for mode, fn in fns.items():
    fn(jpegs, windows[0])  # Trace.
    start = time.process_time()
    out[mode] = [fn(jpegs, w).numpy() for w in windows]
    cpu_ms[mode] = 1000 * (time.process_time() - start) / (num_crops * int(jpegs.shape[0]))
  diffs = [np.abs(a - b) for a, b in zip(out['full'], out['reduced_scale'])]
  return {'view_px': size, 'crops': num_crops,
          'full_cpu_ms_per_frame': cpu_ms['full'],
          'reduced_scale_cpu_ms_per_frame': cpu_ms['reduced_scale'],
          'crops_that_differ': int(sum(d.max() > 0 for d in diffs)),
          'mean_abs_diff_levels': float(np.mean([d.mean() for d in diffs])),
          'max_abs_diff_levels': float(max(d.max() for d in diffs))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--crops', type=int, default=120)
  parser.add_argument('--frames', type=int, default=16, help='frames per clip (all decoded)')
  parser.add_argument('--json', default='')
  args = parser.parse_args()
  frames = make_bench_shards._scene(np.random.RandomState(0), args.frames)  # pylint: disable=protected-access
  rows = []
  for chroma in (False, True):
    jpegs = tf.stack([tf.io.encode_jpeg(f, quality=95, chroma_downsampling=chroma)
                      for f in frames])
    for size in (112, 224):
      row = dict(measure(jpegs, size, args.crops), jpeg='4:2:0' if chroma else '4:4:4',
                 load=' '.join(f'{x:.2f}' for x in os.getloadavg()))
      rows.append(row)
      print(json.dumps(row), flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()
