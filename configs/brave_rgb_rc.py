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
    c.data.narrow.update(num_frames=4, frame_step=2, image_size=32)  # 32 px: the least 32x
    c.data.broad.update(num_frames=8, frame_step=4, image_size=32)  # downsampling takes.
    cpu_variants.shrink_model(c, depth=18, width_multiplier=0.25,  # Smallest ResNet, 1/4 wide.
                              hidden_dim=256, projection_dim=64)
    c.training.update(batch_size=8, num_steps=60, log_every=5, checkpoint_every=20,
                      keep_checkpoints=2)
    c.optimizer.warmup_steps = 5
    # Peak LR 0.5 (peak = base x batch / 512): higher peaks were unstable (bench/bf16_vs_f32.py).
    c.optimizer.base_learning_rate = 0.5 * 512 / 8
    c.eval.update(num_frames=4, image_size=32)  # Test clips the size of the narrow clip.
    cpu_variants.tiny_evaluation(c)
  elif arg == 'demo':
    cpu_variants.demo_dataset(c)  # 600 + 200 synthetic videos of 1.4 s; milder crops.
    c.data.narrow.update(num_frames=8, frame_step=2, image_size=32)
    c.data.broad.update(num_frames=16, frame_step=2, image_size=32)  # 1.28 s, convolved.
    cpu_variants.shrink_model(c, depth=18, width_multiplier=0.25,  # Smallest ResNet, 1/4 wide.
                              hidden_dim=256, projection_dim=64)
    # 800 steps: 600 left one seed only 8 points above random init.
    c.training.update(batch_size=32, num_steps=800, log_every=10, checkpoint_every=100,
                      keep_checkpoints=2)
    c.optimizer.warmup_steps = 50
    # Peak LR 0.5: peak 2.0 lowered the loss faster but its features held no class.
    c.optimizer.base_learning_rate = 0.5 * 512 / 32
    c.optimizer.variant = 'corrected'  # The published one memorised the videos (docs/recipes.md).
    c.eval.update(num_frames=8, image_size=32)  # Test clips the size of the narrow clip.
    cpu_variants.demo_evaluation(c)
  elif arg:
    raise cpu_variants.unknown_variant(arg)
  return c
