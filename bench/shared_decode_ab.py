"""A/B: host CPU per V/V training example with the frames both RGB views use decoded once or twice.

  python bench/shared_decode_ab.py [--config=configs/brave_rgb_rgb.py] [--rounds=5]

Runs the pipeline's own per-record function (`pipeline._make_train_example_fn`, the config's
defaults: published decode, device chain) on the bench shards, one TF thread, alternating
the two variants round by round so a shared machine slows both alike. The second variant
pairs no frames (`sampling.frames_shared_at_narrow_start` -> {}), which is how the pipeline
ran before the shared decode. Prints CPU ms per example for each and their ratio.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/brave_rgb_rgb.py')
  parser.add_argument('--shards', default='/tmp/brave_bench_shards_stages/plain',
                      help='DMVR shards (bench/pipeline_stages.py writes them)')
  parser.add_argument('--records', type=int, default=8)
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  from brave_jax.data import pipeline, reader, sampling  # pylint: disable=g-import-not-at-top,multiple-imports
  config = config_base.load(args.config)
  index = reader.index_shards(reader.list_shards(args.shards))
  rd = index.reader()
  records = [tf.constant(index.read(rd, i % len(index))) for i in range(args.records)]
  real = sampling.frames_shared_at_narrow_start
  fns = {}
  for name, pairs in (('decoded once', real), ('decoded per view', lambda *a: {})):
    sampling.frames_shared_at_narrow_start = pairs
    example_fn = pipeline._make_train_example_fn(config, tf.constant([0, 1], tf.int64))  # pylint: disable=protected-access
    keys = reader.frame_keys(flow='flow' in config.data.broad_modalities)
    fns[name] = tf.function(
        lambda i, s, f=example_fn, k=keys: f(i, reader.frames_on_demand(s, k)))
    fns[name](tf.constant(0, tf.int64), records[0])  # Trace (with this pairing) and warm up.
  sampling.frames_shared_at_narrow_start = real
  times = {name: [] for name in fns}
  for r in range(args.rounds):
    for name, fn in fns.items():
      start = time.process_time()
      for i, rec in enumerate(records):
        fn(tf.constant(r * 1000 + i, tf.int64), rec)
      times[name].append(1000 * (time.process_time() - start) / len(records))
  print(f'{args.config}, {args.records} records x {args.rounds} rounds, one TF thread, '
        f'load average {os.getloadavg()}')
  for name, t in times.items():
    print(f'  {name:17s} median {statistics.median(t):6.1f} CPU ms/example  ({", ".join(f"{x:.1f}" for x in t)})')
  a, b = (statistics.median(t) for t in times.values())
  print(f'  per view / once: {b / a:.3f}x')


if __name__ == '__main__':
  main()
