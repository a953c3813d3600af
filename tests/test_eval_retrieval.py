"""Audio<->video retrieval (brave_jax/eval/retrieval.py): the ranking maths, and the CLI on clips
cut by the converter from tiny generated videos."""
import json
import os

import jax
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax import evaluate
from brave_jax import saved_config
from brave_jax.data import convert
from brave_jax.eval import protocols
from brave_jax.eval import retrieval

import eval_test_utils
import media_writers


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ranks_count_ties_against_the_query_and_metrics_follow():
  scores = np.array([[0.9, 0.1, 0.2],   # Partner first.
                     [0.5, 0.4, 0.6],   # Partner third.
                     [0.3, 0.3, 0.3]])  # All tied: partner counted last.
  ranks = retrieval.true_partner_ranks(scores)
  assert ranks.tolist() == [1, 3, 3]
  m = retrieval.rank_metrics(ranks, ks=(1, 2))
  assert m == {'R@1': pytest.approx(1 / 3), 'R@2': pytest.approx(1 / 3), 'median_rank': 3.0,
               'mean_rank': pytest.approx(7 / 3)}
  assert retrieval.chance_metrics(4, ks=(1, 5)) == {'R@1': 0.25, 'R@5': 1.0, 'median_rank': 2.5,
                                                    'mean_rank': 2.5}
  with pytest.raises(retrieval.RetrievalError, match='NaN'):
    retrieval.true_partner_ranks(np.full((2, 2), np.nan))
  with pytest.raises(retrieval.RetrievalError, match='square'):
    retrieval.true_partner_ranks(np.zeros((2, 3)))


def test_headline_score_is_the_two_loss_pairings():
  """Each view's prediction matches the other's projection (what the loss trains), while the
  projections alone do not line up: 'both' and each loss term retrieve every partner first,
  'projections' does not."""
  rng = np.random.default_rng(0)
  n, k = 12, 16
  z_narrow, z_audio = _unit(rng.normal(size=(n, k))), _unit(rng.normal(size=(n, k)))
  emb = {'z_narrow': z_narrow, 'h_narrow': z_audio, 'z_audio': z_audio, 'h_audio': z_narrow}
  sims = retrieval.similarities(emb)
  np.testing.assert_allclose(sims['both'], z_audio @ z_audio.T + z_narrow @ z_narrow.T, atol=1e-6)
  result = retrieval.evaluate_embeddings(emb)
  for name in ('both', 'narrow_predicts_audio', 'audio_predicts_narrow'):
    for direction in retrieval.DIRECTIONS:
      assert result[name][direction]['R@1'] == 1.0 and result[name][direction]['median_rank'] == 1
  assert result['projections']['video_to_audio']['R@1'] < 0.5


@pytest.fixture(scope='module')
def clip_setup(tmp_path_factory):
  """Two 4 s videos cut into 1.6 s clips (the converter), and a tiny V/A workdir checkpoint."""
  from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
  from brave_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  from brave_jax.train import loop  # pylint: disable=g-import-not-at-top
  from brave_jax.train import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('retrieval')
  rng = np.random.default_rng(0)
  (root / 'videos').mkdir()
  for v, (level, pitch) in enumerate([(60, 300.0), (190, 900.0)]):
    frames = np.clip(level + 30 * rng.normal(size=(100, 40, 48, 3)), 0, 255).astype(np.uint8)
    t = np.arange(4 * 48000) / 48000
    wave = (0.4 * np.sin(2 * np.pi * pitch * (1 + 0.1 * t) * t)).astype(np.float32)
    media_writers.write_test_video(str(root / 'videos' / f'v{v}.mp4'), frames, audio=wave)
  summary = convert.convert(str(root / 'videos'), str(root / 'clips'), prefix='test',
                            short_side=40, clip_seconds=1.6, progress=False)
  assert summary.clips_per_source == {'v0.mp4': 2, 'v1.mp4': 2}
  config = config_base.load(os.path.join(os.path.dirname(__file__), '..', 'configs',
                                         'brave_rgb_audio.py') + ':tiny')
  config.retrieval.update(batch_size=4, num_spatial_crops=2)
  model = brave.build_model(config.model, config.data.broad_modalities, axis_name=None)
  params, state = eval_test_utils.random_variables(model, config)
  workdir = root / 'workdir'
  workdir.mkdir()
  saved_config.write(config, str(workdir))
  ckpt = checkpointing.Checkpointer(str(workdir / loop.CHECKPOINT_SUBDIR), keep=2, async_save=False)
  ckpt.save(step_lib.TrainState(np.int32(60), params, state,
                                optimizer_lib.make_optimizer(config).init(params),
                                np.asarray(jax.random.PRNGKey(0))))
  ckpt.close()
  return dict(root=root, shards=str(root / 'clips'), workdir=str(workdir))


def test_cli_ranks_cut_clips_with_random_init_and_chance_beside(clip_setup):
  out = clip_setup['root'] / 'out'
  assert evaluate.main(['--protocol=retrieval', f'--workdir={clip_setup["workdir"]}',
                        f'--test_shards={clip_setup["shards"]}', f'--output_dir={out}',
                        '--config.retrieval.batch_size=4', '--config.retrieval.num_spatial_crops=2',
                        '--config.retrieval.plot_top=3']) == 0
  record = json.loads((out / 'retrieval.json').read_text())
  assert record['num_clips'] == 4 and record['checkpoint_step'] == 60
  assert sorted(record['clips']) == ['v0.mp4#t=0.000', 'v0.mp4#t=1.600', 'v1.mp4#t=0.000',
                                     'v1.mp4#t=1.600']
  assert set(record['models']) == {'pretrained', 'random_init'}
  assert record['chance'] == {'R@1': 0.25, 'R@5': 1.0, 'R@10': 1.0, 'median_rank': 2.5,
                              'mean_rank': 2.5}
  assert record['settings']['num_spatial_crops'] == 2 and record['settings']['num_frames'] == 4
  for tag, model in record['models'].items():
    assert set(model['scores']) == set(retrieval.SCORES)
    for direction in retrieval.DIRECTIONS:
      m = model['scores']['both'][direction]
      # Four clips: R@1 counts whole clips, and R@k for k >= 4 is 1 by definition.
      assert m['R@1'] * 4 == round(m['R@1'] * 4) and m['R@5'] == m['R@10'] == 1.0, (tag, m)
      # Every clip not ranked first is ranked at least second, at most fourth.
      assert 1 + (1 - m['R@1']) <= m['mean_rank'] <= 1 + 3 * (1 - m['R@1']) + 1e-9, (tag, m)
      assert 1 <= m['median_rank'] <= 4
  assert os.path.getsize(out / 'retrieval.png') > 5000


def test_cli_refuses_models_without_audio_and_tfds(tmp_path, capsys):
  config_spec = os.path.join(os.path.dirname(__file__), '..', 'configs', 'brave_rgb_rgb.py:tiny')
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(['--protocol=retrieval', '--random_init', f'--config={config_spec}',
                   f'--output_dir={tmp_path}'])
  assert exit_info.value.code == 2
  assert 'audio backbone' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    evaluate.main(['--protocol=retrieval', '--random_init', '--tfds=ucf101',
                   f'--output_dir={tmp_path}'])
  assert 'not --tfds' in capsys.readouterr().err


def test_audio_only_shards_fail_fast_saying_they_hold_no_frames(tmp_path, capsys, monkeypatch):
  """Before: --protocol=retrieval on audio-only shards read every record ('1006 in a row',
  although the run budget is 50) and said 'reconvert the videos'. Now the shards' features are
  checked once, before any model is built, and the message says they hold no frames."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
  (tmp_path / 'audio').mkdir()
  for i in range(3):
    t = np.arange(24000) / 48000
    media_writers.write_test_audio(str(tmp_path / 'audio' / f'{i}.wav'),
                             (0.3 * np.sin(2 * np.pi * 300 * (i + 1) * t)).astype(np.float32))
  shards = convert.convert(str(tmp_path / 'audio'), str(tmp_path / 'shards'), prefix='speech',
                           audio_only=True, progress=False).shards
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'retrieval.json').write_text('{"earlier": true}')

  def no_model(*args, **kwargs):
    raise AssertionError('the model was built before the shards were checked')
  monkeypatch.setattr(protocols.Request, 'source', no_model)
  spec = os.path.join(os.path.dirname(__file__), '..', 'configs', 'brave_rgb_audio.py:tiny')
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(['--protocol=retrieval', '--random_init', f'--config={spec}',
                   f'--test_shards={tmp_path / "shards"}', f'--output_dir={out}'])
  assert exit_info.value.code == 1
  [line] = capsys.readouterr().err.strip().splitlines()[-1:]
  assert line.startswith('error: --protocol=retrieval needs video frames, but the shards hold '
                         'no frames (image/encoded')
  assert '--audio_only' in line and 'in a row' not in line
  assert json.loads((out / 'retrieval.json').read_text()) == {'earlier': True}  # Not lost.
  # Every evaluation pipeline makes the same check before reading records one by one.
  config = config_base.load(spec)
  with pytest.raises(reader.ShardError, match='hold no frames'):
    pipeline.make_eval_dataset(config, shards, mode='test', batch_size=2)
