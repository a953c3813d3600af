"""Linear evaluation end to end: evaluate_backbone's report files, the CLI's --embeddings refit."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax import evaluate
from brave_jax import saved_config
from brave_jax.eval import backbone
from brave_jax.eval import embeddings as embeddings_lib
from brave_jax.eval import linear
from brave_jax.eval import report
from brave_jax.eval import svm
import eval_test_utils


def _fake_eval_iterator(config, shards, mode):
  """Stands in for pipeline.make_eval_dataset: class k videos are brightness k/4, test has 2 crops."""
  rng = np.random.default_rng(0 if mode == 'train' else 1)
  crops = 1 if mode == 'train' else 2
  passes = config.eval.train_passes if mode == 'train' else 1
  videos = [(v, v % 3) for _ in range(passes) for v in range(12)]
  batch = {'video': [], 'label': [], 'video_index': []}
  for v, label in videos:
    for _ in range(crops):
      clip = label / 4 + 0.02 * rng.normal(size=(2, 8, 8, 3))
      batch['video'].append(clip.astype(np.float32))
      batch['label'].append(label)
      batch['video_index'].append(v)
    if len(batch['video']) >= config.eval.batch_size:
      yield {k: np.stack(x) for k, x in batch.items()}
      batch = {k: [] for k in batch}
  if batch['video']:
    yield {k: np.stack(x) for k, x in batch.items()}


def _fake_embed(video_BxTxHxWx3):
  mean_B = jnp.mean(video_BxTxHxWx3, axis=(1, 2, 3, 4))
  return jnp.stack([mean_B, mean_B ** 2, jnp.sin(5 * mean_B)], axis=1)


@pytest.fixture
def config(tiny_va_config):
  tiny_va_config.eval.batch_size = 5  # Odd: partial batches, padding over 2 devices.
  tiny_va_config.eval.train_passes = 2
  tiny_va_config.eval.svm_c = 1.0
  return tiny_va_config


def test_evaluate_backbone_writes_report(config, tmp_path, monkeypatch):
  monkeypatch.setattr(linear, 'eval_iterator', _fake_eval_iterator)
  names = ['zero', 'one', 'two']
  record = linear.evaluate_backbone(config, _fake_embed, 'fake-train', 'fake-test', str(tmp_path),
                                 class_names=names, checkpoint_step=60, save_embeddings=True)
  assert record['test'] == {'top1': 1.0, 'top5': 1.0}
  assert record['train']['top1'] == 1.0
  with open(tmp_path / 'eval.json') as f:
    written = json.load(f)
  assert written == record
  assert written['checkpoint_step'] == 60 and written['svm_c'] == 1.0
  assert written['feature_transform'] == 'standardize'  # The config's, as published.
  assert written['data']['num_train_clips'] == 24  # 12 videos x 2 passes.
  assert written['data']['num_test_videos'] == 12 and written['data']['num_train_videos'] == 12
  assert written['crops'] == {'temporal': 2, 'spatial': 1, 'short_side': 40, 'train_passes': 2}
  assert written['clip'] == {'frames': 4, 'step': 2, 'size': 32}
  assert [c['name'] for c in written['per_class']] == names
  assert written['config']['eval']['svm_c'] == 1.0
  assert os.path.getsize(tmp_path / 'confusion.png') > 1000
  assert os.path.isfile(tmp_path / 'embeddings.npz')
  print(report.format_table({'pretrained': record}))


def test_cli_refits_saved_embeddings(tmp_path):
  rng = np.random.default_rng(0)
  def split(n, crops):
    labels = np.repeat(np.arange(n) % 2, crops)
    return {'feats': (labels[:, None] * 3 + rng.normal(size=(len(labels), 4))).astype(np.float32),
            'labels': labels, 'video_index': np.repeat(np.arange(n), crops)}
  path = embeddings_lib.save_embeddings(
      str(tmp_path / 'emb.npz'), {'train': split(20, 1), 'test': split(6, 3)},
      metadata={'class_names': ['a', 'b'], 'checkpoint_step': 3})
  out = tmp_path / 'out'
  assert evaluate.main([f'--embeddings={path}', '--svm_c=auto', f'--output_dir={out}']) == 0
  with open(out / 'eval.json') as f:
    written = json.load(f)
  assert written['svm_c'] in [pytest.approx(c) for c in svm.C_GRID]
  assert written['test']['top1'] == 1.0 and written['checkpoint_step'] == 3
  assert [c['name'] for c in written['per_class']] == ['a', 'b']
  assert os.path.isfile(out / 'confusion.png')


def test_test_labels_missing_from_train_are_named(config, tmp_path, capsys):
  """A test class the SVM never saw is scored as misses, and said so (stderr + eval.json)."""
  rng = np.random.default_rng(0)
  def split(labels, crops):
    labels = np.repeat(np.asarray(labels), crops)
    return {'feats': (labels[:, None] * 3 + rng.normal(size=(len(labels), 4))).astype(np.float32),
            'labels': labels, 'video_index': np.repeat(np.arange(len(labels) // crops), crops)}
  splits = {'train': split([0, 1] * 10, 1), 'test': split([0, 1, 2, 2, 0, 1], 2)}
  record = linear.fit_and_report(config, splits, str(tmp_path), class_names=['a', 'b', 'c'])
  err = capsys.readouterr().err
  assert "warning: test label(s) 2 ('c') never occur in the train split; their 2 test video(s) " \
         'are scored as misses' in err
  assert record['data']['test_labels_missing_from_train'] == {'2': 2}
  assert json.load(open(tmp_path / 'eval.json'))['data']['test_labels_missing_from_train'] == {'2': 2}
  assert record['test']['top1'] == pytest.approx(4 / 6)  # The two 'c' videos count as misses.


def _cli_error(capsys, argv) -> str:
  """evaluate.main(argv) must exit 2 with one `error: ...` line and no traceback; returns it."""
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
  assert err.startswith('error: ')
  return err


def test_cli_refuses_two_model_sources_and_bad_c(tmp_path, capsys):
  assert 'exactly one' in _cli_error(
      capsys, ['--workdir=w', '--checkpoint=c.npy', f'--output_dir={tmp_path}'])
  assert '--svm_c' in _cli_error(
      capsys, ['--checkpoint=c.npy', '--svm_c=big', f'--output_dir={tmp_path}'])
  assert 'eval.svm_c' in _cli_error(
      capsys, ['--checkpoint=c.npy', '--svm_c=-1', f'--output_dir={tmp_path}'])


def test_cli_config_and_workdir_errors_are_one_line(tmp_path, capsys):
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  assert 'is a file, not a directory' in _cli_error(capsys, [f'--workdir={a_file}'])
  assert 'config.json not found' in _cli_error(capsys, [f'--workdir={tmp_path}'])
  assert "--config=nope.py: config file 'nope.py' not found" in _cli_error(
      capsys, ['--config=nope.py', '--checkpoint=c.npy', f'--output_dir={tmp_path}'])
  assert 'c.npy' in _cli_error(capsys, ['--checkpoint=c.npy', f'--output_dir={tmp_path}'])


def test_config_json_round_trip(config, tmp_path):
  """A workdir's config.json (as train.loop writes it) loads back with tuples and 'auto' intact."""
  config.eval.svm_c = 'auto'
  (tmp_path / 'config.json').write_text(config.to_json_best_effort(indent=2))
  loaded = saved_config.read(str(tmp_path / 'config.json'))
  assert loaded.data.broad_modalities == ('audio',)
  assert loaded.optimizer.lr_multipliers == (('.*predictor.*', 10.0),)
  assert loaded.eval.svm_c == 'auto'
  assert loaded.model.narrow_backbone.width_multiplier == 0.25
  config_base.validate(loaded)


# ----------------------------------------------------------------------------- real pipeline + model

@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
  """Tiny shards, a training-style workdir (config.json + one checkpoint) and a published .npy."""
  from brave_jax import published  # pylint: disable=g-import-not-at-top
  from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
  from brave_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  from brave_jax.train import loop  # pylint: disable=g-import-not-at-top
  from brave_jax.train import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('eval_tiny')
  config = config_base.load(str(os.path.join(os.path.dirname(__file__), '..', 'configs',
                                             'brave_rgb_audio.py')) + ':tiny')
  config.eval.update(num_temporal_crops=2, num_spatial_crops=1, train_passes=1, batch_size=8,
                     svm_c=1.0)
  shards = {'train': eval_test_utils.write_tiny_shards(root / 'shards', 'train', 3, seed=0),
            'test': eval_test_utils.write_tiny_shards(root / 'shards', 'test', 1, seed=1)}
  model = brave.build_model(config.model, config.data.broad_modalities, axis_name=None)
  params, state = eval_test_utils.random_variables(model, config)
  workdir = root / 'workdir'
  workdir.mkdir()
  saved_config.write(config, str(workdir))
  opt_state = optimizer_lib.make_optimizer(config).init(params)
  ckpt = checkpointing.Checkpointer(str(workdir / loop.CHECKPOINT_SUBDIR), keep=2, async_save=False)
  ckpt.save(step_lib.TrainState(np.int32(60), params, state, opt_state,
                                np.asarray(jax.random.PRNGKey(0))))
  ckpt.close()
  npy = published.save(str(root / 'published.npy'), params, state,
                       published.published_config(config))
  return dict(config=config, shards=shards, workdir=str(workdir), npy=npy, root=root,
              params=params, state=state)


def _run_cli(argv):
  assert evaluate.main(argv) == 0


def test_cli_workdir_on_tiny_shards(tiny_setup):
  out = tiny_setup['root'] / 'eval_workdir'
  _run_cli([f'--workdir={tiny_setup["workdir"]}', f'--train_shards={tiny_setup["shards"]["train"]}',
            f'--test_shards={tiny_setup["shards"]["test"]}', f'--output_dir={out}',
            '--temporal_crops=2', '--spatial_crops=1', '--train_passes=1', '--svm_c=1.0',
            '--save_embeddings'])
  with open(out / 'eval.json') as f:
    written = json.load(f)
  assert written['checkpoint_step'] == 60
  assert written['data']['num_train_clips'] == 9 and written['data']['num_test_videos'] == 3
  assert written['crops'] == {'temporal': 2, 'spatial': 1, 'short_side': 40, 'train_passes': 1}
  assert written['clip'] == {'frames': 4, 'step': 2, 'size': 32}
  for split in ('train', 'test'):
    for k in ('top1', 'top5'):
      assert 0.0 <= written[split][k] <= 1.0
  assert written['test']['top5'] == 1.0  # 3 classes.
  assert os.path.getsize(out / 'confusion.png') > 1000
  splits, _ = embeddings_lib.load_embeddings(str(out / 'embeddings.npz'))
  assert splits['test']['feats'].shape[0] == 6  # 3 videos x 2 temporal crops.
  tiny_setup['workdir_record'] = written


def test_cli_published_checkpoint_matches_workdir(tiny_setup):
  """The same weights through --checkpoint (published .npy) give the same numbers."""
  out = tiny_setup['root'] / 'eval_published'
  config_spec = os.path.join(os.path.dirname(__file__), '..', 'configs', 'brave_rgb_audio.py:tiny')
  _run_cli([f'--checkpoint={tiny_setup["npy"]}', f'--config={config_spec}',
            f'--train_shards={tiny_setup["shards"]["train"]}',
            f'--test_shards={tiny_setup["shards"]["test"]}', f'--output_dir={out}',
            '--temporal_crops=2', '--spatial_crops=1', '--train_passes=1', '--batch_size=8',
            '--svm_c=1.0'])
  with open(out / 'eval.json') as f:
    written = json.load(f)
  assert os.path.isfile(out / 'confusion.png')
  if 'workdir_record' in tiny_setup:
    for split in ('train', 'test'):
      assert written[split] == pytest.approx(tiny_setup['workdir_record'][split])


def test_evaluate_after_training_compares_random_init(tiny_setup, monkeypatch, tmp_path):
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  config = tiny_setup['config']
  config.data.train_shards = tiny_setup['shards']['train']
  config.data.test_shards = tiny_setup['shards']['test']
  config.eval.compare_random_init = True
  # The real random init compiles model.init and model.loss: tens of seconds on a busy CPU.
  monkeypatch.setattr(backbone, 'random_init',
                      lambda cfg: eval_test_utils.random_source(cfg, 1, kind='random_init'))
  monkeypatch.setattr(backbone, 'calibrate_batch_norm', lambda cfg, source, batches: source)
  ts = step_lib.TrainState(np.int32(60), tiny_setup['params'], tiny_setup['state'], None, None)
  replicated = step_lib.replicate(ts._replace(opt_state=(), rng=np.zeros(2, np.uint32)))
  results = linear.evaluate_after_training(config, str(tmp_path), replicated)
  assert set(results) == {'pretrained', 'random_init'}
  with open(tmp_path / 'results.json') as f:
    assert json.load(f) == results
  for tag in ('pretrained', 'random_init'):
    assert os.path.isfile(tmp_path / f'confusion_{tag}.png')
  assert results['pretrained']['checkpoint_step'] == 60


def test_cli_knn_protocol_on_tiny_shards(tiny_setup):
  out = tiny_setup['root'] / 'eval_knn'
  _run_cli(['--protocol=knn', f'--workdir={tiny_setup["workdir"]}',
            f'--train_shards={tiny_setup["shards"]["train"]}',
            f'--test_shards={tiny_setup["shards"]["test"]}', f'--output_dir={out}',
            '--temporal_crops=2', '--spatial_crops=1', '--train_passes=1', '--config.knn_monitor.k=3'])
  with open(out / 'knn.json') as f:
    written = json.load(f)
  assert written['protocol'] == 'knn' and written['k'] == 3 and written['checkpoint_step'] == 60
  assert written['num_bank_clips'] == 9 and written['num_test_videos'] == 3
  assert 0.0 <= written['top1'] <= 1.0 and written['top5'] == 1.0


def test_cli_refuses_unknown_config_fields_and_protocol_mixups(tmp_path, capsys):
  assert 'no field' in _cli_error(
      capsys, ['--checkpoint=c.npy', '--config.finetune.stepz=3', f'--output_dir={tmp_path}'])
  assert '--random_init' in _cli_error(
      capsys, ['--checkpoint=c.npy', '--random_init', f'--output_dir={tmp_path}'])
  assert 'both --audio_shards and --folds_csv' in _cli_error(
      capsys, ['--protocol=audio', '--random_init', '--audio_shards=x', f'--output_dir={tmp_path}'])
