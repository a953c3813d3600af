"""BraVe V/FA: narrow RGB (16x224^2), broad optical flow (64x4 frames, 112^2) and broad audio.

Each broad view has its own backbone (TSM-ResNet for flow, ResNet-v2 for the
log-mel of the same 64x4-frame window); the loss has four terms, narrow <-> flow
and narrow <-> audio in both directions. Shards need flow (convert --flow).

`:tiny` is what tests run (60 steps); `:demo` is its CPU-sized run: 800 steps on the embedded
synthetic set, then a linear probe of the narrow backbone against a randomly initialised one.

Run:
  python -m brave_jax.data.convert --videos=/data/videos --output_dir=/data/flow_shards \
      --flow --flow_method=tvl1 --workers=16
  python -m brave_jax.main --config=configs/brave_rgb_flow_audio.py --workdir=/tmp/brave_vfa \
      --config.data.train_shards=/data/flow_shards
  python -m brave_jax.main --config=configs/brave_rgb_flow_audio.py:tiny --workdir=/tmp/vfa_tiny
  python -m brave_jax.main --config=configs/brave_rgb_flow_audio.py:demo --workdir=/tmp/vfa_demo
"""
import ml_collections

from brave_jax import config_base
from brave_jax import cpu_variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The published-size run; `arg` 'tiny' or 'demo' shrinks it for a CPU."""
  c = config_base.base_config()
  c.data.broad_modalities = ('flow', 'audio')
  if arg == 'tiny':
    cpu_variants.tiny(c)  # brave_jax/cpu_variants.py: the same two recipes for every config.
  elif arg == 'demo':
    cpu_variants.demo(c)
  elif arg:
    raise cpu_variants.unknown_variant(arg)
  return c
