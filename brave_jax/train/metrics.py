"""Where training numbers go: a progress line, metrics.jsonl, TensorBoard and loss.png.

Only process 0 writes. The loop hands over host floats it read one step late,
so nothing here ever waits on the device. Files go through brave_jax.files:
each metrics line is appended whole or not at all, loss.png is replaced
atomically, and a torn last line (a crash mid-write in an older version) is cut
off when a run resumes; reading skips unparseable lines with a warning. The
workdir may be remote (gs://...); there, where files cannot be appended to,
metrics.jsonl is rewritten whole at each log step (it stays small).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import time
from typing import Any, Mapping, Sequence

from etils import epath
import jax

from brave_jax import files
from brave_jax import log

_LOG = log.get_logger(__name__)

METRICS_FILE = 'metrics.jsonl'
PLOT_FILE = 'loss.png'


def _format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  return str(datetime.timedelta(seconds=int(seconds)))


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of workdir/metrics.jsonl (across resumes), last record per step kept."""
  path = epath.Path(workdir, METRICS_FILE)
  if not path.exists():
    return []
  by_step: dict[int, dict[str, Any]] = {}
  for record in files.read_jsonl(str(path)):
    if isinstance(record.get('step'), int):
      by_step[record['step']] = record
  return [by_step[s] for s in sorted(by_step)]


def plot_losses(workdir: str, out_path: str | None = None) -> str | None:
  """Draws every 'loss*' series and the learning rate vs step into loss.png; returns its path."""
  records = read_metrics(workdir)
  if not records:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  steps = [r['step'] for r in records]
  loss_keys = sorted({k for r in records for k in r if k.startswith('loss')})
  fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True,
                                       gridspec_kw={'height_ratios': [3, 1]})
  for key in loss_keys:
    ax_loss.plot(steps, [r.get(key, float('nan')) for r in records], label=key,
                 linewidth=2.0 if key == 'loss' else 1.0)
  ax_loss.set_ylabel('loss')
  ax_loss.legend(fontsize='small')
  ax_loss.grid(alpha=0.3)
  ax_lr.plot(steps, [r.get('learning_rate', float('nan')) for r in records], color='tab:gray')
  ax_lr.set_ylabel('learning rate')
  ax_lr.set_xlabel('step')
  ax_lr.grid(alpha=0.3)
  fig.tight_layout()
  out_path = out_path or os.path.join(workdir, PLOT_FILE)
  return files.save_figure(fig, out_path)


class ScalarEventFile:
  """TensorBoard scalars, written and flushed in the caller's thread, one event per log step.

  tensorboardX's SummaryWriter writes from a thread of its own: on a full disk
  that thread dies, the next ten add_scalar calls fill its queue and the
  eleventh blocks the training loop for good. Here a failed write raises where
  the loop can report it. Each run opens a new event file, so a torn last
  record stays at the end of the old one, where TensorBoard stops reading anyway.
  """

  def __init__(self, logdir: str):
    from tensorboardX import event_file_writer  # pylint: disable=g-import-not-at-top
    from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
    record_writer.directory_check(logdir)
    self.logdir = logdir
    self._writer = event_file_writer.EventsWriter(os.path.join(logdir, 'events'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    try:
      self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary_pb2.Summary(value=values)))
      self._writer.flush()
    except OSError as error:
      raise files.with_path(error, self.path) from error

  @property
  def path(self) -> str:
    """The event file (tensorboardX names it when it opens it)."""
    return getattr(self._writer, '_file_name', self.logdir)

  def close(self) -> None:
    try:
      self._writer.close()
    except OSError as error:
      raise files.with_path(error, self.path) from error


class MetricsWriter:
  """Writes one record per log step; throughput is measured between records."""

  def __init__(self, workdir: str, num_steps: int, global_batch_size: int,
               start_step: int = 0, plot_every: int = 0, is_writer: bool | None = None,
               use_tensorboard: bool = True, progress_fields: Sequence[str] = ()):
    self.workdir = workdir
    self.progress_fields = tuple(progress_fields)  # Extra metrics shown on the progress line.
    self.num_steps = num_steps
    self.global_batch_size = global_batch_size
    self.plot_every = plot_every
    self.is_writer = jax.process_index() == 0 if is_writer is None else is_writer
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._last_plot_step = start_step
    self._tb = None
    if self.is_writer:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      files.repair_jsonl_tail(os.path.join(workdir, METRICS_FILE))
      if use_tensorboard:
        self._tb = ScalarEventFile(os.path.join(workdir, 'tensorboard'))

  def reset_timer(self, step: int) -> None:
    """Restarts throughput timing (e.g. after compilation) from `step`."""
    self._last_step = step
    self._last_time = time.perf_counter()

  def write(self, step: int, scalars: Mapping[str, float],
            input_wait_s: float = 0.0, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Logs the metrics of `step` (updates applied so far); returns the record written."""
    now = time.perf_counter()
    elapsed = max(now - self._last_time, 1e-9)
    steps_done = max(step - self._last_step, 0)
    record: dict[str, Any] = {'step': int(step)}
    record.update({k: float(v) for k, v in scalars.items()})
    record['clips_per_s'] = steps_done * self.global_batch_size / elapsed
    record['input_wait_fraction'] = min(input_wait_s / elapsed, 1.0)
    record.update(dict(extra or {}))
    self._last_step, self._last_time = step, now
    if not self.is_writer:
      return record
    files.append_line(os.path.join(self.workdir, METRICS_FILE), json.dumps(record))
    if self._tb is not None:
      self._tb.write(step, {k: v for k, v in record.items()
                            if k != 'step' and isinstance(v, (int, float))})
    secs_per_step = elapsed / steps_done if steps_done else float('nan')
    eta = (self.num_steps - step) * secs_per_step
    _LOG.info(f'step {step}/{self.num_steps} | loss {record.get("loss", float("nan")):.4f} | '
              f'lr {record.get("learning_rate", float("nan")):.3e} | '
              f'{record["clips_per_s"]:.1f} clips/s | '
              f'input wait {record["input_wait_fraction"]:.0%} | '
              + ''.join(f'{k} {record[k]:.4g} | ' for k in self.progress_fields if k in record)
              + f'ETA {_format_eta(eta)}')
    if self.plot_every and step - self._last_plot_step >= self.plot_every:
      plot_losses(self.workdir)
      self._last_plot_step = step
    return record

  def close(self) -> None:
    """Flushes TensorBoard and draws the final loss.png."""
    if not self.is_writer:
      return
    try:
      if self._tb is not None:
        tb, self._tb = self._tb, None
        tb.close()
    finally:
      plot_losses(self.workdir)
