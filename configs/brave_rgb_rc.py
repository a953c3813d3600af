"""BraVe V/RC: narrow RGB (16x224^2), broad randomly convolved RGB (64 frames, step 4, 112^2).

'rc' is a broad modality of its own (backbone `broad_rc_embedding`): every broad
clip is convolved with a fresh random k x k x 3 x 3 kernel, k in
data.augment.rc_kernel_sizes. Unlike V/V (configs/brave_rgb_rgb.py, module
`broad_video_embedding`), it can sit beside a plain broad 'video' view in one run.

`:tiny` is what tests run (60 steps); `:demo` is its CPU-sized run: 800 steps on the embedded
synthetic set, then a linear probe of the narrow backbone against a randomly initialised one.

Run:
  python -m brave_jax.main --config=configs/brave_rgb_rc.py --workdir=/tmp/brave_vrc
  python -m brave_jax.main --config=configs/brave_rgb_rc.py:tiny --workdir=/tmp/vrc_tiny
  python -m brave_jax.main --config=configs/brave_rgb_rc.py:demo --workdir=/tmp/vrc_demo
"""
import ml_collections

from brave_jax import config_base
from brave_jax import cpu_variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The published-size run; `arg` 'tiny' or 'demo' shrinks it for a CPU."""
  c = config_base.base_config()
  c.data.broad_modalities = ('rc',)
  if arg == 'tiny':
    cpu_variants.tiny(c)  # brave_jax/cpu_variants.py: the same two recipes for every config.
  elif arg == 'demo':
    cpu_variants.demo(c)
  elif arg:
    raise cpu_variants.unknown_variant(arg)
  return c
