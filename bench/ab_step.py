"""A/B(/C...) of the pmapped update under several variants, compiled and run in one process.

  python bench/ab_step.py --config=configs/brave_rgb_rgb.py [--config.a.b=v] [--rounds=3] \
      --variant='before|xla_cpu_experimental_ynn_fusion_type=|hk_conv' \
      --variant='after|xla_cpu_experimental_ynn_fusion_type='

A variant is NAME|XLA_OPTIONS[|FLAGS]: XLA debug options as comma-separated
name=value ('' = XLA defaults; 'train' = what training uses, step.compiler_options)
and FLAGS, '+'-separated: hk_conv, the backbones built with plain hk.Conv2D instead
of tsm_resnet.Conv2D (the implementation before the small-image matmul path);
autodiff_bn, batch norm differentiated by autodiff as published (model.bn_backward='autodiff');
device_augment, the step also runs the view chain and the log-mel on a batch
shipped as data.augment_on='device' ships it (train_step.shipped_batch), as
training does by default, where the published step gets augmented clips.

  python bench/ab_step.py --config=configs/brave_rgb_rgb.py --config.data.narrow.image_size=64 \
      --variant='published|xla_cpu_experimental_ynn_fusion_type=|hk_conv+autodiff_bn' \
      --variant='ours|train|device_augment'   # the update step against the published one
Variants run on the same batch in turn, round after round, so a shared, noisy
machine slows all alike; the ratios of median step times are what to trust.
"""
import copy
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import haiku as hk
import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import train_step as bench_lib
from brave_jax.models import tsm_resnet
from brave_jax.train import step as step_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_PARSED = bench_lib._PARSED  # pylint: disable=protected-access  # --config, as train_step.py's.
_VARIANTS = flags.DEFINE_multi_string(
    'variant', ['xla_defaults|', 'train|train'], 'NAME|XLA_OPTIONS[|FLAGS]; the first is the '
    'baseline the others are compared with.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed rounds (after one warm-up round).')


def parse_options(spec: str, devices) -> dict[str, str] | None:
  """'a=1,b=' -> {'a': '1', 'b': ''}; 'train' -> step.compiler_options(devices)."""
  if spec == 'train':
    return step_lib.compiler_options(devices)
  out = {}
  for item in filter(None, spec.split(',')):
    name, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'--variant option {item!r} needs the form name=value (value may be empty)')
    out[name.strip()] = value
  return out or None


def compile_variant(config, devices, options, hk_conv: bool, device_augment: bool = False):
  """(compiled update, fresh state, batch) for one variant."""
  original = tsm_resnet.Conv2D
  if hk_conv:
    tsm_resnet.Conv2D = hk.Conv2D  # _conv looks the class up when the model is traced.
  try:
    model, optimizer, update, batch = bench_lib._setup(  # pylint: disable=protected-access
        config, devices, augment_in_step=device_augment)
    init = step_lib.make_init(model, optimizer, devices, prepare_batch=(
        bench_lib.step_preparer(config) if device_augment else None))
    state = init(jax.random.PRNGKey(config.seed), batch)
    compiled = update.pmapped.lower(state, batch).compile(compiler_options=options)
  finally:
    tsm_resnet.Conv2D = original
  return compiled, state, batch


def main(argv):
  del argv
  config = _PARSED.config
  devices = jax.local_devices()
  runs = {}
  for spec in _VARIANTS.value:
    name, _, rest = spec.partition('|')
    options_spec, _, flag_spec = rest.partition('|')
    flags_ = set(filter(None, flag_spec.split('+')))
    unknown = flags_ - {'hk_conv', 'device_augment', 'autodiff_bn'}
    if unknown:
      raise ValueError(f'--variant {spec!r}: unknown flags {sorted(unknown)}')
    options = parse_options(options_spec, devices)
    start = time.perf_counter()
    variant_config = copy.deepcopy(config)
    if 'autodiff_bn' in flags_:
      variant_config.model.bn_backward = 'autodiff'
    compiled, state, batch = compile_variant(variant_config, devices, options,
                                             'hk_conv' in flags_, 'device_augment' in flags_)
    print(f'{name}: XLA options {options or "defaults"}, '
          f'{"hk.Conv2D" if "hk_conv" in flags_ else "Conv2D"}, '
          f'batch norm gradient {variant_config.model.bn_backward}'
          f'{", augmentation + log-mel in the step" if "device_augment" in flags_ else ""}; '
          f'compile {time.perf_counter() - start:.0f} s, '
          f'{compiled.cost_analysis()["flops"] / 1e9:.1f} GFLOP/step', flush=True)
    runs[name] = [compiled, state, batch, []]
  loads = []
  for r in range(_ROUNDS.value + 1):
    for name, run in runs.items():
      compiled, state, batch, times = run
      start = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state.params, metrics))
      elapsed = time.perf_counter() - start
      run[1] = state
      if r:  # Round 0 warms up.
        times.append(elapsed)
      loads.append(os.getloadavg()[0])
      print(f'round {r} {name}: {elapsed:.2f} s, loss {float(metrics["loss"][0]):.5f}, '
            f'load {loads[-1]:.1f}', flush=True)
  med = {name: statistics.median(run[3]) for name, run in runs.items()}
  base = next(iter(med))
  for name in runs:
    print(f'{name}: median {med[name]:.2f} s/step, {config.training.batch_size / med[name]:.3f} '
          f'clips/s, speedup vs {base} {med[base] / med[name]:.3f}x')
  print(f'load average (1 min) during the rounds: {min(loads):.1f}-{max(loads):.1f}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=bench_lib.cli.absl_flags_parser(_PARSED, lock=False))
