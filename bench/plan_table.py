"""The TPU plan's table from the plans' JSON files, host cores at today's pipeline figures.

  python bench/plan_table.py [bench/results/plan/*_plan.json ...]

Each row is one `python -m brave_jax.plan ... --json=F` run. The compiler's figures (memory,
FLOPs) are read as written; host cores per chip are recomputed from clips/s at the plan's
utilisation and `plan.PIPELINE_CPU_MS_PER_CLIP` as it stands now, since the input pipeline
got faster after some of the compiles ran. Prints a markdown table, sorted by config,
topology, precision, remat and batch.
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax import plan
# pylint: enable=g-import-not-at-top,wrong-import-position

_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'plan')
_VIEWS = {'brave_rgb_audio': 'V/A', 'brave_rgb_rgb': 'V/V', 'brave_rgb_flow': 'V/F',
          'brave_rgb_flow_audio': 'V/FA'}
_TOPOLOGY_ORDER = {'v5e': 0, 'v4': 1, 'v5p': 2}
_VARIANT_ORDER = {'f32': 0, 'bf16': 1, 'remat': 2, 'bf16, remat': 3}


def _name(config_path: str) -> str:
  return os.path.splitext(os.path.basename(config_path))[0]


def row(p: dict) -> tuple[tuple, str]:
  """(sort key, markdown row) for one plan."""
  name = _name(p['config'])
  what = _VIEWS.get(name, name)
  variant = ', '.join(x for x, on in (('bf16', p['compute_dtype'] == 'bfloat16'),
                                      ('remat', p['remat'])) if on) or 'f32'
  chip = p['topology'].split(':')[0]
  key = (list(_VIEWS).index(name) if name in _VIEWS else 9, _TOPOLOGY_ORDER.get(chip, 9),
         _VARIANT_ORDER.get(variant, 9), p['batch_per_chip'])
  wall = f'{p["compile_s"]:.0f} s' if p.get('compile_s') else '—'
  head = f'| {what} | {p["topology"]} | {variant} | {p["batch_per_chip"]} |'
  if not p['fits']:
    return key, f'{head} does not fit | — | — | — | {wall} |'
  m = p['memory_gib']
  clips = p['throughput_per_chip']['bf16_40pct']['clips_per_s'] if 'bf16_40pct' in p.get(
      'throughput_per_chip', {}) else None
  ms, _ = plan.PIPELINE_CPU_MS_PER_CLIP.get(name, (None, None))
  cores = f'{clips * ms / 1000:.1f}' if clips and ms else '—'
  return key, (f'{head} {m["peak"]:.2f} of {m["hbm"]:.0f} GiB | {p["gflop_per_clip"]:.1f} | '
               f'{clips:.0f} | {cores} | {wall} |')


def main(paths: list[str]) -> None:
  paths = paths or sorted(glob.glob(os.path.join(_RESULTS, '*_plan.json')))
  rows = sorted(row(json.load(open(p))) for p in paths)
  print('| config | topology | compute | batch per chip | peak per chip | GFLOP per clip | '
        'clips/s per chip at 40 % of bf16 peak | host cores per chip | compile wall |')
  print('|---|---|---|---|---|---|---|---|---|')
  for _, line in rows:
    print(line)
  print(f'\nhost cores at {", ".join(f"{_VIEWS.get(k, k)} {v[0]}" for k, v in plan.PIPELINE_CPU_MS_PER_CLIP.items())} CPU ms per clip')


if __name__ == '__main__':
  main(sys.argv[1:])
