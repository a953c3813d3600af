"""Times the training input pipeline on this machine (first batch excluded).

  python bench/make_bench_shards.py --out=/tmp/brave_bench_shards
  python bench/input_pipeline.py --config=configs/brave_rgb_audio.py \
      --shards='/tmp/brave_bench_shards/bench-*' --batch=8 --seconds=40
  # or write the shards first in one go: --make_shards=/tmp/brave_bench_shards

Ends with `clips_per_s=<number>`. To compare with the published chain (our re-statement,
bench/published_pipeline.py) back to back, with a per-stage table: bench/pipeline_stages.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from brave_jax import config_base  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--config', required=True, help='configs/<file>.py[:variant]')
  parser.add_argument('--shards', default='', help='glob/dir/comma list of DMVR shards')
  parser.add_argument('--batch', type=int, default=8, help='clips per batch (one host, 1 device)')
  parser.add_argument('--seconds', type=float, default=40.0, help='timed duration')
  parser.add_argument('--make_shards', default='', help='write bench shards to this dir first')
  args = parser.parse_args()

  if args.make_shards:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_bench_shards  # pylint: disable=g-import-not-at-top
    make_bench_shards.make_bench_shards(args.make_shards)
    args.shards = args.shards or args.make_shards
  config = config_base.load(args.config)
  config.training.batch_size = args.batch
  it = pipeline.make_train_dataset(config, args.shards, num_local_devices=1)
  t0 = time.perf_counter()
  first = next(it)
  print(f'first batch {time.perf_counter() - t0:.1f} s; shapes '
        f'{ {k: v.shape for k, v in first["narrow"].items()} } '
        f'{ {k: v.shape for k, v in first["broad"].items()} }', flush=True)
  start = time.perf_counter()
  cpu_start = time.process_time()
  clips = 0
  while time.perf_counter() - start < args.seconds:
    next(it)
    clips += args.batch
  elapsed = time.perf_counter() - start
  cpu = time.process_time() - cpu_start
  load = os.getloadavg()[0]
  # On a shared machine wall-clock throughput depends on the neighbours; CPU
  # seconds per clip says what the pipeline costs (projected = cores / that).
  print(f'batches={clips // args.batch} seconds={elapsed:.1f} skipped={it.skipped_records()} '
        f'load_avg={load:.1f} cpu_ms_per_clip={1000 * cpu / clips:.1f} '
        f'projected_idle_clips_per_s={os.cpu_count() * clips / cpu:.1f}')
  print(f'clips_per_s={clips / elapsed:.1f}')


if __name__ == '__main__':
  main()
