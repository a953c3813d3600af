"""One training process for tests/test_resume_data.py (started, and killed, by the test).

Runs brave_jax's own training path (main.make_batch_iterator_fn: the real
shard index, order, decoding and augmentation; train.pretrain.train with its
checkpoints) and records, per step, a digest of the batch it was fed, and at
the end digests of the final parameters. --model=double swaps the BraVe model
for the test double (same loop, seconds to compile) so the kill test fits the
suite's time; --model=brave runs the real :tiny model.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags

from brave_jax import cli
from brave_jax import log
from brave_jax import main as brave_main
from brave_jax.train import pretrain
from brave_jax.train import step as step_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_test_double  # pylint: disable=g-import-not-at-top,wrong-import-position

digest = train_test_double.tree_digest

_MODEL = flags.DEFINE_enum('model', 'double', ['double', 'brave'], 'Model to train.')
_STEP_DELAY = flags.DEFINE_float('step_delay', 0.0, 'Seconds to wait before feeding each batch '
                                 '(widens the window for a kill; does not change the data).')


def main(argv):
  del argv
  log.configure_cli()  # As brave_jax.main: the progress lines (and 'Resumed from') in the log.
  config = brave_main._PARSED.config  # pylint: disable=protected-access
  workdir = brave_main._WORKDIR.value  # pylint: disable=protected-access
  make = brave_main.make_batch_iterator_fn(config)
  log_path = os.path.join(workdir, 'batches.jsonl')
  os.makedirs(workdir, exist_ok=True)

  def recording(start_step):
    for step, batch in enumerate(make(start_step), start_step):
      time.sleep(_STEP_DELAY.value)
      with open(log_path, 'a') as f:
        f.write(json.dumps({'step': step, 'batch': digest(batch)}) + '\n')
      yield batch

  model = None
  if _MODEL.value == 'double':
    model = train_test_double.build_test_double_model('i')
  host = step_lib.unreplicate(pretrain.train(config, workdir, recording, model=model))
  with open(os.path.join(workdir, 'final.json'), 'w') as f:
    json.dump({'step': int(host.step), 'params': digest(host.params),
               'state': digest(host.state), 'opt_state': digest(host.opt_state)}, f)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.absl_flags_parser(brave_main._PARSED))  # pylint: disable=protected-access
