"""Trains BraVe: python -m brave_jax.main --config=configs/brave_rgb_audio.py:demo [--workdir=W].

Flags: --config=configs/<file>.py[:tiny|demo], overrides like --config.training.num_steps=100
(read by brave_jax/cli.py, as in brave_jax.evaluate and brave_jax.plan), --workdir (default ./workdirs/<config file>[_<variant>]). Re-running with the same
workdir resumes from its latest checkpoint.

Multi-host: every process runs this same command plus --coordinator_address=HOST:PORT
--num_processes=N --process_id=I (on a multi-host TPU slice these are found automatically);
add --cpu_collectives=gloo for CPU processes. See train/distributed.py.

A config problem (missing file, unknown field, bad value) is printed as one line,
`error: ...`, with exit status 2, before anything starts; a run stopped by a
fault (full disk, failed checkpoint save, lost process, another config's
workdir) prints one line saying how to go on, with exit status 1.
"""
import os
import traceback
from typing import Iterator

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections

from brave_jax import cli
from brave_jax import config_base
from brave_jax import errors
from brave_jax import log
from brave_jax import tf_startup

_LOG = log.get_logger(__name__)

cli.define_config_flag()
_PARSED = cli.ParsedConfig()  # --config and its --config.* overrides, read before main().
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, metrics and plots; default '
                               './workdirs/<config name>.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 '
                                   '(multi-host; with --num_processes and --process_id).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run (multi-host).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, in [0, num_processes).')
_CPU_COLLECTIVES = flags.DEFINE_enum('cpu_collectives', None, ['gloo', 'mpi'],
                                     'Cross-process collectives for CPU devices (or env '
                                     'BRAVE_CPU_COLLECTIVES).')
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout_s', None, 'Multi-host: seconds without a heartbeat after which a process '
    'counts as dead and the others stop (default train/distributed.py DEFAULT_HEARTBEAT_TIMEOUT_S).')


def default_workdir(config_spec: str) -> str:
  """./workdirs/brave_rgb_audio_tiny for --config=configs/brave_rgb_audio.py:tiny."""
  path, _, variant = config_spec.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('workdirs', f'{name}_{variant}' if variant else name)


def train_shards(config: ml_collections.ConfigDict) -> str | list[str]:
  """config.data.train_shards, or the embedded synthetic set (generated once) when empty."""
  if config.data.train_shards:
    return config.data.train_shards
  from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  with_flow = 'flow' in config.data.broad_modalities
  return synthetic.ensure_dataset(config.data.synthetic, with_flow=with_flow)['train']


def make_batch_iterator_fn(config: ml_collections.ConfigDict):
  """make_batch_iterator(start_step) over this host's shards, seeded by (seed, process, step)."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.limit_tf_op_threads(config.data.tf_intra_op_threads)  # Before TF's first op.
  shards = train_shards(config)

  def make(start_step: int) -> Iterator:
    return pipeline.make_train_dataset(
        config, shards, process_index=jax.process_index(), process_count=jax.process_count(),
        num_local_devices=jax.local_device_count(), start_step=start_step)

  return make


def run(config: ml_collections.ConfigDict, workdir: str):
  """Trains (resuming from workdir), then evaluates if the config asks; returns the TrainState."""
  from brave_jax.eval import knn  # pylint: disable=g-import-not-at-top
  from brave_jax.train import loop  # pylint: disable=g-import-not-at-top
  from brave_jax.train import pretrain  # pylint: disable=g-import-not-at-top
  config_base.validate(config, jax.process_count(), jax.local_device_count())
  loop.check_workdir(config, workdir)  # Before the (maybe minutes-long) synthetic data generation.
  tf_startup.import_tensorflow()  # Its start-up banners once, before the data code imports it.
  train_state = pretrain.train(config, workdir, make_batch_iterator_fn(config),
                               hooks=knn.monitor_hooks(config, workdir))
  if config.eval.run_after_training:
    from brave_jax.eval import protocols  # pylint: disable=g-import-not-at-top
    protocols.after_training(config, workdir, train_state)
  return train_state


def main(argv):
  del argv
  log.configure_cli()  # brave_jax's progress and results: plain lines on stdout.
  logging.set_verbosity(logging.WARNING)  # absl's (and Orbax's) INFO lines are noise here.
  from brave_jax.train import distributed  # pylint: disable=g-import-not-at-top
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           _CPU_COLLECTIVES.value,
                           heartbeat_timeout_s=_HEARTBEAT_TIMEOUT.value)  # Before any device use.
    config_spec = _PARSED.spec
    workdir = _WORKDIR.value or default_workdir(config_spec)
    if jax.process_index() == 0:  # Say something at once: the first step is minutes away.
      _LOG.info(f'Training {config_spec} in {workdir}: '
                'loading TensorFlow and the data, then compiling the model...')
    run(_PARSED.config, workdir)
  except errors.RunError as error:
    errors.print_error(error)
    distributed.exit_now_if_multiprocess(error.exit_code)
    raise SystemExit(error.exit_code) from None
  except Exception:  # A bug: keep its traceback, but don't wait at the shutdown barrier either.
    if distributed.is_multiprocess():
      traceback.print_exc()
      distributed.exit_now_if_multiprocess(errors.EXIT_RUN_ERROR)
    raise


if __name__ == '__main__':
  app.run(main, flags_parser=cli.absl_flags_parser(_PARSED))
