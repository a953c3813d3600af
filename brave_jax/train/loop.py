"""The training loop: init or resume, pmapped steps fed 2 batches ahead, checkpoints, metrics.

It reads no config: pretraining (train/pretrain.py) and fine-tuning
(eval/finetune.py) each build its `Settings`, model, optimizer and data from
their own config section and call `train`.

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
save or a lost peer process raises one RunError (train/faults.py) saying
what happened, the last good checkpoint, and that a rerun resumes from it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from etils import epath
import jax
import ml_collections
import numpy as np
import optax

from brave_jax import log
from brave_jax import saved_config
from brave_jax.train import checkpointing
from brave_jax.train import faults
from brave_jax.train import metrics as metrics_lib
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import prefetch
from brave_jax.train import resume
from brave_jax.train import step as step_lib

_LOG = log.get_logger(__name__)

PyTree = Any
BatchIteratorFn = Callable[[int], Iterator[PyTree]]
CHECKPOINT_SUBDIR = 'checkpoints'


@dataclasses.dataclass(frozen=True)
class Settings:
  """How long a run trains and how often it logs, plots and checkpoints."""
  num_steps: int  # The run's full length (the schedule's, the progress line's).
  batch_size: int  # Global; for clips/s.
  log_every: int  # Steps between metrics records.
  checkpoint_every: int  # Steps between checkpoints (the last step is always saved).
  keep_checkpoints: int  # Newest checkpoints kept on disk.
  plot_every: int  # Steps between loss.png redraws (0: only at the end).
  seed: int  # The init rng, the same on every process so replicas agree.
  stop_at_step: int | None = None  # End here with a checkpoint, as a preemption would.
  progress_fields: tuple[str, ...] = ()  # Extra metric names shown on the progress line.

  @property
  def last_step(self) -> int:
    """Where this run stops: num_steps, or stop_at_step if that comes first."""
    if self.stop_at_step is None:
      return self.num_steps
    return min(self.stop_at_step, self.num_steps)


class Hook(Protocol):
  """Runs every `every_steps` updates (and after the last) on the current state.

  Returns scalars for that step's metrics.jsonl record, TensorBoard and
  progress line (e.g. the kNN monitor, eval/knn.py); `close()` runs at the end.
  """
  every_steps: int
  progress_fields: tuple[str, ...]

  def __call__(self, step: int, train_state: step_lib.TrainState) -> Mapping[str, float]: ...

  def close(self) -> None: ...


def resolve_workdir(workdir: str) -> str:
  """Absolute local path, or a remote URL (gs://...) as given."""
  if '://' in workdir:
    return workdir.rstrip('/')
  return os.path.abspath(os.path.expanduser(workdir))


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> int | None:
  """Refuses a workdir that is a file, or that holds checkpoints of another config (naming the
  fields); returns its latest checkpoint step. Reads only: run it before writing anything."""
  workdir = resolve_workdir(workdir)
  resume.check_is_directory(workdir)
  latest = checkpointing.latest_step(os.path.join(workdir, CHECKPOINT_SUBDIR))
  if latest:
    resume.check_config_matches(config, workdir, latest)
  return latest


def say(line: str) -> None:
  """A progress line from process 0 (the others would repeat it), flushed at once."""
  if jax.process_index() == 0:
    _LOG.info(line)


def train(settings: Settings, workdir: str, config: ml_collections.ConfigDict, *,
          make_batch_iterator: BatchIteratorFn, model: Any,
          optimizer: optax.GradientTransformation, schedule: optax.Schedule | None = None,
          initial_variables: tuple[PyTree, PyTree] | None = None,
          hooks: Sequence[Hook] = (),
          prepare_batch: step_lib.PrepareBatch = None) -> step_lib.TrainState:
  """Trains to settings.last_step, resuming from workdir; returns the replicated state.

  `config` is what the run records in workdir/config.json and what a resume
  is compared with; the loop reads no setting from it. make_batch_iterator
  (start_step) must yield batches [local_devices, per_device, ...] for steps
  start_step, start_step + 1, ... as a pure function of (seed, step), as
  data.pipeline does; resumed runs then match uninterrupted ones. `model`
  has init/loss (models/brave.py, models/classifier.py); `schedule` gives the
  logged learning rate (None: not logged). `initial_variables` = (params,
  state) replace the freshly initialised leaves they name on a fresh start
  (e.g. a pretrained backbone; a resume restores everything from the
  checkpoint instead). `hooks` run periodically (see Hook). `prepare_batch` runs on each
  device's batch inside the compiled init and update, before the model (train/step.py; e.g.
  the view augmentations of config.data.augment_on='device').

  Raises errors.WorkdirMismatchError, before writing anything, when workdir holds
  checkpoints of another config; errors.DiskFullError / CheckpointSaveError /
  PeerLostError when a run stops on those faults (the last good checkpoint stays).
  """
  devices = jax.local_devices()  # This process's; the step itself spans every process's.
  workdir = resolve_workdir(workdir)
  check_workdir(config, workdir)  # Before writing anything.
  last_step = settings.last_step
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, CHECKPOINT_SUBDIR),
                                    keep=settings.keep_checkpoints, remove_failed_saves=True)
  start_step = ckpt.latest_step() or 0
  reached = start_step  # Updates applied so far.
  last_good = start_step or None  # The latest checkpoint saved: what a NaN message names.
  batches = log = None
  failure: BaseException | None = None
  try:
    if not start_step:
      saved_config.write(config, workdir)
    host_iterator = make_batch_iterator(start_step)
    batches = prefetch.DevicePrefetcher(host_iterator, devices, size=2)
    say('Reading the first batch...')
    batch = next(batches)
    train_state = _init_or_restore(settings.seed, model, optimizer, batch, start_step, ckpt,
                                   devices, initial_variables, config, workdir, prepare_batch)
    update = step_lib.make_pmapped_update(model, optimizer, 'i', None, schedule, prepare_batch)
    log = _MetricsLog(settings, hooks, workdir, host_iterator, batches, start_step, ckpt.directory)
    compile_start = time.perf_counter()
    say('Compiling the training step (XLA; a few minutes on CPU for a full-size model, '
        'nothing else prints meanwhile)...')
    for step in range(start_step, last_step):
      if step > start_step:
        batch = next(batches)
      train_state, metrics_D = update(train_state, batch)
      if step == start_step:
        say(f'Compiled the training step in {time.perf_counter() - compile_start:.0f}s; '
            f'training from step {start_step}.')
      reached = done = step + 1
      ckpt.check_save()  # A failed background save stops the run now, not an interval later.
      log.add(done, metrics_D, last_good)
      due = [h for h in hooks if h.every_steps and (done % h.every_steps == 0 or done == last_step)]
      if due:  # A diverged state stops the run here, with the usual message, not inside a hook.
        faults.check_finite_scalars(done, _scalars(metrics_D), last_good, ckpt.directory)
        log.add_hook_scalars(done, _run_hooks(due, done, train_state))
      if done % settings.checkpoint_every == 0 or done == last_step:
        log.flush(last_good)  # The update that made this state must be finite before it is saved.
        _save(ckpt, train_state, done, settings.seed, last_good)
        last_good = done
    log.flush(last_good)
  except BaseException as error:  # pylint: disable=broad-except
    failure = error
  # Stop the input thread, let an in-flight save of the last good state commit, flush outputs.
  failure = _close_all([batches, ckpt, log] + [h for h in hooks if hasattr(h, 'close')], failure)
  if failure is not None:
    explained = faults.explain_stop(failure, reached, workdir, ckpt)
    if explained is failure:
      raise failure
    raise explained from failure
  return train_state


def _init_or_restore(seed: int, model: Any, optimizer: optax.GradientTransformation,
                     first_batch: PyTree, start_step: int, ckpt: checkpointing.Checkpointer,
                     devices: list[jax.Device], initial_variables: tuple[PyTree, PyTree] | None,
                     config: ml_collections.ConfigDict, workdir: str,
                     prepare_batch: step_lib.PrepareBatch = None) -> step_lib.TrainState:
  """The replicated state to train from: the checkpoint at start_step, or a fresh init."""
  phase_start = time.perf_counter()
  say('Restoring the checkpoint...' if start_step else
      'Compiling and running the model initialisation (XLA; minutes on CPU for a full-size '
      'model)...')
  # All processes: same rng -> same replicas.
  init = step_lib.make_init(model, optimizer, prepare_batch=prepare_batch)
  init_rng = jax.random.PRNGKey(seed)
  if start_step:
    restored, meta = ckpt.restore(init.host_template(init_rng, first_batch), start_step)
    train_state = step_lib.replicate(restored, devices)
    changes = resume.check_config_matches(config, workdir, start_step)
    if changes or saved_config.read_dict(workdir) is None:
      saved_config.write(config, workdir)  # Only now: the checkpoint fits this config.
    _LOG.info(f'Resumed from {ckpt.directory} at step {meta["step"]}.'
              + (f' Changed on resume: {"; ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changes)}.'
                 if changes else ''))
  else:
    train_state = init(init_rng, first_batch)
    if initial_variables is not None:
      train_state = _start_from(train_state, initial_variables, optimizer, devices)
  say(f'{"Restored" if start_step else "Initialised"} the model in '
      f'{time.perf_counter() - phase_start:.0f}s.')
  return train_state


def _start_from(train_state: step_lib.TrainState, initial_variables: tuple[PyTree, PyTree],
                optimizer: optax.GradientTransformation,
                devices: list[jax.Device]) -> step_lib.TrainState:
  """A fresh state with the given (params, state) leaves in place, and its optimizer state anew."""
  host = step_lib.unreplicate(train_state)
  params = _merge_initial(host.params, initial_variables[0], 'parameter')
  state = _merge_initial(host.state, initial_variables[1], 'state')
  host = host._replace(params=params, state=state, opt_state=optimizer.init(params))
  return step_lib.replicate(host, devices)


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


def _scalars(metrics_D: PyTree) -> dict[str, float]:
  """Host floats of device 0's (pmean'd, hence global) metrics; blocks on that step only."""
  return {k: float(v) for k, v in step_lib.unreplicate(metrics_D).items()}


def _skipped_records(iterator: Any) -> int | None:
  """Records the input pipeline dropped, if it tracks them (`iterator.skipped_records`)."""
  value = getattr(iterator, 'skipped_records', None)
  if callable(value):
    value = value()
  return None if value is None else int(value)


def _run_hooks(due: Sequence[Hook], step: int,
               train_state: step_lib.TrainState) -> dict[str, float]:
  """The scalars of every hook due at `step`, merged."""
  scalars: dict[str, float] = {}
  for hook in due:
    scalars.update(hook(step, train_state) or {})
  return scalars


def _save(ckpt: checkpointing.Checkpointer, train_state: step_lib.TrainState, step: int,
          seed: int, last_good: int | None) -> None:
  """Saves the state after `step` updates, unless a parameter went non-finite."""
  host_state = step_lib.unreplicate(train_state)
  faults.check_finite_tree(step, host_state, last_good, ckpt.directory)
  ckpt.save(host_state, meta={'seed': seed, 'data_step': step})


class _MetricsLog:
  """Reads each step's metrics one step late, so the host never waits on the step it just
  dispatched, and writes the records that are due (log steps, the last step, hook steps)."""

  def __init__(self, settings: Settings, hooks: Sequence[Hook], workdir: str,
               host_iterator: Iterator[PyTree], batches: prefetch.DevicePrefetcher,
               start_step: int, ckpt_dir: str):
    fields = tuple(settings.progress_fields) + tuple(
        f for h in hooks for f in getattr(h, 'progress_fields', ()))
    self._writer = metrics_lib.MetricsWriter(
        workdir, settings.num_steps, settings.batch_size, start_step=start_step,
        plot_every=settings.plot_every, progress_fields=fields)
    self._log_every = settings.log_every
    self._last_step = settings.last_step
    self._host_iterator = host_iterator
    self._batches = batches
    self._start_step = start_step
    self._ckpt_dir = ckpt_dir
    self._pending: tuple[int, PyTree] | None = None  # (steps done, metrics on device).
    self._hook_scalars: dict[int, dict[str, float]] = {}  # Step -> hook results.
    self._wait_at_last_log = 0.0

  def add(self, done: int, metrics_D: PyTree, last_good: int | None) -> None:
    """Keeps step `done`'s metrics for later; reads and writes the previous step's."""
    self.flush(last_good)
    self._pending = (done, metrics_D)

  def add_hook_scalars(self, done: int, scalars: dict[str, float]) -> None:
    """Hook results, written with step `done`'s record."""
    self._hook_scalars[done] = scalars

  def flush(self, last_good: int | None) -> None:
    """Reads the kept metrics now; a non-finite one stops the run naming `last_good`."""
    if self._pending is None:
      return
    done, metrics_D = self._pending
    self._pending = None
    scalars = _scalars(metrics_D)
    faults.check_finite_scalars(done, scalars, last_good, self._ckpt_dir)
    from_hooks = self._hook_scalars.pop(done, None)
    if done % self._log_every == 0 or done == self._last_step or from_hooks:
      skipped = _skipped_records(self._host_iterator)
      extra = dict(from_hooks or {})
      if skipped is not None:
        extra['skipped_records'] = skipped
      self._writer.write(done, scalars, input_wait_s=self._batches.wait_s - self._wait_at_last_log,
                         extra=extra or None)
      self._wait_at_last_log = self._batches.wait_s
    if done == self._start_step + 1:
      self._writer.reset_timer(done)  # Leave compilation out of later throughput numbers.
      self._wait_at_last_log = self._batches.wait_s

  def close(self) -> None:
    """Flushes TensorBoard and draws the final loss.png."""
    self._writer.close()


def _close_all(closers: Sequence[Any], failure: BaseException | None) -> BaseException | None:
  """Closes each; returns the run's first error. After a failure, errors while closing (the same
  full disk, say) must not hide the first one."""
  for closer in closers:
    if closer is None:
      continue
    try:
      closer.close()
    except BaseException as error:  # pylint: disable=broad-except
      failure = failure or error
  return failure
