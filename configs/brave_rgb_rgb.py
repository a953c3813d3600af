"""BraVe V/V: narrow RGB (16x224^2), broad RGB (64 frames, step 4, 112^2), randomly convolved.

`:tiny` is what tests run (60 steps); `:demo` is its CPU-sized run: 800 steps on the embedded
synthetic set, then a linear probe of the narrow backbone against a randomly initialised one.

Run:
  python -m brave_jax.main --config=configs/brave_rgb_rgb.py --workdir=/tmp/brave_vv
  python -m brave_jax.main --config=configs/brave_rgb_rgb.py:tiny --workdir=/tmp/vv_tiny
  python -m brave_jax.main --config=configs/brave_rgb_rgb.py:demo --workdir=/tmp/vv_demo
"""
import ml_collections

from brave_jax import config_base
from brave_jax import cpu_variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The published-size run; `arg` 'tiny' or 'demo' shrinks it for a CPU."""
  c = config_base.base_config()
  c.data.broad_modalities = ('video',)
  c.data.random_convolve_broad_video = True
  if arg == 'tiny':
    cpu_variants.tiny(c)  # brave_jax/cpu_variants.py: the same two recipes for every config.
  elif arg == 'demo':
    cpu_variants.demo(c)
  elif arg:
    raise cpu_variants.unknown_variant(arg)
  return c
