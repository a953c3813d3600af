"""Joins the processes of a multi-host run into one JAX runtime (jax.distributed), once, up front.

JAX's multi-controller model: the same program runs on every host, each
process feeds its own local devices, and the collectives inside the pmapped
step (`pmean` over axis 'i') span every device of every process. This module
only decides *whether and how* to call `jax.distributed.initialize`:

- explicit: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`
  (all three, or none), e.g. GPU hosts or CPU processes;
- automatic: on a multi-host Cloud TPU slice (GKE/queued-resource env vars name
  more than one worker, or, on a TPU VM, its metadata server does), or when
  BRAVE_JAX_DISTRIBUTED=auto, `initialize()` with no arguments, which lets JAX
  read the coordinator and ranks from the TPU/Slurm/Open MPI environment;
- otherwise nothing: a single process, as before.

It must run before anything touches a JAX backend (no `jax.devices()` first).

When a process dies: the survivors' next collective fails at once when the
dead process's connections close (a killed process on a live host; measured:
the survivor exits 1 s after a kill -9, mid-step or mid-checkpoint), and the
training loop turns that into one PeerLostError line, exit status 1.
Otherwise (a host gone silently, or a survivor waiting outside any
collective) JAX's coordination service declares the process dead after
`heartbeat_timeout_s` without a heartbeat (default 100 s, --heartbeat_timeout_s)
and aborts every other process with its own message ("Terminating process
because the JAX distributed service detected fatal errors. This most likely
indicates that another task died"). So no process outlives a dead peer by more
than that bound. (JAX's client takes no Python callback for this: the one it
accepts cannot be called from Python, so its message is not ours.) A process
that stops on an error exits at once (`exit_now_if_multiprocess`) rather than
waiting at JAX's shutdown barrier for peers that are still training; their
next collective then fails too.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Mapping

import jax

from brave_jax import errors
from brave_jax import log

_LOG = log.get_logger(__name__)

CPU_COLLECTIVES_ENV = 'BRAVE_CPU_COLLECTIVES'  # e.g. 'gloo': collectives between CPU processes.
CPU_COLLECTIVES = ('gloo', 'mpi')
DISTRIBUTED_ENV = 'BRAVE_JAX_DISTRIBUTED'  # 'auto': always initialize(); 'off': never auto-detect.
# Environment variables a Cloud TPU VM/GKE worker gets; comma lists name every worker of the slice.
_TPU_WORKER_LISTS = ('TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES')
_TPU_PROCESS_COUNT = ('CLOUD_TPU_TASK_COUNT', 'MEGASCALE_NUM_SLICES')
DEFAULT_HEARTBEAT_TIMEOUT_S = 100  # jax.distributed's own default.


class DistributedError(errors.UsageError):
  """The multi-host flags or environment cannot start a distributed run."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """How this process joins the run: explicit ranks, TPU auto-detection, or a single process."""
  mode: str  # 'explicit' | 'tpu_auto' | 'single'
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def _count(value: str | None) -> int:
  return len([v for v in (value or '').split(',') if v.strip()])


def multi_host_tpu(env: Mapping[str, str]) -> bool:
  """True when the TPU runtime's environment says this slice has more than one worker."""
  if any(_count(env.get(k)) > 1 for k in _TPU_WORKER_LISTS):
    return True
  for key in _TPU_PROCESS_COUNT:
    try:
      if int(env.get(key, '1')) > 1:
        return True
    except ValueError:
      pass
  return False


def _tpu_vm_process_count() -> int:
  """Workers of this Cloud TPU VM slice per its metadata server; 1 off a TPU VM (no network then)."""
  try:  # JAX's own detector (private module): only it knows the metadata keys of each version.
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
    from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
    if not cloud_tpu_init.running_in_cloud_tpu_vm:
      return 1
    if cloud_tpu_cluster.GceTpuCluster.is_env_present():
      return int(cloud_tpu_cluster.GceTpuCluster.get_process_count())
  except Exception:  # pylint: disable=broad-except
    pass
  return 1


def resolve(coordinator_address: str | None, num_processes: int | None,
            process_id: int | None, env: Mapping[str, str] | None = None) -> Cluster:
  """Checks the three flags (all or none) and picks explicit / TPU-auto / single-process."""
  env = os.environ if env is None else env
  given = {'--coordinator_address': coordinator_address, '--num_processes': num_processes,
           '--process_id': process_id}
  missing = [k for k, v in given.items() if v is None or v == '']
  if len(missing) == len(given):
    choice = env.get(DISTRIBUTED_ENV, '').lower()
    if choice == 'auto' or (choice != 'off' and (multi_host_tpu(env) or
                                                 (env is os.environ and _tpu_vm_process_count() > 1))):
      return Cluster('tpu_auto')
    return Cluster('single')
  if missing:
    raise DistributedError(
        f'multi-host flags must be given together: missing {", ".join(missing)} (got '
        f'{", ".join(f"{k}={v}" for k, v in given.items() if v not in (None, ""))}). Pass all '
        'three, e.g. --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0, or '
        'none for a single process.')
  host, sep, port = str(coordinator_address).rpartition(':')
  if not sep or not host or not port.isdigit():
    raise DistributedError(f'--coordinator_address={coordinator_address!r} must be HOST:PORT '
                           '(the address of process 0, reachable from every process)')
  if int(num_processes) < 1 or not 0 <= int(process_id) < int(num_processes):
    raise DistributedError(f'--process_id={process_id} must be in [0, --num_processes='
                           f'{num_processes})')
  return Cluster('explicit', str(coordinator_address), int(num_processes), int(process_id))


def set_cpu_collectives(implementation: str | None) -> None:
  """Lets CPU processes run cross-process collectives (XLA's CPU client has none by default)."""
  implementation = implementation or os.environ.get(CPU_COLLECTIVES_ENV) or None
  if implementation is None:
    return
  if implementation not in CPU_COLLECTIVES:
    raise DistributedError(f'--cpu_collectives={implementation!r}: choose from {CPU_COLLECTIVES}')
  jax.config.update('jax_cpu_collectives_implementation', implementation)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, cpu_collectives: str | None = None,
               env: Mapping[str, str] | None = None,
               heartbeat_timeout_s: int | None = None) -> Cluster:
  """Calls jax.distributed.initialize as the flags/environment ask; returns what it did.

  heartbeat_timeout_s bounds how long the processes outlive a dead peer
  (default DEFAULT_HEARTBEAT_TIMEOUT_S).
  """
  cluster = resolve(coordinator_address, num_processes, process_id, env)
  timeout = DEFAULT_HEARTBEAT_TIMEOUT_S if heartbeat_timeout_s is None else int(heartbeat_timeout_s)
  if timeout < 1:
    raise DistributedError(f'--heartbeat_timeout_s={heartbeat_timeout_s}: must be at least 1 second')
  if cluster.mode == 'single':
    set_cpu_collectives(cpu_collectives)  # Harmless alone; kept so the flag is always checked.
    return cluster
  if jax.distributed.is_initialized():
    return cluster
  set_cpu_collectives(cpu_collectives)
  if cluster.mode == 'explicit':
    jax.distributed.initialize(cluster.coordinator_address, cluster.num_processes,
                               cluster.process_id, heartbeat_timeout_seconds=timeout)
  else:  # JAX reads coordinator and ranks from the TPU environment.
    jax.distributed.initialize(heartbeat_timeout_seconds=timeout)
  _LOG.info(f'jax.distributed: process {jax.process_index()}/{jax.process_count()}, '
            f'{jax.local_device_count()} local of {jax.device_count()} devices.')
  return cluster


def is_multiprocess() -> bool:
  """True in a jax.distributed run of more than one process."""
  return jax.distributed.is_initialized() and jax.process_count() > 1


def exit_now_if_multiprocess(code: int) -> None:
  """In a multi-process run, exits at once (output flushed) instead of at JAX's shutdown barrier.

  That barrier waits for every peer; a peer still training would only notice
  this process is gone at the heartbeat timeout and then abort with a C++
  fatal log burying the one-line error printed just before.
  """
  if not is_multiprocess():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access
