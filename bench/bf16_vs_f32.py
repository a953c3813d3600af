"""Does bfloat16 compute train like float32? Same batches, loss curves side by side.

  python bench/bf16_vs_f32.py [--config=configs/brave_rgb_audio.py:tiny] [--steps=200]

Trains the config `--steps` updates three times on one fixed list of batches
from the input pipeline (the embedded synthetic set by default): float32 with
seed 0, float32 with seed 1, bfloat16 with seed 0. The tolerance is the natural
seed-to-seed spread: bf16 passes if its smoothed curve stays as close to f32
seed 0 as f32 seed 1 does (max and mean absolute difference after smoothing).
Writes bench/results/bf16_vs_f32.png and bench/results/bf16_vs_f32.json.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax import cli
from brave_jax import main as brave_main
from brave_jax.models import brave
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG = 'configs/brave_rgb_audio.py:tiny'
_STEPS = flags.DEFINE_integer('steps', 200, 'Updates per run.')
_SMOOTH = flags.DEFINE_integer('smooth', 20, 'Moving-average window (steps) for the curves.')
_OUT = flags.DEFINE_string('out', os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               'results'), 'Output directory.')

RUNS = (('float32', 0), ('float32', 1), ('bfloat16', 0))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
  """Trailing moving average (shorter window at the start), same length as `values`."""
  cumsum = np.cumsum(np.insert(values, 0, 0.0))
  idx = np.arange(1, len(values) + 1)
  lo = np.maximum(idx - window, 0)
  return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def train_losses(config, batches: list, dtype: str, seed: int) -> np.ndarray:
  """Per-step training loss of one run over `batches`."""
  c = config.copy_and_resolve_references()
  c.model.compute_dtype = dtype
  c.seed = seed
  devices = jax.local_devices()
  model = brave.build_model(c.model, tuple(c.data.broad_modalities), axis_name='i')
  optimizer = optimizer_lib.make_optimizer(c)
  update = step_lib.make_pmapped_update(model, optimizer, 'i', devices)
  state = step_lib.make_init(model, optimizer, devices)(jax.random.PRNGKey(seed), batches[0])
  losses = []
  start = time.perf_counter()
  for batch in batches:
    state, metrics = update(state, batch)
    losses.append(metrics['loss'])
  losses = np.array([float(np.asarray(x)[0]) for x in losses])
  print(f'{dtype} seed {seed}: {time.perf_counter() - start:.0f} s, loss {losses[0]:.4f} -> '
        f'{losses[-1]:.4f}', flush=True)
  if not np.all(np.isfinite(losses)):
    raise FloatingPointError(f'{dtype} seed {seed}: non-finite loss at step '
                             f'{int(np.argmin(np.isfinite(losses)))}')
  return losses


def main(argv):
  del argv
  # --config (and --config.a.b=v overrides) is the flag brave_jax.main defines, read by cli.py.
  config_name = brave_main._PARSED.spec  # pylint: disable=protected-access
  config = brave_main._PARSED.config.copy_and_resolve_references()  # pylint: disable=protected-access
  config.training.num_steps = _STEPS.value
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, _STEPS.value)
  iterator = brave_main.make_batch_iterator_fn(config)(0)
  batches = [next(iterator) for _ in range(_STEPS.value)]  # Same batches for every run.
  curves = {f'{d}_seed{s}': train_losses(config, batches, d, s) for d, s in RUNS}
  w = _SMOOTH.value
  sm = {k: smooth(v, w) for k, v in curves.items()}
  skip = w  # Compare where the average spans a full window.
  ref = sm['float32_seed0'][skip:]
  seed_diff = np.abs(sm['float32_seed1'][skip:] - ref)
  bf16_diff = np.abs(sm['bfloat16_seed0'][skip:] - ref)
  summary = {
      'config': config_name, 'steps': _STEPS.value, 'smooth_window': w,
      'tolerance_max_abs': float(seed_diff.max()), 'tolerance_mean_abs': float(seed_diff.mean()),
      'bf16_max_abs': float(bf16_diff.max()), 'bf16_mean_abs': float(bf16_diff.mean()),
  }
  summary['bf16_within_tolerance'] = bool(
      summary['bf16_max_abs'] <= summary['tolerance_max_abs'] and
      summary['bf16_mean_abs'] <= summary['tolerance_mean_abs'])
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'bf16_vs_f32.json'), 'w') as f:
    json.dump(dict(summary, curves={k: v.tolist() for k, v in curves.items()},
                   smoothed={k: v.tolist() for k, v in sm.items()}), f)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 4.5))
  styles = {'float32_seed0': ('tab:blue', '-'), 'float32_seed1': ('tab:blue', ':'),
            'bfloat16_seed0': ('tab:red', '-')}
  for k, v in curves.items():
    color, ls = styles[k]
    ax.plot(v, color=color, alpha=0.15, linewidth=0.8)
    ax.plot(sm[k], color=color, linestyle=ls, linewidth=2, label=k.replace('_', ' '))
  ax.set_xlabel('step')
  ax.set_ylabel(f'training loss ({w}-step moving average)')
  ax.set_title(f'{config_name}: bf16 max |diff| {summary["bf16_max_abs"]:.3f} vs seed spread '
               f'{summary["tolerance_max_abs"]:.3f}', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(_OUT.value, 'bf16_vs_f32.png'), dpi=100)
  print(json.dumps(summary, indent=1))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.absl_flags_parser(
      brave_main._PARSED, default_spec=DEFAULT_CONFIG))  # pylint: disable=protected-access
