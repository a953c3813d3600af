"""Fine-tuning: optimizer (backbone multiplier, decay mask, schedule), loop's initial variables, end to end."""
import dataclasses
import json
import os

import chex
import jax
import numpy as np
import optax
import pytest

from brave_jax import config_base
from brave_jax import evaluate
from brave_jax import published
from brave_jax.eval import backbone
from brave_jax.eval import finetune
from brave_jax.models import classifier as classifier_lib
from brave_jax.train import loop
from brave_jax.train import step as step_lib
import eval_test_utils
import train_test_double


@pytest.fixture
def config(tiny_va_config):
  c = tiny_va_config
  c.eval.update(num_temporal_crops=2, num_spatial_crops=1, batch_size=8)
  c.finetune.update(num_steps=4, warmup_steps=1, checkpoint_every=2, log_every=2, batch_size=4)
  return c


def _params():
  return {'narrow_video_embedding/conv': {'w': np.ones((2, 2), np.float32),
                                          'b': np.ones((2,), np.float32)},
          'classifier': {'w': np.ones((2, 3), np.float32), 'b': np.ones((3,), np.float32)}}


def test_optimizer_scales_backbone_and_decays_weights_only(config):
  config.finetune.update(backbone_lr_multiplier=0.1, weight_decay=0.5, momentum=0.0,
                         nesterov=False, base_learning_rate=1.0, batch_size=64, warmup_steps=0)
  opt = finetune.make_optimizer(config)
  params = _params()
  zeros = jax.tree.map(np.zeros_like, params)
  updates, _ = opt.update(zeros, opt.init(params), params)
  lr = float(finetune.make_schedule(config)(0))
  assert lr == pytest.approx(1.0)  # Peak at batch 64 with no warm-up.
  # Zero gradients: only weight decay moves parameters, and never biases.
  np.testing.assert_allclose(updates['classifier']['w'], -lr * 0.5 * np.ones((2, 3)), rtol=1e-6)
  np.testing.assert_allclose(updates['narrow_video_embedding/conv']['w'],
                             -0.1 * lr * 0.5 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_allclose(updates['classifier']['b'], 0.0)


def test_schedule_warms_up_scales_with_batch_and_decays(config):
  config.finetune.update(base_learning_rate=0.1, batch_size=32, num_steps=100, warmup_steps=10)
  schedule = finetune.make_schedule(config)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(0.05)  # 0.1 at batch 64 -> 0.05 at 32.
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_batch_that_does_not_split_over_the_devices_is_refused_by_its_field(config):
  config.finetune.batch_size = 2 * jax.local_device_count() + 1
  with pytest.raises(config_base.ConfigError, match=r'^config\.finetune\.batch_size: global batch'):
    finetune.check_batch_splits(config)
  config.finetune.batch_size = 2 * jax.local_device_count()
  finetune.check_batch_splits(config)


def test_loop_initial_variables_replace_fresh_ones(config, tmp_path):
  """loop.train(initial_variables=...) starts from them; a mismatch in shape is refused by name."""
  settings = loop.Settings(num_steps=1, batch_size=4, log_every=1, checkpoint_every=1,
                           keep_checkpoints=2, plot_every=0, seed=0)
  model = train_test_double.build_test_double_model('i')
  make = train_test_double.make_batch_iterator_fn(4, jax.local_device_count())
  fresh_params, fresh_state = train_test_double.build_test_double_model(None).init(
      jax.random.PRNGKey(0), train_test_double.make_global_batch(0, 4))
  given = jax.tree.map(lambda x: np.full(x.shape, 0.25, x.dtype),
                       backbone.only_root((fresh_params, fresh_state), 'narrow_video_embedding'))
  frozen = optax.chain(optax.sgd(0.1), optax.scale(0.0))  # No update: the state shows the start.
  ts = loop.train(settings, str(tmp_path / 'ok'), config, make_batch_iterator=make, model=model,
                  optimizer=frozen, initial_variables=given)
  host = step_lib.unreplicate(ts)
  chex.assert_trees_all_equal(backbone.only_root(host.params, 'narrow_video_embedding'), given[0])
  assert not np.allclose(host.params['predictor']['w'], 0.25)  # Untouched: fresh init.
  bad = (jax.tree.map(lambda x: np.zeros(x.shape + (1,), x.dtype), given[0]), {})
  with pytest.raises(ValueError, match="narrow_video_embedding/.*has shape"):
    loop.train(settings, str(tmp_path / 'bad'), config, make_batch_iterator=make, model=model,
               optimizer=frozen, initial_variables=bad)


def test_classifier_names_match_pretraining_backbone(config):
  model = classifier_lib.build_classifier(config.model, 5, dropout_rate=0.5)
  video = np.zeros((2, 4, 32, 32, 3), np.float32)
  params, _ = jax.eval_shape(model.init, jax.random.PRNGKey(0), {'video': video})
  pretrained = backbone.only_root(
      jax.eval_shape(backbone.build_model(config).init, jax.random.PRNGKey(0),
                     backbone.init_batch(config))[0], 'narrow_video_embedding')
  assert set(params) - set(pretrained) == {'classifier'}
  assert params['classifier']['w'].shape[-1] == 5


def _tiny_data(tmp_path):
  root = tmp_path / 'data'
  return (eval_test_utils.write_tiny_shards(root, 'train', 3, seed=0),
          eval_test_utils.write_tiny_shards(root, 'test', 1, seed=1))


def test_finetune_end_to_end_keeps_a_frozen_backbone(config, tmp_path, monkeypatch):
  """The real model, 2 steps, backbone multiplier 0: the backbone is the given one, the head moved."""
  train, test = _tiny_data(tmp_path)
  config.finetune.update(num_steps=2, backbone_lr_multiplier=0.0)
  source = eval_test_utils.random_source(config)
  captured = {}
  real_train = loop.train
  monkeypatch.setattr(loop, 'train',
                      lambda *a, **k: captured.setdefault('ts', real_train(*a, **k)))
  out = str(tmp_path / 'ft')
  record = finetune.run(config, source, out, train_source=train, test_source=test,
                        class_names=['a', 'b', 'c'])
  host = step_lib.unreplicate(captured['ts'])
  chex.assert_trees_all_equal(backbone.only_root(host.params, 'narrow_video_embedding'),
                              source.variables('narrow_video_embedding')[0])
  assert np.abs(host.params['classifier']['w']).max() > 0  # Zero-initialised, then trained.
  with open(os.path.join(out, 'eval.json')) as f:
    written = json.load(f)
  assert written == json.loads(json.dumps(record))
  assert written['protocol'] == 'finetune' and written['initialisation'] == 'workdir'
  assert written['finetune_steps'] == 2 and written['data']['num_test_videos'] == 3
  assert written['crops'] == {'temporal': 2, 'spatial': 1, 'short_side': 40, 'train_passes': 1}
  assert 0.0 <= written['test']['top1'] <= 1.0 and written['test']['top5'] == 1.0
  assert [c['name'] for c in written['per_class']] == ['a', 'b', 'c']
  for name in ('confusion.png', 'loss.png', 'config.json', 'metrics.jsonl'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name


def test_finetune_resumes_through_the_cli(config, tmp_path, monkeypatch, capsys):
  """Stopped at step 2, the run resumes to 4 from `--protocol=finetune`; classes are counted."""
  monkeypatch.setattr(classifier_lib, 'build_classifier', eval_test_utils.tiny_classifier)
  train, test = _tiny_data(tmp_path)
  out = str(tmp_path / 'ft')
  source = eval_test_utils.random_source(config)
  npy = published.save(str(tmp_path / 'model.npy'), source.params, source.state,
                       published.published_config(config))
  # The first run trains the checkpoint's architecture (described as the published file
  # describes it), so the workdir's config is the resumed run's and the CLI may resume it.
  fresh = dataclasses.replace(eval_test_utils.random_source(config), kind='random_init',
                              model_config=backbone.from_published(npy).model_config)
  assert finetune.run(config, fresh, out, train_source=train, test_source=test,
                      class_names=['a', 'b', 'c'], stop_at_step=2) == {}
  spec = os.path.join(os.path.dirname(__file__), '..', 'configs', 'brave_rgb_audio.py:tiny')
  assert evaluate.main(['--protocol=finetune', f'--checkpoint={npy}', f'--config={spec}',
                        f'--train_shards={train}', f'--test_shards={test}', f'--output_dir={out}',
                        '--temporal_crops=2', '--spatial_crops=1', '--batch_size=8',
                        '--config.finetune.num_steps=4', '--config.finetune.warmup_steps=1',
                        '--config.finetune.checkpoint_every=2', '--config.finetune.log_every=2',
                        '--config.finetune.batch_size=4']) == 0
  assert 'Resumed from' in capsys.readouterr().out
  with open(os.path.join(out, 'eval.json')) as f:
    written = json.load(f)
  assert written['initialisation'] == 'published' and written['finetune_steps'] == 4
  assert [c['name'] for c in written['per_class']] == ['0', '1', '2']  # No class list given.
  assert [s for s, _ in written['loss_curve']] == [2, 4]


def test_finetune_augments_on_the_device_as_on_the_host(config, tmp_path, monkeypatch):
  """data.augment_on='device': the fine-tuning step flips, jitters and greys the shipped clips
  (no blur, as the linear protocol's), and trains to the host run's parameters to rounding."""
  monkeypatch.setattr(classifier_lib, 'build_classifier', eval_test_utils.tiny_classifier)
  train, test = _tiny_data(tmp_path)
  config.finetune.update(num_steps=2)
  source = dataclasses.replace(eval_test_utils.random_source(config), kind='random_init')
  runs = {}
  real_train = loop.train

  def recording_train(*args, **kwargs):
    ts = real_train(*args, **kwargs)
    runs[config.data.augment_on] = (kwargs['prepare_batch'], step_lib.unreplicate(ts.params))
    return ts
  monkeypatch.setattr(loop, 'train', recording_train)
  for augment_on in ('host', 'device'):
    config.data.augment_on = augment_on
    finetune.run(config, source, str(tmp_path / augment_on), train_source=train,
                 test_source=test, class_names=['a', 'b', 'c'])
  (host_prepare, host_params), (device_prepare, device_params) = runs['host'], runs['device']
  assert host_prepare is None and callable(device_prepare)
  chex.assert_trees_all_close(device_params, host_params, rtol=1e-4, atol=1e-6)
  assert np.abs(host_params['classifier']['w']).max() > 1e-3  # Control: the head did train.
