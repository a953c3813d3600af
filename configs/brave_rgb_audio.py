"""BraVe V/A: narrow RGB (16x224^2), broad audio (log-mel of the 64x4-frame window).

Run:
  python -m brave_jax.main --config=configs/brave_rgb_audio.py --workdir=/tmp/brave_va
  python -m brave_jax.main --config=configs/brave_rgb_audio.py:tiny --workdir=/tmp/va_tiny
  python -m brave_jax.main --config=configs/brave_rgb_audio.py:demo --workdir=/tmp/va_demo
"""
import ml_collections

from brave_jax import config_base


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.data.broad_modalities = ('audio',)
  return config_base.apply_variant(c, variant)
