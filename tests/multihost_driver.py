"""One process of a multi-process test run (started by tests/test_multihost.py, not by pytest).

--mode=train: brave_jax.main's own path (distributed.initialize from the same flags,
  main.run with main.make_batch_iterator_fn), recording what this process saw.
--mode=step: one pmapped update of the test double on this process's slice of a fixed
  global batch, to compare device/process layouts.
Each process writes <dump_dir>/<mode>_p<process>_s<start step>.json (+ .npz for step).
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from brave_jax import cli
from brave_jax import log
from brave_jax import main as brave_main
from brave_jax.train import distributed
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_test_double  # pylint: disable=g-import-not-at-top,wrong-import-position

digest = train_test_double.tree_digest

_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'step'], 'What this process runs.')
_DUMP_DIR = flags.DEFINE_string('dump_dir', None, 'Where each process writes what it saw.')


def _dump(name: str, record: dict) -> None:
  path = os.path.join(_DUMP_DIR.value, f'{name}_p{jax.process_index()}.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(record, f)
  os.replace(path + '.tmp', path)


def run_train(config, workdir: str) -> None:
  """main.run, with the batch iterator wrapped to record this process's first batch."""
  seen = {}
  make = brave_main.make_batch_iterator_fn(config)

  def recording(start_step):
    for i, batch in enumerate(make(start_step)):
      if i == 0:
        seen.update(start_step=start_step, first_labels=np.asarray(batch['label']).ravel().tolist(),
                    first_batch_digest=digest(batch))
      yield batch

  brave_main.make_batch_iterator_fn = lambda _: recording
  ts = brave_main.run(config, workdir)
  host = step_lib.unreplicate(ts)
  _dump(f"train_s{seen['start_step']}", dict(
      seen, process_index=jax.process_index(), process_count=jax.process_count(),
      final_step=int(host.step), params_digest=digest(host.params),
      state_digest=digest(host.state), opt_state_digest=digest(host.opt_state)))


def run_step(config) -> None:
  """One update of the test double on this process's contiguous slice of global batch 8."""
  n, p = jax.process_count(), jax.process_index()
  global_batch = train_test_double.make_global_batch(0, config.training.batch_size, seed=0)
  per_host = config.training.batch_size // n
  mine = jax.tree.map(lambda x: x[p * per_host:(p + 1) * per_host], global_batch)
  batch = step_lib.shard_batch(mine, jax.local_device_count())
  model = train_test_double.build_test_double_model('i')
  optimizer = optimizer_lib.make_optimizer(config)
  ts = step_lib.make_init(model, optimizer)(jax.random.PRNGKey(config.seed), batch)
  update = step_lib.make_pmapped_update(model, optimizer, 'i')
  ts, metrics = update(ts, batch)
  host = step_lib.unreplicate(ts)
  leaves = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path((host.params, host.state))[0]}
  name = f'step_{n}x{jax.local_device_count()}'
  np.savez(os.path.join(_DUMP_DIR.value, f'{name}_p{p}.npz'), **leaves)
  _dump(name, {k: float(v) for k, v in step_lib.unreplicate(metrics).items()})


def main(argv):
  del argv
  log.configure_cli()  # As brave_jax.main: progress lines and one-line errors in the log.
  start = time.time()
  distributed.initialize(brave_main._COORDINATOR.value, brave_main._NUM_PROCESSES.value,  # pylint: disable=protected-access
                         brave_main._PROCESS_ID.value, brave_main._CPU_COLLECTIVES.value)  # pylint: disable=protected-access
  config = brave_main._PARSED.config  # pylint: disable=protected-access
  if _MODE.value == 'train':
    run_train(config, brave_main._WORKDIR.value)  # pylint: disable=protected-access
  else:
    run_step(config)
  print(f'driver done in {time.time() - start:.1f} s', flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'dump_dir'])
  app.run(main, flags_parser=cli.absl_flags_parser(brave_main._PARSED))  # pylint: disable=protected-access
