"""Times the pmapped BraVe update on dummy batches of a config's shapes (no input pipeline).

  python bench/train_step.py --config=configs/brave_rgb_audio.py:tiny [--config.a.b=v] [--steps=10]

Compilation is excluded; prints the median step time and ends with `clips_per_s=<number>`.
"""
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax import config_base
from brave_jax.data import pipeline
from brave_jax.models import brave
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/<file>.py[:variant]')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (after 2 warm-up steps).')


def dummy_batch(config, num_devices: int, seed: int = 0) -> dict:
  """A [D, B, ...] batch of the config's shapes with values in the pipeline's ranges."""
  per_device = config.training.batch_size // jax.process_count() // num_devices
  rng = np.random.default_rng(seed)

  def make(shape):
    full = (num_devices, per_device) + tuple(shape)
    return rng.uniform(size=full).astype(np.float32) if shape else np.zeros(full, np.int32)

  return jax.tree.map(make, pipeline.batch_shapes(config), is_leaf=lambda x: isinstance(x, tuple))


def main(argv):
  del argv
  config = _CONFIG.value
  devices = jax.local_devices()
  config_base.validate(config, jax.process_count(), len(devices))
  model = brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name='i')
  optimizer = optimizer_lib.make_optimizer(config)
  batch = jax.device_put(dummy_batch(config, len(devices)), step_lib.mesh_sharding(devices))
  state = step_lib.make_init(model, optimizer, devices)(jax.random.PRNGKey(config.seed), batch)
  update = step_lib.make_pmapped_update(model, optimizer, 'i', devices,
                                        optimizer_lib.make_schedule(config))
  start = time.perf_counter()
  state, metrics = update(state, batch)
  jax.block_until_ready(metrics)
  print(f'compile + first step: {time.perf_counter() - start:.1f} s')
  state, metrics = update(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    state, metrics = update(state, batch)
    jax.block_until_ready((state.params, metrics))
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  global_batch = config.training.batch_size
  print(f'device: {jax.devices()[0].device_kind} x{len(devices)}, '
        f'processes: {jax.process_count()}')
  print(f'global batch {global_batch}, {len(times)} steps: median {median * 1e3:.1f} ms/step, '
        f'min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}; '
        f'loss {float(step_lib.unreplicate(metrics)["loss"]):.4f}')
  print(f'clips_per_s={global_batch / median:.2f}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
