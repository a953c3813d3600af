"""The config on the command line (brave_jax/cli.py) and picking evaluation protocols by name
(brave_jax/eval/protocols.py): one parser and one set of messages for every entry point."""
import os

import pytest

from brave_jax import cli
from brave_jax import config_base
from brave_jax import errors
from brave_jax import evaluate
from brave_jax.eval import knn
from brave_jax.eval import linear
from brave_jax.eval import protocols


def test_overrides_are_split_from_the_other_flags_in_every_spelling():
  overrides, rest = cli.split_overrides(
      ['--workdir=w', '--config.training.num_steps=5', '--config.eval.num_frames', '8',
       '--config.eval.compare_random_init', '--topology=v5e:2x2', '--', '--config.not.this=1'])
  assert overrides == [('training.num_steps', '5'), ('eval.num_frames', '8'),
                       ('eval.compare_random_init', None)]
  assert rest == ['--workdir=w', '--topology=v5e:2x2', '--', '--config.not.this=1']


def test_values_are_read_as_the_field_type():
  config = config_base.base_config()
  cli.apply_overrides(config, [
      ('training.num_steps', '7'), ('optimizer.base_learning_rate', '2'),
      ('eval.compare_random_init', 'True'), ('data.broad_modalities', "('audio',)"),
      ('data.train_shards', '123'), ('eval.svm_c', 'auto'), ('knn_monitor.temperature', '1')])
  assert config.training.num_steps == 7
  assert config.optimizer.base_learning_rate == 2.0
  assert isinstance(config.optimizer.base_learning_rate, float)
  assert config.eval.compare_random_init is True
  assert config.data.broad_modalities == ('audio',)
  assert config.data.train_shards == '123'  # A string field keeps digits as text.
  assert config.eval.svm_c == 'auto'
  cli.apply_overrides(config, [('eval.compare_random_init', None)])  # A bare boolean flag.
  assert config.eval.compare_random_init is True
  cli.apply_overrides(config, [('eval.svm_c', '0.5')])
  assert config.eval.svm_c == 0.5


@pytest.mark.parametrize('override, message', [
    (('training.num_stepz', '3'), "--config.training.num_stepz: the config has no field "
                                  "'training.num_stepz' (did you mean 'num_steps'?)"),
    (('trainin.num_steps', '3'), "no field 'trainin.num_steps' (did you mean 'training'?)"),
    (('training.num_steps', 'abc'), '--config.training.num_steps=abc: invalid literal for int()'),
    (('eval.compare_random_init', 'maybe'), 'expected true or false'),
    (('training', '3'), 'is a section, not a field'),
    (('training.num_steps', None), '--config.training.num_steps needs a value'),
])
def test_bad_overrides_are_one_usage_error(override, message):
  with pytest.raises(errors.UsageError) as info:
    cli.apply_overrides(config_base.base_config(), [override])
  assert message in str(info.value)


def test_resolve_loads_validates_and_locks(tmp_path):
  config = cli.resolve('configs/brave_rgb_audio.py:tiny', [('training.num_steps', '9')], lock=True)
  assert config.training.num_steps == 9
  with pytest.raises(AttributeError):
    config.training.new_field = 1
  with pytest.raises(errors.UsageError, match="unknown config variant 'huge'"):
    cli.resolve('configs/brave_rgb_audio.py:huge', [])
  with pytest.raises(errors.UsageError, match="config file 'nope.py' not found"):
    cli.resolve('nope.py', [])
  with pytest.raises(errors.UsageError, match='training.batch_size: must be a positive'):
    cli.resolve('configs/brave_rgb_audio.py:tiny', [('training.batch_size', '0')])
  with pytest.raises(errors.UsageError, match='--config is required'):
    cli.resolve(None, [])


def test_evaluate_reads_overrides_through_the_same_parser(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    evaluate.main(['--checkpoint=c.npy', '--config.training.num_stepz=3',
                   f'--output_dir={tmp_path}'])
  assert info.value.code == errors.EXIT_USAGE
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: --config.training.num_stepz: the config has no field')
  assert "(did you mean 'num_steps'?)" in err
  with pytest.raises(SystemExit) as info:  # argparse's own mistakes are one line too.
    evaluate.main(['--protocol=nope'])
  assert info.value.code == errors.EXIT_USAGE
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: argument --protocol') and len(err.splitlines()) == 1


def test_protocols_are_modules_with_run_request():
  for name in protocols.NAMES:
    assert callable(protocols.module(name).run_request)
  with pytest.raises(errors.UsageError, match="unknown evaluation protocol 'svm'"):
    protocols.module('svm')
  config = config_base.base_config()
  config.eval.protocols = ('linear', 'knnn')
  with pytest.raises(errors.UsageError, match=r"eval.protocols: unknown protocol\(s\) \['knnn'\]"):
    config_base.validate(config)


def test_after_training_runs_each_listed_protocol_where_it_writes(tmp_path, monkeypatch):
  calls = []

  def fake(name):
    def run_request(config, request, output_dir):
      calls.append((name, request.train_state, output_dir))
      return {'protocol': name}
    return run_request
  monkeypatch.setattr(linear, 'run_request', fake('linear'))
  monkeypatch.setattr(knn, 'run_request', fake('knn'))
  config = config_base.base_config()
  assert config.eval.protocols == ('linear',)  # The default: what ran before protocols were listed.
  config.eval.protocols = ('linear', 'knn')
  records = protocols.after_training(config, str(tmp_path), 'state')
  assert records == {'linear': {'protocol': 'linear'}, 'knn': {'protocol': 'knn'}}
  assert calls == [('linear', 'state', str(tmp_path)),
                   ('knn', 'state', os.path.join(str(tmp_path), 'knn'))]
