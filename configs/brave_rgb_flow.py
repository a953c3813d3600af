"""BraVe V/F: narrow RGB (16x224^2), broad optical flow (64 frames, step 4, 112^2, 2 channels).

The broad view is TV-L1 flow stored in the shards (`flow/encoded`), written by
the converter with --flow; the embedded synthetic set computes its own.

`:tiny` is what tests run (60 steps); `:demo` is its CPU-sized run: 800 steps on the embedded
synthetic set, then a linear probe of the narrow backbone against a randomly initialised one.

Run:
  python -m brave_jax.data.convert --videos=/data/videos --output_dir=/data/flow_shards \
      --flow --flow_method=tvl1 --workers=16
  python -m brave_jax.main --config=configs/brave_rgb_flow.py --workdir=/tmp/brave_vf \
      --config.data.train_shards=/data/flow_shards
  python -m brave_jax.main --config=configs/brave_rgb_flow.py:tiny --workdir=/tmp/vf_tiny
  python -m brave_jax.main --config=configs/brave_rgb_flow.py:demo --workdir=/tmp/vf_demo
"""
import ml_collections

from brave_jax import config_base
from brave_jax import cpu_variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The published-size run; `arg` 'tiny' or 'demo' shrinks it for a CPU."""
  c = config_base.base_config()
  c.data.broad_modalities = ('flow',)
  if arg == 'tiny':
    cpu_variants.tiny(c)  # brave_jax/cpu_variants.py: the same two recipes for every config.
  elif arg == 'demo':
    cpu_variants.demo(c)
  elif arg:
    raise cpu_variants.unknown_variant(arg)
  return c
