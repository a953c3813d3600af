"""How much does the linear probe's choice of C move a result? Re-fits saved embeddings only.

For a run's saved embeddings (eval.save_embeddings: <workdir>/embeddings_pretrained.npz and
embeddings_random_init.npz), prints test top-1 for every C of the grid (what the test would
say of each; never used to choose), and for svm_c='auto' under each CV unit ('clip': each
held-out augmented clip alone, 'video': each held-out video by its clips' mean score, as the
test split is scored) the C it picks and the test top-1 that gives; the same per C with
L2-normalised embeddings, and what feature_transform='auto' (transform and C chosen together
by the video-unit CV) picks. No model, no device.

  python bench/probe_stability.py /tmp/gen/seed_0 [/tmp/gen/seed_1 ...] [--out=probe.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from brave_jax.eval import embeddings as embeddings_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.eval import svm  # pylint: disable=g-import-not-at-top,wrong-import-position


def probe_table(path: str) -> dict:
  """Per C and per CV unit, test top-1 of the probe re-fit on one saved embeddings file."""
  splits, _ = embeddings_lib.load_embeddings(path)
  train, test = splits['train'], splits['test']

  def test_top1(c: float, transform: str = 'standardize') -> float:
    r = svm.evaluate_linear(train['feats'], train['labels'], test['feats'], test['labels'],
                            test['video_index'], c, train_video_index=train['video_index'],
                            transform=transform)
    return round(100 * r['test']['top1'], 1)

  out = {'per_c': {}, 'per_c_l2': {}, 'auto': {}}
  for c in svm.C_GRID:
    out['per_c'][f'{c:.0e}'] = test_top1(c)
    out['per_c_l2'][f'{c:.0e}'] = test_top1(c, 'l2_standardize')
  for unit in svm.CV_UNITS:
    c, cv = svm.choose_c(train['feats'], train['labels'], groups=train['video_index'],
                         cv_unit=unit)
    out['auto'][unit] = {'c': c, 'test_top1': out['per_c'][f'{c:.0e}'],
                         'cv': {f'{k:.0e}': round(100 * v, 1) for k, v in cv.items()}}
  # feature_transform='auto' (the :demo's): transform and C chosen together by the video-unit CV.
  transform, c, cv = svm.choose_probe(train['feats'], train['labels'], 'auto', 'auto',
                                      groups=train['video_index'])
  out['auto']['video+transform'] = {
      'transform': transform, 'c': c,
      'test_top1': out['per_c' if transform == 'standardize' else 'per_c_l2'][f'{c:.0e}'],
      'cv': {t: {f'{k:.0e}': round(100 * v, 1) for k, v in by_c.items()} for t, by_c in cv.items()}}
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('workdirs', nargs='+')
  p.add_argument('--out', default=None)
  args = p.parse_args()
  results = {}
  for workdir in args.workdirs:
    for tag in ('pretrained', 'random_init'):
      path = os.path.join(workdir, f'embeddings_{tag}.npz')
      if not os.path.exists(path):
        print(f'{path}: missing, skipped')
        continue
      t = probe_table(path)
      results[f'{workdir}:{tag}'] = t
      per_c = ' '.join(f'{k}:{v:5.1f}' for k, v in t['per_c'].items())
      auto = ' | '.join(f"{u}: {a.get('transform', '')} C={a['c']:.0e} -> {a['test_top1']:.1f}"
                        for u, a in t['auto'].items())
      print(f'{workdir} {tag:11s} test top-1 per C  {per_c}\n    auto  {auto}', flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
