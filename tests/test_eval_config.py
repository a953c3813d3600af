"""The evaluation sections of the config: defaults per variant and errors that name the field."""
import pytest

from brave_jax import config_base
import conftest


@pytest.mark.parametrize('field, value, match', [
    ('finetune.optimizer', 'lars', 'finetune.optimizer'),
    ('finetune.warmup_steps', 10_000, 'finetune.warmup_steps'),
    ('finetune.dropout_rate', 1.0, 'finetune.dropout_rate'),
    ('knn_monitor.every_steps', -1, 'knn_monitor.every_steps'),
    ('knn_monitor.k', 0, 'knn_monitor.k'),
    ('audio_eval.head', 'svm', 'audio_eval.head'),
    ('audio_eval.synthetic.snr_db', (10.0, 0.0), 'audio_eval.synthetic.snr_db'),
])
def test_bad_eval_fields_are_named(field, value, match):
  config = config_base.load(conftest.config_path('brave_rgb_audio', None))
  section, _, name = field.rpartition('.')
  node = config
  for part in section.split('.'):
    node = node[part]
  node[name] = value
  with pytest.raises(config_base.ConfigError, match=match):
    config_base.validate(config)


def test_knn_monitor_is_on_in_demo_only():
  for name in ('brave_rgb_audio', 'brave_rgb_rgb', 'brave_rgb_flow'):
    assert config_base.load(conftest.config_path(name, None)).knn_monitor.every_steps == 0
    assert config_base.load(conftest.config_path(name, 'tiny')).knn_monitor.every_steps == 0
    demo = config_base.load(conftest.config_path(name, 'demo'))
    assert demo.knn_monitor.every_steps == 100 and demo.knn_monitor.k == 20
    config_base.validate(demo)
