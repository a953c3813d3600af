"""Does a recipe learn on data it was not tuned on? Pretrained vs random init, several seeds.

Runs `python -m brave_jax.main --config=<recipe> --config.seed=S` for each seed
on a synthetic dataset (default: the independent one, data/synthetic_independent.py,
which the :demo recipe was never tuned on; --dataset=embedded for the demo's own),
one run at a time (each uses the whole machine). A run whose results.json exists
is reused, so an interrupted bench resumes. Each run's linear-probe test top-1
of the pretrained and the random-init narrow backbone (the recipe's own
protocol, results.json), the gap, the probe's chosen C and wall time go to
<out>/generalisation.json; <out>/generalisation.png plots every seed and the mean.

  python bench/generalisation.py --out=/tmp/gen --seeds=0,1,2
  python bench/generalisation.py --out=/tmp/gen_fa --config=configs/brave_rgb_flow_audio.py:demo
  python bench/generalisation.py --out=/tmp/gen_emb --dataset=embedded

It is a check, not a tuning target: a recipe passes when the pretrained
backbone beats random init by --min_gap points on every seed (the exit
status is 1 otherwise), not when its mean looks good.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from brave_jax import config_base  # pylint: disable=g-import-not-at-top,wrong-import-position

DATASET_FLAGS = {
    'embedded': (),
    'independent': ('--config.data.synthetic.generator=independent',
                    f'--config.data.video_fps={config_base.INDEPENDENT_FPS}',
                    f'--config.data.audio_sample_rate={config_base.INDEPENDENT_AUDIO_RATE}'),
}


def run_one(config: str, dataset: str, seed: int, workdir: str, extra: Sequence[str]) -> dict:
  """Trains + evaluates one seed (unless its results.json exists); returns its numbers."""
  results_path = os.path.join(workdir, 'results.json')
  timing_path = os.path.join(workdir, 'wall_seconds.txt')
  if not os.path.exists(results_path):
    cmd = [sys.executable, '-m', 'brave_jax.main', f'--config={config}', f'--config.seed={seed}',
           f'--workdir={workdir}', *DATASET_FLAGS[dataset], *extra]
    print('$', ' '.join(cmd), flush=True)
    load_before = os.getloadavg()
    start = time.time()
    subprocess.run(cmd, cwd=REPO, check=True)
    wall = time.time() - start
    os.makedirs(workdir, exist_ok=True)
    with open(timing_path, 'w') as f:
      json.dump({'wall_s': round(wall, 1), 'load_before': load_before,
                 'load_after': os.getloadavg()}, f)
  with open(results_path) as f:
    results = json.load(f)
  timing = json.load(open(timing_path)) if os.path.exists(timing_path) else {}
  pre, rnd = results['pretrained'], results['random_init']
  return {'pretrained': pre['test']['top1'], 'random_init': rnd['test']['top1'],
          'gap_points': 100 * (pre['test']['top1'] - rnd['test']['top1']),
          'pretrained_train_top1': pre['train']['top1'], 'random_init_train_top1': rnd['train']['top1'],
          'svm_c': {'pretrained': pre.get('svm_c'), 'random_init': rnd.get('svm_c')}, **timing}


def summarise(runs: dict[int, dict], min_gap: float) -> dict[str, Any]:
  """Mean, min, spread (max - min) and sd of each score and of the gap, and pass/fail."""
  out: dict[str, Any] = {}
  for key in ('pretrained', 'random_init', 'gap_points'):
    values = [r[key] for r in runs.values()]
    out[key] = {'mean': statistics.mean(values), 'min': min(values), 'max': max(values),
                'spread': max(values) - min(values),
                'sd': statistics.stdev(values) if len(values) > 1 else 0.0}
  out['min_gap_points'] = min_gap
  out['passes'] = all(r['gap_points'] >= min_gap for r in runs.values())
  return out


def plot(path: str, runs: dict[int, dict], summary: dict[str, Any], title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from brave_jax import files  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  seeds = sorted(runs)
  for x, key, colour in ((0, 'random_init', 'tab:grey'), (1, 'pretrained', 'tab:blue')):
    values = [100 * runs[s][key] for s in seeds]
    ax.scatter([x] * len(values), values, color=colour, zorder=3)
    for s, v in zip(seeds, values):
      ax.annotate(f'seed {s}', (x, v), textcoords='offset points', xytext=(8, -3), fontsize=8)
    ax.hlines(100 * summary[key]['mean'], x - 0.2, x + 0.2, color=colour, lw=2)
  for s in seeds:
    ax.plot([0, 1], [100 * runs[s]['random_init'], 100 * runs[s]['pretrained']], color='0.7',
            lw=0.8, zorder=1)
  ax.set_xticks([0, 1], ['random init', 'pretrained'])
  ax.set_xlim(-0.5, 1.7)
  ax.set_ylabel('linear probe test top-1 (%)')
  g = summary['gap_points']
  ax.set_title(f'{title}\ngap {g["mean"]:.1f} points (min {g["min"]:.1f}, spread '
               f'{g["spread"]:.1f}) over {len(seeds)} seeds', fontsize=9)
  fig.tight_layout()
  files.save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', required=True, help='Run workdirs (seed_<S>/) and the JSON/PNG go here.')
  p.add_argument('--config', default='configs/brave_rgb_audio.py:demo', help='The recipe.')
  p.add_argument('--dataset', default='independent', choices=sorted(DATASET_FLAGS))
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--min_gap', type=float, default=15.0,
                 help='Points the pretrained backbone must beat random init by, on every seed.')
  p.add_argument('extra', nargs='*', help='More --config.* flags for every run (after --).')
  args = p.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  runs = {s: run_one(args.config, args.dataset, s, os.path.join(args.out, f'seed_{s}'), args.extra)
          for s in seeds}
  summary = summarise(runs, args.min_gap)
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
  record = {'config': args.config, 'dataset': args.dataset, 'extra_flags': args.extra,
            'commit': commit, 'runs': {str(s): r for s, r in runs.items()}, 'summary': summary}
  from brave_jax import files  # pylint: disable=g-import-not-at-top
  files.write_json(os.path.join(args.out, 'generalisation.json'), record, indent=1)
  plot(os.path.join(args.out, 'generalisation.png'), runs, summary,
       f'{args.config} on the {args.dataset} synthetic set')
  for s in seeds:
    r = runs[s]
    print(f'seed {s}: pretrained {100 * r["pretrained"]:.1f} % / random init '
          f'{100 * r["random_init"]:.1f} % (gap {r["gap_points"]:+.1f}), wall {r.get("wall_s")} s')
  g = summary['gap_points']
  print(f'gap mean {g["mean"]:.1f}, min {g["min"]:.1f}, spread {g["spread"]:.1f}: '
        f'{"PASS" if summary["passes"] else "FAIL"} (every seed >= {args.min_gap} points)')
  return 0 if summary['passes'] else 1


if __name__ == '__main__':
  sys.exit(main())
