"""The pmapped BraVe update: per-device rng, pmean'd grads/metrics, cross-replica BN.

Everything a step needs lives in `TrainState`, and the step's randomness is
`fold_in(fold_in(rng, step), device)`, so a step is a pure function of
(state, batch). With the input pipeline replaying the same batches on resume
(data/pipeline.py: the order is a function of seed and step), a resumed run
repeats an uninterrupted one bit for bit on CPU (tests/test_resume_data.py,
test_loop.py); on accelerators XLA's reductions need not be deterministic.

Multi-process (jax.distributed): with `devices=None` the pmap spans every
device of every process; each process passes only its local slice
`[local_devices, B, ...]` and gets its local slice back, while `pmean`/BN
statistics over axis 'i' (and `axis_index`) are global. All processes must
call the pmapped functions in the same order.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from brave_jax import config_base

PyTree = Any
Metrics = Mapping[str, jax.Array]
# Runs on each device's share of the batch inside the pmapped function, before the model: e.g.
# the view augmentations when config.data.augment_on is 'device' (data/augment_device.py).
# None: the model takes the batch as it comes.
PrepareBatch = Callable[[PyTree], PyTree] | None

# XLA:CPU options for the update step: YNNPACK for reductions only. With the defaults
# (jaxlib 0.10.2) convolutions and elementwise ops run as YNNPACK fusions too, which made
# the TSM-ResNet-50 step slower than XLA's own (Eigen) convolutions; with no YNNPACK at
# all, batch norm's reductions become XLA:CPU reduce-windows, the largest share of the
# CPU step. YNNPACK's reductions made the step 1.27x faster (bench/README.md, "YNNPACK for
# the reductions"); bench/ab_step.py measures such choices in one process. The published
# training-step goldens are checked compiled with these options.
CPU_COMPILER_OPTIONS: dict[str, str] = {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}


class TrainState(NamedTuple):
  """All that changes during training; on device it carries a leading [devices] axis."""
  step: jax.Array  # int32: number of updates applied so far.
  params: PyTree
  state: PyTree  # Haiku state (BatchNorm moving averages).
  opt_state: PyTree
  rng: jax.Array  # Base key; each step uses fold_in(fold_in(rng, step), device).


def local_devices_of(devices: Sequence[jax.Device] | None) -> list[jax.Device]:
  """The devices this process feeds: its local ones (all of them when `devices` is None)."""
  if devices is None:
    return list(jax.local_devices())
  return [d for d in devices if d.process_index == jax.process_index()]


def mesh_sharding(devices: Sequence[jax.Device], axis_name: str = 'i') -> jax.sharding.Sharding:
  """The sharding pmap gives its outputs: leading axis split over `devices`."""
  mesh = jax.sharding.Mesh(np.asarray(devices), (axis_name,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))


def replicate(tree: PyTree, devices: Sequence[jax.Device] | None = None) -> PyTree:
  """Copies an unreplicated tree onto every device, with the leading [devices] axis pmap expects."""
  devices = list(devices or jax.local_devices())
  sharding = mesh_sharding(devices)

  def put(x):
    x = np.asarray(jax.device_get(x))
    return jax.device_put(np.broadcast_to(x[None], (len(devices),) + x.shape), sharding)

  return jax.tree.map(put, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """Device 0's copy of a replicated tree as host numpy, copied so later donation can't touch it."""
  def first(x):
    if isinstance(x, jax.Array):
      x = x.addressable_shards[0].data
    return np.array(np.asarray(x)[0, ...], copy=True)

  return jax.tree.map(first, tree)


def _leaf_name(key_path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in key_path)


def shard_batch(batch: PyTree, num_devices: int) -> PyTree:
  """Reshapes a flat [N, ...] batch to [devices, N / devices, ...]; refuses an uneven N."""
  def reshape(key_path, x):
    x = np.asarray(x)
    if x.ndim == 0 or config_base.uneven_batch(x.shape[0], 1, num_devices):
      raise ValueError(
          f'batch field {_leaf_name(key_path)!r} has {x.shape[0] if x.ndim else "no"} examples, '
          f'which does not split evenly over {num_devices} device(s); make the batch '
          f'(config.training.batch_size per process) a multiple of {num_devices}')
    return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])

  return jax.tree_util.tree_map_with_path(reshape, batch)


def check_batch(batch: PyTree, num_devices: int) -> int:
  """Returns the per-device batch size; raises if the leading dims are not [devices, B]."""
  per_device = None
  for key_path, x in jax.tree_util.tree_flatten_with_path(batch)[0]:
    shape = np.shape(x)
    if len(shape) < 2 or shape[0] != num_devices:
      raise ValueError(
          f'batch field {_leaf_name(key_path)!r} has shape {shape}, but the update runs on '
          f'{num_devices} device(s) and needs [devices={num_devices}, per_device_batch, ...]: '
          f'split the global batch evenly over devices (config.training.batch_size must be a '
          f'multiple of the device count; see train.step.shard_batch)')
    if per_device is None:
      per_device = shape[1]
    elif shape[1] != per_device:
      raise ValueError(
          f'batch field {_leaf_name(key_path)!r} has per-device batch {shape[1]}, other fields '
          f'have {per_device}: every field of a batch must hold the same examples')
  if per_device is None:
    raise ValueError('the batch has no arrays')
  return per_device


def compiler_options(devices: Sequence[jax.Device]) -> dict[str, str] | None:
  """XLA options the update step is compiled with on `devices` (None: XLA's defaults).

  Single-process only: an executable compiled ahead of time rejects the global
  arguments a multi-process pmap passes, so multi-process runs keep the defaults.
  """
  if (devices and devices[0].platform == 'cpu' and CPU_COMPILER_OPTIONS
      and jax.process_count() == 1):
    return dict(CPU_COMPILER_OPTIONS)
  return None


def _with_compiler_options(pmapped: Callable[..., Any],
                           options: Mapping[str, str]) -> Callable[..., Any]:
  """`pmapped`, but compiled with XLA `options`: one executable per input signature."""
  cache: dict[Any, Any] = {}

  def call(*args):
    leaves, treedef = jax.tree.flatten(args)
    key = (treedef, tuple((np.shape(x), np.dtype(x.dtype)) for x in leaves))
    if key not in cache:
      cache[key] = pmapped.lower(*args).compile(compiler_options=dict(options))
    return cache[key](*args)

  return call


def make_init(model: Any, optimizer: optax.GradientTransformation,
              devices: Sequence[jax.Device] | None = None,
              axis_name: str = 'i',
              prepare_batch: PrepareBatch = None) -> Callable[[jax.Array, PyTree], TrainState]:
  """(rng, batch [D, B, ...]) -> replicated TrainState; under pmap so cross-replica BN binds.

  devices=None: every process's devices (call on all processes with the same rng, so all
  replicas start identical); a list: exactly those, e.g. one process's own for evaluation.
  `prepare_batch` as `make_pmapped_update`'s (the model is initialised on what it will see).
  """
  local = local_devices_of(devices)

  def init(rng, batch):
    if prepare_batch is not None:
      batch = prepare_batch(batch)
    init_rng, train_rng = jax.random.split(rng)
    params, state = model.init(init_rng, batch)
    # Init-time BN averages come from this device's batch; average them so replicas agree.
    state = jax.tree.map(
        lambda x: jax.lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        state)
    opt_state = optimizer.init(params)
    return TrainState(jnp.zeros([], jnp.int32), params, state, opt_state, train_rng)

  pmapped = jax.pmap(init, axis_name=axis_name, in_axes=(None, 0),
                     devices=None if devices is None else list(devices))

  def checked(rng: jax.Array, batch: PyTree) -> TrainState:
    check_batch(batch, len(local))
    return pmapped(rng, batch)

  def host_template(rng: jax.Array, batch: PyTree) -> TrainState:
    """Unreplicated zeros shaped like the state (restore target); no compile, no collectives."""
    one_device = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((1,) + np.shape(x)[1:], x.dtype), batch)
    shapes = jax.eval_shape(jax.vmap(init, axis_name=axis_name, in_axes=(None, 0)), rng,
                            one_device)
    return jax.tree.map(lambda s: np.zeros(s.shape[1:], s.dtype), shapes)

  checked.host_template = host_template
  return checked


def make_pmapped_update(
    model: Any,
    optimizer: optax.GradientTransformation,
    axis_name: str = 'i',
    devices: Sequence[jax.Device] | None = None,
    schedule: optax.Schedule | None = None,
    prepare_batch: PrepareBatch = None,
) -> Callable[[TrainState, PyTree], tuple[TrainState, Metrics]]:
  """(replicated TrainState, batch [D, B, ...]) -> (new state, metrics [D]); state donated.

  devices as in `make_init`: None spans all processes (D = this process's local devices).
  `prepare_batch` runs on each device's batch before the model, inside the one compiled step
  (so the device-side augmentation costs no extra dispatch and no host round trip).
  """
  local = local_devices_of(devices)

  def update(ts: TrainState, batch: PyTree) -> tuple[TrainState, Metrics]:
    if prepare_batch is not None:
      batch = prepare_batch(batch)
    step_rng = jax.random.fold_in(ts.rng, ts.step)
    device_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
    grad_fn = jax.value_and_grad(model.loss, has_aux=True)
    (loss, (new_state, metrics)), grads = grad_fn(ts.params, ts.state, device_rng, batch)
    grads = jax.lax.pmean(grads, axis_name)
    metrics = dict(metrics)
    metrics.setdefault('loss', loss)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics = jax.lax.pmean(metrics, axis_name)
    updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
    params = optax.apply_updates(ts.params, updates)
    if schedule is not None:
      metrics['learning_rate'] = jnp.asarray(schedule(ts.step), jnp.float32)
    return TrainState(ts.step + 1, params, new_state, opt_state, ts.rng), metrics

  pmapped = jax.pmap(update, axis_name=axis_name, devices=None if devices is None else
                     list(devices), donate_argnums=(0,))
  options = compiler_options(local)
  run = _with_compiler_options(pmapped, options) if options else pmapped

  def checked(ts: TrainState, batch: PyTree) -> tuple[TrainState, Metrics]:
    check_batch(batch, len(local))
    return run(ts, batch)

  checked.pmapped = pmapped  # For benchmarks that want the raw function.
  return checked
