"""BraVe V/RC: narrow RGB (16x224^2), broad randomly convolved RGB (64 frames, step 4, 112^2).

'rc' is a broad modality of its own (backbone `broad_rc_embedding`): every broad
clip is convolved with a fresh random k x k x 3 x 3 kernel, k in
data.augment.rc_kernel_sizes. Unlike V/V (configs/brave_rgb_rgb.py, module
`broad_video_embedding`), it can sit beside a plain broad 'video' view in one run.

Run:
  python -m brave_jax.main --config=configs/brave_rgb_rc.py --workdir=/tmp/brave_vrc
  python -m brave_jax.main --config=configs/brave_rgb_rc.py:tiny --workdir=/tmp/vrc_tiny
  python -m brave_jax.main --config=configs/brave_rgb_rc.py:demo --workdir=/tmp/vrc_demo
"""
import ml_collections

from brave_jax import config_base


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.data.broad_modalities = ('rc',)
  return config_base.apply_variant(c, variant)
