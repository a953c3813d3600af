"""The training loop: init or resume, pmapped steps fed 2 batches ahead, checkpoints, metrics.

Determinism contract: the data iterator is rebuilt from the step it starts at
(`make_batch_iterator(start_step)`) and must yield the batch of each step as a
pure function of the step; a step's randomness is `fold_in(rng, step)`. The
project's pipeline over TFRecord shards (data/pipeline.py) keeps that promise
for the same shards, process layout and config, so on CPU a run stopped or
killed at any moment and resumed from its last checkpoint ends with
parameters equal to an uninterrupted run's (tests/test_resume_data.py, with a
real kill -9). What this does not cover: accelerators whose XLA kernels are
not deterministic (GPU reductions and scatters, unless XLA is told to use
deterministic ops) reproduce the data exactly but the parameters only to
rounding, and an iterator from another source (e.g. TFDS) is exact only if
it, too, is a pure function of the step. Resuming needs no flag: an existing
checkpoint in `workdir/checkpoints` is picked up.

Multi-host: every process runs `train` with its own iterator over its own
shards; the pmapped step spans all processes' devices (train/step.py), so
every process holds the same state. Only process 0 writes config.json and
metrics; all processes take part in each checkpoint save and restore.
workdir may be a local path or a remote one (gs://...), written via etils.epath.

Faults: a workdir whose checkpoints another config made is refused before
anything is written (train/resume.py); config.json, metrics lines and plots are
written atomically (brave_jax/files.py); a background checkpoint save that
fails stops the run at the next step. A run that stops on a full disk, a failed
save or a lost peer process raises one RunError (brave_jax/errors.py) saying
what happened, the last good checkpoint, and that a rerun resumes from it.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from etils import epath
import jax
import ml_collections
import numpy as np
import optax

from brave_jax import config_base
from brave_jax import errors
from brave_jax import files
from brave_jax import saved_config
from brave_jax.train import checkpointing
from brave_jax.train import metrics as metrics_lib
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import resume
from brave_jax.train import step as step_lib

PyTree = Any
BatchIteratorFn = Callable[[int], Iterator[PyTree]]
CHECKPOINT_SUBDIR = 'checkpoints'
# Collective/coordination failures that mean another process of the run is gone.
_PEER_LOST_SIGNS = ('Gloo', 'Connection reset by peer', 'Connection closed', 'heartbeat',
                    'coordination service', 'CoordinationService', 'Socket closed',
                    'failed to connect to all addresses', 'Barrier failed')


class NonFiniteError(errors.RunError, FloatingPointError):
  """A loss, gradient or parameter became NaN/inf; the run stops before saving it."""


class DevicePrefetcher:
  """Keeps up to `size` batches on the devices, filled by a background thread.

  The thread pulls host batches and starts their transfers while the main
  thread dispatches steps, so the device waits only when the input pipeline
  is truly behind; `wait_s` is the main thread's time blocked for a batch.
  One thread keeps the batch order (and so determinism) intact.
  """

  _END = object()

  def __init__(self, iterator: Iterator[PyTree], devices: list[jax.Device], size: int = 2):
    self._iterator = iterator
    self._num_devices = len(devices)
    self._sharding = step_lib.mesh_sharding(devices)
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    self.wait_s = 0.0  # Host time spent blocked on the input pipeline.
    self._thread = threading.Thread(target=self._fill, name='device_prefetch', daemon=True)
    self._thread.start()

  def _put(self, item: Any) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _fill(self) -> None:
    try:
      for batch in self._iterator:
        step_lib.check_batch(batch, self._num_devices)
        on_device = jax.tree.map(lambda x: jax.device_put(x, self._sharding), batch)
        if not self._put(on_device):
          return
      self._put(self._END)
    except BaseException as error:  # pylint: disable=broad-except
      self._put(error)  # Re-raised in the main thread, where the loop handles it.

  def __iter__(self):
    return self

  def __next__(self) -> PyTree:
    if self._done:
      raise StopIteration
    start = time.perf_counter()
    item = self._queue.get()
    self.wait_s += time.perf_counter() - start
    if item is self._END:
      self._done = True
      raise StopIteration
    if isinstance(item, BaseException):
      self._done = True
      raise item
    return item

  def close(self) -> None:
    """Stops the thread (it may hold the host iterator); queued batches are dropped."""
    self._stop.set()
    self._thread.join(timeout=10)


def resolve_workdir(workdir: str) -> str:
  """Absolute local path, or a remote URL (gs://...) as given."""
  if '://' in workdir:
    return workdir.rstrip('/')
  return os.path.abspath(os.path.expanduser(workdir))


def _scalars(metrics_D: PyTree) -> dict[str, float]:
  """Host floats of device 0's (pmean'd, hence global) metrics; blocks on that step only."""
  return {k: float(v) for k, v in step_lib.unreplicate(metrics_D).items()}


def _check_finite_scalars(step: int, scalars: dict[str, float], last_good: int | None,
                          ckpt_dir: str) -> None:
  names = sorted(scalars, key=lambda k: (k != 'loss', not k.startswith('loss'), k))  # Loss first.
  for name in names:
    value = scalars[name]
    if not math.isfinite(value):
      raise NonFiniteError(
          f'non-finite {name} = {value} at step {step} (update {step - 1}); not saved. The last '
          f'good checkpoint is step {last_good} in {ckpt_dir} and a rerun resumes from it. Lower '
          f'config.optimizer.base_learning_rate, lengthen warmup_steps, or check the input data.')


def _check_finite_tree(step: int, host_state: step_lib.TrainState, last_good: int | None,
                       ckpt_dir: str) -> None:
  for part in ('params', 'state'):
    for key_path, x in jax.tree_util.tree_flatten_with_path(getattr(host_state, part))[0]:
      x = np.asarray(x)
      if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        name = optimizer_lib.param_path(key_path)
        raise NonFiniteError(
            f'non-finite {part} {name!r} at step {step}; not saved. The last good checkpoint is '
            f'step {last_good} in {ckpt_dir}. Lower config.optimizer.base_learning_rate.')


def _skipped_records(iterator: Any) -> int | None:
  """Records the input pipeline dropped, if it tracks them (`iterator.skipped_records`)."""
  value = getattr(iterator, 'skipped_records', None)
  if callable(value):
    value = value()
  return None if value is None else int(value)


class Hook(Protocol):
  """Runs every `every_steps` updates (and after the last) on the current state.

  Returns scalars for that step's metrics.jsonl record, TensorBoard and
  progress line (e.g. the kNN monitor, eval/knn.py); `close()` runs at the end.
  """
  every_steps: int
  progress_fields: tuple[str, ...]

  def __call__(self, step: int, train_state: step_lib.TrainState) -> Mapping[str, float]: ...

  def close(self) -> None: ...


def _merge_initial(fresh: PyTree, given: PyTree, what: str) -> PyTree:
  """`fresh` with every leaf that `given` also holds (same module/name path) replaced by it."""
  flat_given = {optimizer_lib.param_path(kp): x
                for kp, x in jax.tree_util.tree_flatten_with_path(given)[0]}
  used = set()

  def pick(key_path, x):
    path = optimizer_lib.param_path(key_path)
    if path not in flat_given:
      return x
    value = np.asarray(flat_given[path])
    if value.shape != np.shape(x):
      raise ValueError(f'initial {what} {path!r} has shape {value.shape}, the model needs '
                       f'{np.shape(x)}: the checkpoint was trained with another architecture '
                       '(config.model) than the one being trained')
    used.add(path)
    return value.astype(np.asarray(x).dtype)
  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  unused = sorted(set(flat_given) - used)
  if unused:
    raise ValueError(f'initial {what} {unused[:3]} ({len(unused)} in all) match no parameter '
                     'of the model being trained; check the module names')
  return merged


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> int | None:
  """Refuses a workdir that is a file, or that holds checkpoints of another config (naming the
  fields); returns its latest checkpoint step. Reads only: run it before writing anything."""
  workdir = resolve_workdir(workdir)
  resume.check_is_directory(workdir)
  latest = checkpointing.latest_step(os.path.join(workdir, CHECKPOINT_SUBDIR))
  if latest:
    resume.check_config_matches(config, workdir, latest)
  return latest


def _peer_lost(error: BaseException) -> bool:
  """True when `error` says a collective or the coordination service lost another process."""
  if jax.process_count() < 2:
    return False
  text = ' '.join(str(e) for e in files.error_chain(error))
  return any(sign in text for sign in _PEER_LOST_SIGNS)


def _explain_stop(error: BaseException, reached: int, workdir: str,
                  ckpt: checkpointing.Checkpointer | None) -> BaseException:
  """The error to raise for a run that stopped after `reached` updates: a clear RunError where we
  know the cause.

  Called after the checkpointer closed, so ckpt.committed_step is what a rerun resumes from.
  """
  if isinstance(error, (KeyboardInterrupt, SystemExit)):
    return error
  last = ckpt.committed_step if ckpt is not None else None
  where = ckpt.directory if ckpt is not None else os.path.join(workdir, CHECKPOINT_SUBDIR)
  resume_from = (f'the last good checkpoint is step {last} in {where}, and a rerun of the same '
                 'command resumes from it' if last else
                 f'no checkpoint was saved yet in {where}, so a rerun starts from step 0')
  path = files.disk_full_path(error)
  if path == '':  # ENOSPC without a file name: name the checkpoint being saved, if that was it.
    path = next((e.path for e in files.error_chain(error)
                 if isinstance(e, errors.CheckpointSaveError)), '')
  if path is not None:
    return errors.DiskFullError(
        f'{files.NO_SPACE} writing {path or workdir}. Training stopped after step {reached}; '
        f'{resume_from} once space is freed on that disk.', path=path)
  if isinstance(error, errors.RunError):
    return error
  if _peer_lost(error):
    first = errors.first_line(error, limit=300)
    rerun = (f'resume from the last good checkpoint, step {last} in {where}' if last else
             f'start over (no checkpoint was saved yet in {where})')
    return errors.PeerLostError(
        f'process {jax.process_index()} of {jax.process_count()} lost contact with another '
        f'process of this run after step {reached} ({first}); it probably died or was killed (see '
        f'its log). Rerun the same command on every process to {rerun}.')
  return error


def say(line: str) -> None:
  """A progress line from process 0 (the others would repeat it), flushed at once."""
  if jax.process_index() == 0:
    print(line, flush=True)


def train(config: ml_collections.ConfigDict, workdir: str,
          make_batch_iterator: BatchIteratorFn, model: Any = None,
          stop_at_step: int | None = None, *,
          optimizer: optax.GradientTransformation | None = None,
          schedule: optax.Schedule | None = None,
          initial_variables: tuple[PyTree, PyTree] | None = None,
          hooks: Sequence[Hook] = (),
          progress_fields: Sequence[str] = ()) -> step_lib.TrainState:
  """Trains to training.num_steps (or stop_at_step), resuming from workdir; returns the state.

  make_batch_iterator(start_step) must yield batches [local_devices, per_device, ...]
  for steps start_step, start_step + 1, ... as a pure function of (seed, step), as
  data.pipeline.make_train_dataset does; resumed runs then match uninterrupted ones.
  stop_at_step ends early with a checkpoint, as a preemption would (schedule unchanged).

  Other users of the same machinery (fine-tuning, eval/finetune.py) pass their
  own `model` (init/loss), `optimizer` and `schedule` (default: config.optimizer's),
  and `initial_variables` = (params, state) whose leaves replace the freshly
  initialised ones on a fresh start (e.g. a pretrained backbone; a resume
  restores everything from the checkpoint instead). `hooks` run periodically
  (see Hook); `progress_fields` are extra metric names shown on the progress line.

  Raises errors.WorkdirMismatchError, before writing anything, when workdir holds
  checkpoints of another config; errors.DiskFullError / CheckpointSaveError /
  PeerLostError when a run stops on those faults (the last good checkpoint stays).
  """
  devices = jax.local_devices()  # This process's; the step itself spans every process's.
  config_base.validate(config, jax.process_count(), len(devices))
  workdir = resolve_workdir(workdir)
  check_workdir(config, workdir)  # Before writing anything.
  t = config.training
  num_steps = int(t.num_steps) if stop_at_step is None else min(int(stop_at_step), int(t.num_steps))
  ckpt_dir = os.path.join(workdir, CHECKPOINT_SUBDIR)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  ckpt = checkpointing.Checkpointer(ckpt_dir, keep=int(t.keep_checkpoints),
                                    remove_failed_saves=True)
  start_step = ckpt.latest_step() or 0
  reached = start_step  # Updates applied so far.
  batches = writer = None
  failure: BaseException | None = None
  try:
    if not start_step:
      saved_config.write(config, workdir)
    if model is None:
      from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
      model = brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name='i')
    if optimizer is None:
      schedule = optimizer_lib.make_schedule(config) if schedule is None else schedule
      optimizer = optimizer_lib.make_optimizer(config)
    host_iterator = make_batch_iterator(start_step)
    batches = DevicePrefetcher(host_iterator, devices, size=2)

    say('Reading the first batch...')
    first_batch = next(batches)
    phase_start = time.perf_counter()
    say('Restoring the checkpoint...' if start_step else
        'Compiling and running the model initialisation (XLA; minutes on CPU for a full-size '
        'model)...')
    init = step_lib.make_init(model, optimizer)  # All processes: same rng -> same replicas.
    init_rng = jax.random.PRNGKey(config.seed)
    if start_step:
      restored, meta = ckpt.restore(init.host_template(init_rng, first_batch), start_step)
      train_state = step_lib.replicate(restored, devices)
      changes = resume.check_config_matches(config, workdir, start_step)
      if changes or saved_config.read_dict(workdir) is None:
        saved_config.write(config, workdir)  # Only now: the checkpoint fits this config.
      print(f'Resumed from {ckpt_dir} at step {meta["step"]}.'
            + (f' Changed on resume: {"; ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changes)}.'
               if changes else ''), flush=True)
    else:
      train_state = init(init_rng, first_batch)
      if initial_variables is not None:
        host = step_lib.unreplicate(train_state)
        params = _merge_initial(host.params, initial_variables[0], 'parameter')
        state = _merge_initial(host.state, initial_variables[1], 'state')
        host = host._replace(params=params, state=state, opt_state=optimizer.init(params))
        train_state = step_lib.replicate(host, devices)
    say(f'{"Restored" if start_step else "Initialised"} the model in '
        f'{time.perf_counter() - phase_start:.0f}s.')
    update = step_lib.make_pmapped_update(model, optimizer, 'i', None, schedule)
    fields = tuple(progress_fields) + tuple(
        f for h in hooks for f in getattr(h, 'progress_fields', ()))
    writer = metrics_lib.MetricsWriter(
        workdir, int(t.num_steps), int(t.batch_size), start_step=start_step,
        plot_every=int(t.plot_every), progress_fields=fields)
    hook_scalars: dict[int, dict[str, float]] = {}  # Step -> hook results, written with its record.

    last_good = start_step or None
    pending = None  # (steps done, metrics on device) read one step late.
    wait_at_last_log = 0.0

    def consume(done: int, metrics_D: PyTree) -> None:
      nonlocal wait_at_last_log
      scalars = _scalars(metrics_D)
      _check_finite_scalars(done, scalars, last_good, ckpt_dir)
      from_hooks = hook_scalars.pop(done, None)
      if done % t.log_every == 0 or done == num_steps or from_hooks:
        skipped = _skipped_records(host_iterator)
        extra = dict(from_hooks or {})
        if skipped is not None:
          extra['skipped_records'] = skipped
        writer.write(done, scalars, input_wait_s=batches.wait_s - wait_at_last_log,
                     extra=extra or None)
        wait_at_last_log = batches.wait_s
      if done == start_step + 1:
        writer.reset_timer(done)  # Leave compilation out of later throughput numbers.
        wait_at_last_log = batches.wait_s

    batch = first_batch
    compile_start = time.perf_counter()
    say('Compiling the training step (XLA; a few minutes on CPU for a full-size model, '
        'nothing else prints meanwhile)...')
    for step in range(start_step, num_steps):
      if step > start_step:
        batch = next(batches)
      train_state, metrics_D = update(train_state, batch)
      if step == start_step:
        say(f'Compiled the training step in {time.perf_counter() - compile_start:.0f}s; '
            f'training from step {start_step}.')
      reached = step + 1
      ckpt.check_save()  # A failed background save stops the run now, not an interval later.
      if pending is not None:
        consume(*pending)
      pending = (step + 1, metrics_D)
      done = step + 1
      due = [h for h in hooks if h.every_steps and (done % h.every_steps == 0 or done == num_steps)]
      if due:  # A diverged state stops the run here, with the usual message, not inside a hook.
        _check_finite_scalars(done, _scalars(metrics_D), last_good, ckpt_dir)
      for hook in due:
        hook_scalars.setdefault(done, {}).update(hook(done, train_state) or {})
      if done % t.checkpoint_every == 0 or done == num_steps:
        consume(*pending)  # The update that made this state must be finite before it is saved.
        pending = None
        host_state = step_lib.unreplicate(train_state)
        _check_finite_tree(done, host_state, last_good, ckpt_dir)
        ckpt.save(host_state, meta={'seed': int(config.seed), 'data_step': done})
        last_good = done
    if pending is not None:
      consume(*pending)
  except BaseException as error:  # pylint: disable=broad-except
    failure = error
  # Stop the input thread, let an in-flight save of the last good state commit, flush outputs.
  # After a failure, errors while closing (the same full disk, say) must not hide the first one.
  closers = [batches, ckpt, writer] + [h for h in hooks if hasattr(h, 'close')]
  for closer in closers:
    if closer is None:
      continue
    try:
      closer.close()
    except BaseException as error:  # pylint: disable=broad-except
      failure = failure or error
  if failure is not None:
    explained = _explain_stop(failure, reached, workdir, ckpt)
    if explained is failure:
      raise failure
    raise explained from failure
  return train_state
