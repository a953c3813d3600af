"""Which broad view teaches the narrow one most? The demo of every config, several seeds.

Runs `python -m brave_jax.main --config=configs/<config>.py:demo --config.seed=S`
for each config and seed, one at a time (each run uses the whole machine), on
the embedded dataset: same videos, same steps, same evaluation for all. A run
whose results.json exists is not repeated, so an interrupted comparison
resumes. Writes <out>/demo_views.json (per run: linear-probe test top-1 of
the pretrained and of the random-init backbone, wall seconds) and
<out>/demo_views.png (mean and each seed, per config).

  python bench/demo_views.py --workdir=/tmp/demo_views --seeds=0,1,2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# (label, config file, extra flags). V/V randomly convolves its broad RGB as published,
# which makes it the same computation as V/RC on its own; 'V/V plain' shows what the
# random convolution does.
CONFIGS = (('V/A', 'brave_rgb_audio', ()), ('V/V', 'brave_rgb_rgb', ()),
           ('V/F', 'brave_rgb_flow', ()), ('V/FA', 'brave_rgb_flow_audio', ()),
           ('V/RC', 'brave_rgb_rc', ()),
           ('V/V plain', 'brave_rgb_rgb', ('--config.data.random_convolve_broad_video=False',)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_one(config: str, flags: tuple[str, ...], seed: int, workdir: str) -> dict:
  """Trains + evaluates one demo (unless done before); returns its test top-1s and wall time."""
  results_path = os.path.join(workdir, 'results.json')
  timing_path = os.path.join(workdir, 'wall_seconds.txt')
  if not os.path.exists(results_path):
    start = time.time()
    cmd = [sys.executable, '-m', 'brave_jax.main', f'--config=configs/{config}.py:demo',
           f'--config.seed={seed}', f'--workdir={workdir}', *flags]
    print('$', ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    with open(timing_path, 'w') as f:
      f.write(f'{time.time() - start:.0f}\n')
  with open(results_path) as f:
    results = json.load(f)
  wall = float(open(timing_path).read()) if os.path.exists(timing_path) else None
  return {'pretrained': results['pretrained']['test']['top1'],
          'random_init': results['random_init']['test']['top1'], 'wall_s': wall}


def summarise(runs: dict) -> dict:
  summary = {}
  for name, by_seed in runs.items():
    pre = [r['pretrained'] for r in by_seed.values()]
    rnd = [r['random_init'] for r in by_seed.values()]
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    summary[name] = {'seeds': len(pre), 'pretrained_mean': statistics.mean(pre),
                     'pretrained_sd': sd(pre), 'random_init_mean': statistics.mean(rnd),
                     'random_init_sd': sd(rnd),
                     'gap_mean': statistics.mean(p - r for p, r in zip(pre, rnd))}
  return summary


def plot(runs: dict, summary: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(runs)
  fig, ax = plt.subplots(figsize=(7, 4))
  for offset, key, colour, label in ((-0.18, 'pretrained', 'tab:blue', 'BraVe pretrained'),
                                     (0.18, 'random_init', 'tab:gray', 'random init')):
    means = [100 * summary[n][f'{key}_mean'] for n in names]
    sds = [100 * summary[n][f'{key}_sd'] for n in names]
    xs = [i + offset for i in range(len(names))]
    ax.bar(xs, means, width=0.34, yerr=sds, color=colour, alpha=0.7, label=label, capsize=3)
    for x, n in zip(xs, names):
      ax.scatter([x] * len(runs[n]), [100 * r[key] for r in runs[n].values()], s=12,
                 color='black', zorder=3)
  ax.set_xticks(range(len(names)), names)
  ax.set_ylabel('linear probe test top-1 (%)')
  ax.set_title('Demo: broad views compared (mean, sd, each seed)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--workdir', default='/tmp/demo_views', help='one sub-folder per run')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--views', default=','.join(n for n, _, _ in CONFIGS),
                      help='labels from CONFIGS, comma-separated')
  parser.add_argument('--out', default=os.path.join(REPO, 'bench', 'results'))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  chosen = [entry for entry in CONFIGS if entry[0] in args.views.split(',')]
  runs: dict = {n: {} for n, _, _ in chosen}
  for seed in seeds:  # Seed-major: a cut-short comparison still covers every config.
    for name, config, flags in chosen:
      folder = f'{config}{"_" + name.split()[-1] if flags else ""}_s{seed}'
      runs[name][seed] = run_one(config, flags, seed, os.path.join(args.workdir, folder))
      print(f'{name} seed {seed}: {runs[name][seed]}', flush=True)
  summary = summarise(runs)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'demo_views.json'), 'w') as f:
    json.dump({'runs': runs, 'summary': summary}, f, indent=2)
  plot(runs, summary, os.path.join(args.out, 'demo_views.png'))
  print(f'{"views":10s} {"pretrained":>16s} {"random init":>16s} {"gap":>6s}')
  for name, s in summary.items():
    print(f'{name:10s} {100 * s["pretrained_mean"]:7.1f} +- {100 * s["pretrained_sd"]:4.1f}   '
          f'{100 * s["random_init_mean"]:7.1f} +- {100 * s["random_init_sd"]:4.1f} '
          f'{100 * s["gap_mean"]:+6.1f}')


if __name__ == '__main__':
  main()
