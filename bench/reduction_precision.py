"""Batch-norm statistics (mean, E[x^2] - E[x]^2) under the XLA:CPU options training may use,
against float64: do YNNPACK's reductions (step.CPU_COMPILER_OPTIONS) sum less precisely?

  python bench/reduction_precision.py

Prints the largest relative error of the mean and of the variance per channel, for
activation-sized [M, C] float32 inputs, some with a mean far from zero (where the variance
formula cancels), under XLA's defaults (what the published code runs), YNNPACK off, and
YNNPACK for reductions only.
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from brave_jax.models import batch_norm_grad  # pylint: disable=g-import-not-at-top,wrong-import-position

OPTIONS = {
    'xla_defaults': None,
    'ynn_off': {'xla_cpu_experimental_ynn_fusion_type': ''},
    'ynn_reduce': {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'},
}
CASES = [(262144, 64, 0.0), (262144, 64, 3.0), (1048576, 32, 3.0), (16384, 256, 1.0)]


def stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The model's batch-norm statistics (batch_norm_grad._stats) over the leading axis, [C]."""
  mean, var = batch_norm_grad._stats(x, (0,), None, None)  # pylint: disable=protected-access
  return mean[0], var[0]


def main() -> None:
  rng = np.random.default_rng(0)
  print('M x C, offset: largest relative error of (mean, variance) per option')
  for m, c, offset in CASES:
    x = (rng.standard_normal((m, c)) * 0.5 + offset).astype(np.float32)
    ref_mean, ref_var = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
    row = {}
    for name, options in OPTIONS.items():
      compiled = jax.jit(stats).lower(x).compile(compiler_options=options)
      mean, var = (np.asarray(a, np.float64) for a in compiled(x))
      row[name] = (np.max(np.abs(mean - ref_mean) / (np.abs(ref_mean) + 1e-3)),
                   np.max(np.abs(var - ref_var) / ref_var))
    print(f'{m} x {c}, {offset}: ' + ', '.join(
        f'{name} ({a:.1e}, {b:.1e})' for name, (a, b) in row.items()), flush=True)


if __name__ == '__main__':
  main()
