"""BraVe V/V: narrow RGB (16x224^2), broad RGB (64 frames, step 4, 112^2), randomly convolved.

Run:
  python -m brave_jax.main --config=configs/brave_rgb_rgb.py --workdir=/tmp/brave_vv
  python -m brave_jax.main --config=configs/brave_rgb_rgb.py:tiny --workdir=/tmp/vv_tiny
  python -m brave_jax.main --config=configs/brave_rgb_rgb.py:demo --workdir=/tmp/vv_demo
"""
import ml_collections

from brave_jax import config_base


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.data.broad_modalities = ('video',)
  c.data.random_convolve_broad_video = True
  return config_base.apply_variant(c, variant)
