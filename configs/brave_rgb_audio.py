"""BraVe V/A: narrow RGB (16x224^2), broad audio (log-mel of the 64x4-frame window).

`:tiny` is what tests run (60 steps); `:demo` is the README's first command: 800 steps on
the embedded synthetic set, then a linear probe of the narrow backbone against a randomly
initialised one.

Run:
  python -m brave_jax.main --config=configs/brave_rgb_audio.py --workdir=/tmp/brave_va
  python -m brave_jax.main --config=configs/brave_rgb_audio.py:tiny --workdir=/tmp/va_tiny
  python -m brave_jax.main --config=configs/brave_rgb_audio.py:demo --workdir=/tmp/va_demo
"""
import ml_collections

from brave_jax import config_base
from brave_jax import cpu_variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The published-size run; `arg` 'tiny' or 'demo' shrinks it for a CPU."""
  c = config_base.base_config()
  c.data.broad_modalities = ('audio',)
  if arg == 'tiny':
    cpu_variants.tiny(c)  # brave_jax/cpu_variants.py: the same two recipes for every config.
  elif arg == 'demo':
    cpu_variants.demo(c)
  elif arg:
    raise cpu_variants.unknown_variant(arg)
  return c
