"""Batches moved to the devices ahead of the step that uses them, so the device rarely waits."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator

import jax

from brave_jax.train import step as step_lib

PyTree = Any


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
