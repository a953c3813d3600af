"""Every evaluation protocol on `:demo`-pretrained V/A checkpoints: the numbers issue 12 asks for.

  python bench/eval_protocols.py \\
      --demo_workdirs=/tmp/base_demo_s0,/tmp/base_demo_s1,/tmp/base_demo_s2

For each demo workdir (one pretraining seed each; `python -m brave_jax.main
--config=configs/brave_rgb_audio.py:demo --config.seed=S --workdir=W`):

- linear probe (the demo's own results.json, else `--protocol=linear`),
- fine-tuning from the pretrained narrow backbone and from random init
  (`--protocol=finetune`, the `:demo` recipe: 600 steps of batch 32),
- audio: the broad audio backbone vs a random-init one on the embedded
  ESC-style audio split (`--protocol=audio`: 5 fixed folds, linear SVM).

Then, once: a fresh V/A `:demo` run with the kNN monitor on (its curve and
its share of the run's wall time; `--knn_workdir`), and the embedded dataset
written as a TFDS dataset with TFDS's builder API and evaluated through
`--tfds` (linear protocol on the first demo checkpoint, beside the same
videos read from DMVR shards). Every command runs as a subprocess and is
printed; each evaluation writes to --work_dir, the summary goes to
<output_dir>/eval_protocols.json and .png (bench/results by default).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, 'configs', 'brave_rgb_audio.py') + ':demo'


def _run(args: list[str], log_path: str) -> float:
  """Runs a command (logging to a file), raising on failure; returns its wall time in seconds."""
  print('+ ' + ' '.join(args), flush=True)
  start = time.time()
  with open(log_path, 'w') as log:
    code = subprocess.call(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
  if code:
    raise RuntimeError(f'command failed (exit {code}); see {log_path}')
  return time.time() - start


def _read(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def _config_flags(workdir: str) -> list[str]:
  """Flags that give an evaluation the demo's recipe: the workdir's config if it has one for
  every protocol, else the :demo config file with the workdir's seed (workdirs written before
  the fine-tuning section existed)."""
  config = _read(os.path.join(workdir, 'config.json'))
  if 'finetune' in config:
    return []
  return [f'--config={DEMO_CONFIG}', f'--config.seed={int(config["seed"])}']


REUSE = False  # --reuse: an evaluation whose result file exists is read, not rerun.


def _evaluate(workdir: str, protocol: str, out: str, extra: list[str], logs: str) -> dict[str, Any]:
  name = os.path.basename(out)
  args = [sys.executable, '-m', 'brave_jax.evaluate', f'--protocol={protocol}',
          f'--workdir={workdir}', f'--output_dir={out}'] + _config_flags(workdir) + extra
  result_file = {'audio': 'audio_eval.json', 'knn': 'knn.json'}.get(protocol, 'eval.json')
  result_path = os.path.join(out, result_file)
  wall_path = os.path.join(out, 'bench_wall_seconds.txt')
  if REUSE and os.path.isfile(result_path):
    print(f'reusing {result_path}', flush=True)
    wall = float(open(wall_path).read()) if os.path.isfile(wall_path) else None
  else:
    wall = _run(args, os.path.join(logs, f'{name}.log'))
    with open(wall_path, 'w') as f:
      f.write(f'{wall:.1f}\n')
  record = _read(result_path)
  record['wall_seconds'] = wall
  return record


AUDIO_CLEAN_8 = ['--config.audio_eval.synthetic.clips_per_fold=8',
                 '--config.audio_eval.synthetic.snr_db=()']  # The easy variant, for context.


def per_seed(workdir: str, out: str, logs: str, context: bool) -> dict[str, Any]:
  """Every protocol on one demo checkpoint; with `context`, also the easy audio variant and
  random-init fine-tuning at 4x the learning rate (is random init just under-trained?)."""
  seed = int(_read(os.path.join(workdir, 'config.json'))['seed'])
  tag = f's{seed}'
  results_json = os.path.join(workdir, 'results.json')
  if os.path.isfile(results_json):
    linear = _read(results_json)['pretrained']['test']['top1']
  else:
    linear = _evaluate(workdir, 'linear', os.path.join(out, f'linear_{tag}'), [], logs)['test']['top1']
  ft = _evaluate(workdir, 'finetune', os.path.join(out, f'finetune_{tag}'), [], logs)
  ft_random = _evaluate(workdir, 'finetune', os.path.join(out, f'finetune_random_{tag}'),
                        ['--random_init'], logs)
  audio = _evaluate(workdir, 'audio', os.path.join(out, f'audio_{tag}'), [], logs)
  audio_random = _evaluate(workdir, 'audio', os.path.join(out, f'audio_random_{tag}'),
                           ['--random_init'], logs)
  extra = {}
  if context:
    lr = _read(os.path.join(out, f'finetune_{tag}', 'eval.json'))['finetune']['base_learning_rate']
    ft_random_4x = _evaluate(workdir, 'finetune', os.path.join(out, f'finetune_random_lr4x_{tag}'),
                             ['--random_init', f'--config.finetune.base_learning_rate={4 * lr}'],
                             logs)
    extra['finetune_random_lr4x_top1'] = ft_random_4x['test']['top1']
    extra['finetune_random_lr4x_train_top1'] = ft_random_4x['train']['top1']
    for name, flags in (('audio_clean8', []), ('audio_clean8_random', ['--random_init'])):
      extra[f'{name}_accuracy'] = _evaluate(workdir, 'audio', os.path.join(out, f'{name}_{tag}'),
                                            flags + AUDIO_CLEAN_8, logs)['mean_accuracy']
  return {'seed': seed, 'workdir': workdir, 'linear_top1': linear, **extra,
          'finetune_top1': ft['test']['top1'], 'finetune_random_top1': ft_random['test']['top1'],
          'finetune_train_top1': ft['train']['top1'],
          'finetune_random_train_top1': ft_random['train']['top1'],
          'finetune_seconds': ft['wall_seconds'], 'finetune_random_seconds': ft_random['wall_seconds'],
          'audio_accuracy': audio['mean_accuracy'], 'audio_random_accuracy': audio_random['mean_accuracy'],
          'audio_per_fold': audio['per_fold_accuracy'],
          'audio_random_per_fold': audio_random['per_fold_accuracy'],
          'audio_looped_clips': audio['looped_clips'], 'audio_num_clips': audio['num_clips'],
          'audio_window_seconds': audio['window_seconds'],
          'finetune_loss_curve': ft['loss_curve'], 'finetune_random_loss_curve': ft_random['loss_curve']}


def knn_run(workdir: str, logs: str) -> dict[str, Any]:
  """A fresh V/A :demo (seed 0) with the monitor on: its kNN curve and wall-time share."""
  if not os.path.isfile(os.path.join(workdir, 'results.json')):
    wall = _run([sys.executable, '-m', 'brave_jax.main', f'--config={DEMO_CONFIG}',
                 f'--workdir={workdir}'], os.path.join(logs, 'knn_demo.log'))
  else:
    wall = None  # Reused: the share needs the wall time of one uninterrupted run.
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl')) if l.strip()]
  knn = [r for r in records if 'knn/top1' in r]
  knn_seconds = float(sum(r['knn/seconds'] for r in knn))
  return {'workdir': workdir, 'steps': [r['step'] for r in knn],
          'top1': [r['knn/top1'] for r in knn], 'seconds_each': [r['knn/seconds'] for r in knn],
          'knn_seconds': knn_seconds, 'wall_seconds': wall,
          'share_of_wall': knn_seconds / wall if wall else None,
          'linear': _read(os.path.join(workdir, 'results.json'))}


def tfds_run(workdir: str, out: str, logs: str) -> dict[str, Any]:
  """The embedded dataset as a TFDS dataset (TFDS's own builder API), linear-evaluated via --tfds."""
  data_dir = os.path.join(out, 'tfds')
  _run([sys.executable, os.path.join(REPO, 'bench', 'tfds_synthetic.py'), f'--data_dir={data_dir}',
        f'--config={DEMO_CONFIG}'], os.path.join(logs, 'tfds_prepare.log'))
  via_tfds = _evaluate(workdir, 'linear', os.path.join(out, 'linear_tfds'),
                       ['--tfds=brave_synthetic', f'--tfds_data_dir={data_dir}'], logs)
  via_dmvr = _evaluate(workdir, 'linear', os.path.join(out, 'linear_dmvr'), [], logs)
  return {'tfds_test_top1': via_tfds['test']['top1'], 'dmvr_test_top1': via_dmvr['test']['top1'],
          'tfds_data': via_tfds['data'], 'tfds_data_dir': data_dir,
          'tfds_wall_seconds': via_tfds['wall_seconds'], 'dmvr_wall_seconds': via_dmvr['wall_seconds']}


def _mean_sd(values: list[float]) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
  keys = ('linear_top1', 'finetune_top1', 'finetune_random_top1', 'audio_accuracy',
          'audio_random_accuracy')
  summary = {}
  for key in keys:
    mean, sd = _mean_sd([s[key] for s in seeds])
    summary[key] = {'mean': mean, 'sd': sd, 'per_seed': [s[key] for s in seeds]}
  gaps = [s['audio_accuracy'] - s['audio_random_accuracy'] for s in seeds]
  summary['audio_gap_points'] = {'mean': 100 * float(np.mean(gaps)), 'min': 100 * float(np.min(gaps))}
  ft_gaps = [s['finetune_top1'] - s['finetune_random_top1'] for s in seeds]
  summary['finetune_gap_points'] = {'mean': 100 * float(np.mean(ft_gaps)),
                                    'min': 100 * float(np.min(ft_gaps))}
  return summary


def plot(path: str, seeds: list[dict[str, Any]], summary: dict[str, Any],
         knn: dict[str, Any] | None) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = 3 if knn else 2
  fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2))
  video = [('linear probe', 'linear_top1'), ('fine-tuned\n(pretrained)', 'finetune_top1'),
           ('fine-tuned\n(random init)', 'finetune_random_top1')]
  sound = [('pretrained', 'audio_accuracy'), ('random init', 'audio_random_accuracy')]
  for ax, bars, title in ((axes[0], video, 'video: embedded test split, top-1'),
                          (axes[1], sound, 'audio: embedded ESC-style folds, accuracy')):
    means = [100 * summary[k]['mean'] for _, k in bars]
    sds = [100 * summary[k]['sd'] for _, k in bars]
    ax.bar(range(len(bars)), means, yerr=sds, capsize=4, color='tab:blue', alpha=0.8)
    for i, (_, k) in enumerate(bars):
      ax.scatter([i] * len(seeds), [100 * s[k] for s in seeds], color='black', s=12, zorder=3)
      ax.text(i, means[i] + sds[i] + 2, f'{means[i]:.1f}', ha='center')
    ax.axhline(10, color='tab:gray', linestyle='--', linewidth=1, label='chance (10 classes)')
    ax.set_xticks(range(len(bars)), [b for b, _ in bars])
    ax.set_ylim(0, 105)
    ax.set_ylabel('%')
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc='upper right')
  if knn:
    ax = axes[2]
    ax.plot(knn['steps'], [100 * t for t in knn['top1']], marker='o')
    ax.axhline(10, color='tab:gray', linestyle='--', linewidth=1)
    share = knn['share_of_wall']
    ax.set_title('kNN monitor during the V/A demo (k=20)'
                 + (f'\n{100 * share:.1f}% of the run\'s wall time' if share else ''), fontsize=10)
    ax.set_xlabel('pretraining step')
    ax.set_ylabel('leave-one-out top-1 (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  fig.suptitle(f'V/A :demo, {len(seeds)} pretraining seeds (bars: mean ± sd, dots: seeds)')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--demo_workdirs', required=True, help='Comma list of V/A :demo workdirs.')
  p.add_argument('--output_dir', default=os.path.join(REPO, 'bench', 'results'),
                 help='Where eval_protocols.json and .png go.')
  p.add_argument('--work_dir', default='/tmp/eval_protocols',
                 help="The evaluations' own output directories (checkpoints, eval.json, logs).")
  p.add_argument('--knn_workdir', default='/tmp/eval_protocols_knn_demo',
                 help="A V/A :demo run with the kNN monitor (made if it has no results.json); '' skips.")
  p.add_argument('--skip_tfds', action='store_true')
  p.add_argument('--skip_context', action='store_true',
                 help="Skip seed 0's context runs (random-init fine-tuning at 4x LR, easy audio).")
  p.add_argument('--reuse', action='store_true',
                 help='Read evaluations whose result file is already in --work_dir instead of '
                 'rerunning them (after an interrupted bench, same code).')
  args = p.parse_args()
  global REUSE  # pylint: disable=global-statement
  REUSE = args.reuse
  results = os.path.abspath(args.output_dir)
  out = os.path.abspath(args.work_dir)
  logs = os.path.join(out, 'logs')
  os.makedirs(logs, exist_ok=True)
  os.makedirs(results, exist_ok=True)
  load = open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else None
  workdirs = [w for w in args.demo_workdirs.split(',') if w]
  seeds = []
  for i, w in enumerate(workdirs):
    while not os.path.isfile(os.path.join(w, 'results.json')):  # Its demo is still running.
      print(f'waiting for {w}/results.json', flush=True)
      time.sleep(60)
    seeds.append(per_seed(os.path.abspath(w), out, logs,
                          context=i == 0 and not args.skip_context))
  summary = summarise(seeds)
  knn = knn_run(os.path.abspath(args.knn_workdir), logs) if args.knn_workdir else None
  tfds_result = None if args.skip_tfds else tfds_run(os.path.abspath(workdirs[0]), out, logs)
  record = {'summary': summary, 'seeds': seeds, 'knn': knn, 'tfds': tfds_result,
            'load_average_at_start': load}
  with open(os.path.join(results, 'eval_protocols.json'), 'w') as f:
    json.dump(record, f, indent=1)
  plot(os.path.join(results, 'eval_protocols.png'), seeds, summary, knn)
  print('\nV/A :demo, test top-1 (%) / audio accuracy (%), mean ± sd over seeds '
        f'{[s["seed"] for s in seeds]}:')
  for key, name in (('linear_top1', 'linear probe'), ('finetune_top1', 'fine-tuned, pretrained'),
                    ('finetune_random_top1', 'fine-tuned, random init'),
                    ('audio_accuracy', 'audio folds, pretrained'),
                    ('audio_random_accuracy', 'audio folds, random init')):
    s = summary[key]
    print(f'  {name:<26} {100 * s["mean"]:5.1f} ± {100 * s["sd"]:4.1f}   per seed: '
          + ', '.join(f'{100 * v:.1f}' for v in s['per_seed']))
  print(f'  audio gap: mean {summary["audio_gap_points"]["mean"]:+.1f} points, smallest '
        f'{summary["audio_gap_points"]["min"]:+.1f}')
  first = seeds[0]
  if 'audio_clean8_accuracy' in first:
    print(f'  seed {first["seed"]} context: fine-tuned random init at 4x LR '
          f'{100 * first["finetune_random_lr4x_top1"]:.1f}%; audio with 8 clean clips per class '
          f'per fold: pretrained {100 * first["audio_clean8_accuracy"]:.1f}%, random init '
          f'{100 * first["audio_clean8_random_accuracy"]:.1f}%')
  if knn:
    print(f'  kNN monitor: top-1 {["%.1f" % (100 * t) for t in knn["top1"]]} at steps '
          f'{knn["steps"]}; {knn["knn_seconds"]:.1f} s of {knn["wall_seconds"] or float("nan"):.0f} s '
          f'wall ({100 * (knn["share_of_wall"] or float("nan")):.1f}%)')
  if tfds_result:
    print(f'  TFDS (--tfds=brave_synthetic) linear test top-1 {100 * tfds_result["tfds_test_top1"]:.1f}% '
          f'vs the same videos from DMVR shards {100 * tfds_result["dmvr_test_top1"]:.1f}%')
  print(f'wrote {os.path.join(results, "eval_protocols.json")} and eval_protocols.png')


if __name__ == '__main__':
  main()
