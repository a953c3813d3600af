"""Times the pmapped BraVe update on dummy batches of a config's shapes (no input pipeline).

  python bench/train_step.py --config=configs/brave_rgb_audio.py:tiny [--config.a.b=v] [--steps=10]
  python bench/train_step.py --config=configs/brave_rgb_audio.py --memory   # compile only

Compilation is excluded; prints the median step time, the step's FLOPs per clip
(XLA cost analysis of the compiled step), the achieved FLOP/s and its fraction
of a peak measured in the same run (a large matmul and a large convolution,
the faster of the two), and ends with `clips_per_s=<number>`.

--memory compiles (never runs) the step with and without `model.remat` at two
per-device batch sizes, prints XLA's buffer-assignment peak per device and the
largest per-device batch that fits 16 GiB and 80 GiB devices, assuming memory
grows linearly with the batch (params/optimizer state fixed, activations per clip).
"""
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax import cli
from brave_jax import config_base
from brave_jax.data import pipeline
from brave_jax.models import brave
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

cli.define_config_flag()
_PARSED = cli.ParsedConfig()
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (after 2 warm-up steps).')
_PEAK = flags.DEFINE_bool('peak', True, 'Measure matmul/conv peak FLOP/s in this run.')
_MEMORY = flags.DEFINE_bool('memory', False, 'Compile only: peak memory per device with and '
                            'without remat, and the largest batch fitting 16/80 GiB.')
_PROFILE_OPS = flags.DEFINE_integer('profile_ops', 0, 'Trace one step and print the N ops '
                                    '(XLA:CPU thunks) that took longest, grouped by kind.')
_MEMORY_BATCHES = flags.DEFINE_list('memory_batches', ['2', '4'], 'Two per-device batch sizes '
                                    'compiled by --memory to fit memory = a + b * batch.')

GIB = 1024**3
DEVICE_MEMORY_GIB = (16, 80)


def dummy_batch(config, num_devices: int, seed: int = 0) -> dict:
  """A [D, B, ...] batch of the config's shapes with values in the pipeline's ranges."""
  per_device = config.training.batch_size // jax.process_count() // num_devices
  rng = np.random.default_rng(seed)

  def make(shape):
    full = (num_devices, per_device) + tuple(shape)
    return rng.uniform(size=full).astype(np.float32) if shape else np.zeros(full, np.int32)

  return jax.tree.map(make, pipeline.batch_shapes(config), is_leaf=lambda x: isinstance(x, tuple))


def _time_best(fn: Callable[[], Any], min_seconds: float = 1.0, repeats: int = 3) -> float:
  """Best-of-`repeats` seconds per call; each repeat runs >= min_seconds to smooth noise."""
  jax.block_until_ready(fn())  # Compile and warm up.
  best = float('inf')
  for _ in range(repeats):
    n, start = 0, time.perf_counter()
    while True:
      out = fn()
      n += 1
      jax.block_until_ready(out)
      elapsed = time.perf_counter() - start
      if elapsed >= min_seconds:
        break
    best = min(best, elapsed / n)
  return best


def measure_peak(dtype=jnp.float32) -> dict[str, float]:
  """FLOP/s of a 2048^3 matmul and a ResNet-like 3x3 convolution on device 0."""
  key = jax.random.PRNGKey(0)
  n = 2048
  a = jax.random.normal(key, (n, n), dtype)
  b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul_s = _time_best(lambda: matmul(a, b))
  # NHWC 32x28x28x128 -> 3x3x128x128: the shape of a ResNet-50 stage-2 conv at 224 px.
  batch, hw, cin, cout, k = 32, 28, 128, 128, 3
  x = jax.random.normal(key, (batch, hw, hw, cin), dtype)
  w = jax.random.normal(key, (k, k, cin, cout), dtype)
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  conv_s = _time_best(lambda: conv(x, w))
  return {'matmul': 2 * n**3 / matmul_s, 'conv': 2 * batch * hw * hw * cin * cout * k * k / conv_s}


def _op_kind(name: str) -> str:
  """'ynn_fusion.12' -> 'ynn_fusion': groups a thunk trace by what kind of op ran."""
  return re.sub(r'(\.\d+)+$', '', name)


def profile_ops(run_step: Callable[[], Any], top: int) -> None:
  """Traces one step; prints the most expensive XLA ops and op kinds by total time."""
  trace_dir = tempfile.mkdtemp(prefix='brave_profile_')
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    jax.block_until_ready(run_step())
  path = glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'), recursive=True)[0]
  with gzip.open(path) as f:
    events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  by_op, by_kind = collections.Counter(), collections.Counter()
  for e in events:
    name = e.get('name', '')
    # Thunks are named after HLO instructions; skip host-side Python/PjRt frames.
    if e.get('ph') != 'X' or name.startswith(('$', 'end: ')) or '::' in name or ' ' in name:
      continue
    if not re.match(r'^[a-z][a-z0-9_\-]*(\.\d+)*$', name):
      continue
    by_op[name] += e.get('dur', 0) / 1e6
    by_kind[_op_kind(name)] += e.get('dur', 0) / 1e6
  total = sum(by_op.values())
  print(f'op profile ({total:.2f} s of XLA ops in one step; trace in {trace_dir}):')
  for k, v in by_kind.most_common(top):
    print(f'  kind {k:40s} {v:8.3f} s {v / total:6.1%}')
  for k, v in by_op.most_common(top):
    print(f'  op   {k:40s} {v:8.3f} s {v / total:6.1%}')


# The crop a shipped narrow view resizes in the step (data.narrow.resize_on='device'): about the
# mean random-resized crop of a 256 x 340 frame (area 0.3-1.0).
SHIPPED_CROP_HW = (192, 256)


def shipped_batch(config, num_devices: int, seed: int = 0) -> dict:
  """A [D, B, ...] batch as the pipeline ships it with data.augment_on='device': RGB views as
  pixels in [0, 255] with each clip's draws (augment_device.draw_view, as the pipeline draws
  them), the broad audio as its waveform; the step's `prepare_batch` turns it into the model's."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from brave_jax.data import augment_device  # pylint: disable=g-import-not-at-top
  from brave_jax.data import resize_device  # pylint: disable=g-import-not-at-top
  batch = dummy_batch(config, num_devices, seed)
  d = config.data
  lead = batch['label'].shape  # (D, B)

  def draws(random_conv: bool, salt: int) -> dict:
    clips = [augment_device.draw_view(d.augment, tf.constant([seed, salt * 100_000 + i], tf.int64),
                                      random_conv=random_conv) for i in range(np.prod(lead))]
    return {k: np.stack([c[k].numpy() for c in clips]).reshape(lead + tuple(clips[0][k].shape))
            for k in clips[0]}

  batch['narrow']['video'] *= 255.0
  shipped = {'narrow': {'video': draws(False, 1)}, 'broad': {}}
  if config_base.resizes_narrow_on_device(config):  # The crop unresized, flattened, as uint8.
    lead_frames = batch['narrow']['video'].shape[:3]  # [D, B, T] of [D, B, T, size, size, 3].
    batch['narrow']['video'] = np.random.default_rng(seed).integers(
        0, 256, lead_frames + (d.narrow.crop_buffer_pixels, 3)).astype(np.uint8)
    tables = {k: v.numpy() for k, v in resize_device.resize_tables(
        tf.constant(SHIPPED_CROP_HW), d.narrow.image_size).items()}
    shipped['narrow']['video'].update({k: np.broadcast_to(v, lead + v.shape).copy()
                                       for k, v in tables.items()})
  for m in d.broad_modalities:
    if m in ('video', 'rc'):
      batch['broad'][m] *= 255.0
      shipped['broad'][m] = draws(m == 'rc' or bool(d.random_convolve_broad_video), 2)
  if augment_device.ships_broad_audio_waveform(config):
    rng = np.random.default_rng(seed)
    batch['broad']['audio'] = rng.uniform(
        -1.0, 1.0, lead + (pipeline.audio_num_samples(config),)).astype(np.float32)
  batch[augment_device.DRAWS] = shipped
  return batch


def device_augment_config(config):
  """A copy of the config with data.augment_on='device' (the caller's stays as it was)."""
  config = config.copy_and_resolve_references()
  config.data.augment_on = 'device'
  return config


def step_preparer(config):
  """What the pretraining step runs before the model with data.augment_on='device'."""
  from brave_jax.data import augment_device  # pylint: disable=g-import-not-at-top
  return augment_device.pretraining_batch_preparer(device_augment_config(config))


def _setup(config, devices, abstract: bool = False, augment_in_step: bool = False):
  """(model, optimizer, update, batch) for the config; batch as ShapeDtypeStructs if abstract.
  `augment_in_step`: the step runs the device augmentation (and log-mel) on a shipped batch,
  as training does with data.augment_on='device'."""
  config_base.validate(config, jax.process_count(), len(devices))
  model = brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name='i')
  optimizer = optimizer_lib.make_optimizer(config)
  if augment_in_step:
    config = device_augment_config(config)
  prepare = step_preparer(config) if augment_in_step else None
  update = step_lib.make_pmapped_update(model, optimizer, 'i', devices,
                                        optimizer_lib.make_schedule(config), prepare_batch=prepare)
  if augment_in_step:
    batch = jax.device_put(shipped_batch(config, len(devices)), step_lib.mesh_sharding(devices))
  elif abstract:
    per_device = config.training.batch_size // jax.process_count() // len(devices)
    batch = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((len(devices), per_device) + tuple(s),
                                       jnp.float32 if s else jnp.int32),
        pipeline.batch_shapes(config), is_leaf=lambda x: isinstance(x, tuple))
  else:
    batch = jax.device_put(dummy_batch(config, len(devices)), step_lib.mesh_sharding(devices))
  return model, optimizer, update, batch


def abstract_state(model, optimizer, batch, num_devices: int) -> step_lib.TrainState:
  """The replicated TrainState's shapes, without running init (cheap at full size)."""
  def init(rng, one_device_batch):
    params, state = model.init(rng, one_device_batch)
    return step_lib.TrainState(jnp.zeros([], jnp.int32), params, state, optimizer.init(params),
                               rng)

  one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), batch)
  shapes = jax.eval_shape(init, jax.random.PRNGKey(0), one)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct((num_devices,) + s.shape, s.dtype), shapes)


def step_memory_bytes(config, devices) -> dict[str, int]:
  """XLA's buffer assignment of the compiled step, per device (donated state aliased)."""
  model, optimizer, update, batch = _setup(config, devices, abstract=True)
  state = abstract_state(model, optimizer, batch, len(devices))
  options = step_lib.compiler_options(devices)
  stats = update.pmapped.lower(state, batch).compile(compiler_options=options).memory_analysis()
  out = {k: int(getattr(stats, f'{k}_size_in_bytes'))
         for k in ('argument', 'output', 'alias', 'temp')}
  out['peak'] = out['argument'] + out['output'] - out['alias'] + out['temp']
  return out


def memory_report(config, devices) -> None:
  """Peak memory per device with/without remat; largest batch for 16/80 GiB by a linear fit."""
  b1, b2 = (int(b) for b in _MEMORY_BATCHES.value)
  n = len(devices) * jax.process_count()
  print(f'narrow {config.data.narrow.num_frames}x{config.data.narrow.image_size}^2, broad '
        f'{tuple(config.data.broad_modalities)} {config.data.broad.num_frames}x'
        f'{config.data.broad.image_size}^2, dtype {config.model.compute_dtype}; '
        f'per-device batches {b1}, {b2} (CPU compiler\'s buffer assignment)')
  for remat in (False, True):
    peaks = []
    for b in (b1, b2):
      c = config.copy_and_resolve_references()
      c.model.remat = remat
      c.training.batch_size = b * n
      start = time.perf_counter()
      m = step_memory_bytes(c, devices)
      peaks.append(m['peak'])
      print(f'remat={remat} batch/device={b}: peak {m["peak"] / GIB:.2f} GiB (args '
            f'{m["argument"] / GIB:.2f}, out {m["output"] / GIB:.2f}, aliased '
            f'{m["alias"] / GIB:.2f}, temp {m["temp"] / GIB:.2f}) [compile '
            f'{time.perf_counter() - start:.0f} s]', flush=True)
    per_clip = (peaks[1] - peaks[0]) / (b2 - b1)
    fixed = peaks[0] - per_clip * b1
    fits = {g: int((g * GIB - fixed) // per_clip) if per_clip > 0 else -1 for g in DEVICE_MEMORY_GIB}
    print(f'remat={remat}: {fixed / GIB:.2f} GiB fixed + {per_clip / GIB:.3f} GiB/clip -> '
          + ', '.join(f'max batch/device {fits[g]} on {g} GiB' for g in DEVICE_MEMORY_GIB))


def main(argv):
  del argv
  config = _PARSED.config
  if _PROFILE_OPS.value:  # Before the CPU backend starts: thunks then emit trace events.
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_cpu_enable_xprof_traceme=true').strip()
  devices = jax.local_devices()
  if _MEMORY.value:
    memory_report(config, devices)
    return
  model, optimizer, update, batch = _setup(config, devices)
  state = step_lib.make_init(model, optimizer, devices)(jax.random.PRNGKey(config.seed), batch)
  start = time.perf_counter()
  options = step_lib.compiler_options(devices)  # What training compiles with.
  compiled = update.pmapped.lower(state, batch).compile(compiler_options=options)
  flops_per_device_step = float(compiled.cost_analysis()['flops'])
  print(f'compile: {time.perf_counter() - start:.1f} s (XLA options: {options or "defaults"})')
  for _ in range(2):  # Warm-up.
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state.params, metrics))
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  global_batch = config.training.batch_size
  per_device = global_batch // jax.process_count() // len(devices)
  print(f'device: {jax.devices()[0].device_kind} x{len(devices)}, '
        f'processes: {jax.process_count()}, load average {os.getloadavg()[0]:.2f}')
  print(f'global batch {global_batch}, {len(times)} steps: median {median * 1e3:.1f} ms/step, '
        f'min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}; '
        f'loss {float(step_lib.unreplicate(metrics)["loss"]):.4f}')
  achieved = flops_per_device_step / median  # Per device.
  print(f'FLOPs/clip {flops_per_device_step / per_device / 1e9:.2f} G (XLA cost analysis, '
        f'fwd+bwd+update); achieved {achieved / 1e9:.1f} GFLOP/s per device')
  if _PEAK.value:
    peak = measure_peak()
    best = max(peak.values())
    print(f'measured peak per device: matmul {peak["matmul"] / 1e9:.1f} GFLOP/s, conv '
          f'{peak["conv"] / 1e9:.1f} GFLOP/s; step achieves {achieved / best:.1%} of the max')
  if _PROFILE_OPS.value:
    def run_step():
      nonlocal state, metrics
      state, metrics = compiled(state, batch)
      return metrics
    profile_ops(run_step, _PROFILE_OPS.value)
  print(f'clips_per_s={global_batch / median:.2f}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.absl_flags_parser(_PARSED, lock=False))
