"""kNN: weighted votes by hand, leave-one-out, the train-loop hook and the monitor's outputs."""
import json
import os

import jax
import numpy as np
import pytest

from brave_jax.eval import knn
from brave_jax.train import pretrain
from brave_jax.train import step as step_lib
import eval_test_utils
import train_test_double


def test_knn_scores_weight_neighbours_by_similarity():
  bank_NxD = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
  labels_N = np.array([0, 1, 1, 2])
  query_MxD = np.array([[2.0, 0.0]])  # Norm 2: only the direction counts.
  scores = knn.knn_scores(bank_NxD, labels_N, query_MxD, 3, k=2, temperature=0.5)
  cos = 0.9 / np.linalg.norm([0.9, 0.1])
  np.testing.assert_allclose(scores[0], [np.exp(0.0), np.exp((cos - 1) / 0.5), 0.0], rtol=1e-5)
  # k=3 adds an orthogonal label-1 neighbour: two label-1 votes outweigh one closer label-0 vote
  # only when the temperature flattens the weights.
  assert np.argmax(knn.knn_scores(bank_NxD, labels_N, query_MxD, 3, k=3, temperature=0.01)) == 0
  assert np.argmax(knn.knn_scores(bank_NxD, labels_N, query_MxD, 3, k=3, temperature=100.0)) == 1


def test_leave_one_out_excludes_self():
  # Each point's only same-class neighbour is itself: leave-one-out must get all wrong.
  feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.05], [0.05, 1.0]])
  assert knn.leave_one_out_top1(feats, np.array([0, 1, 1, 0]), k=1) == 0.0
  assert knn.leave_one_out_top1(feats, np.array([0, 1, 0, 1]), k=1) == 1.0
  with pytest.raises(ValueError, match='NaN'):
    knn.leave_one_out_top1(np.full((3, 2), np.nan), np.array([0, 1, 0]))


def test_evaluate_averages_test_crops_per_video():
  rng = np.random.default_rng(0)
  bank = {'feats': np.repeat(np.eye(3), 5, axis=0) + 0.05 * rng.normal(size=(15, 3)),
          'labels': np.repeat(np.arange(3), 5), 'video_index': np.arange(15)}
  queries = {'feats': np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1], [0, 0.1, 1]], np.float32),
             'labels': np.array([0, 0, 2, 2]), 'video_index': np.array([0, 0, 1, 1])}
  result = knn.evaluate(bank, queries, k=5)
  assert result['top1'] == 1.0 and result['num_test_videos'] == 2


class _CountingHook:
  every_steps = 2
  progress_fields = ('hook/value',)

  def __init__(self):
    self.calls, self.closed = [], False

  def __call__(self, step, train_state):
    self.calls.append((step, int(step_lib.unreplicate(train_state.step))))
    return {'hook/value': float(step)}

  def close(self):
    self.closed = True


def test_loop_runs_hooks_and_writes_their_scalars(tiny_va_config, tmp_path, capsys):
  c = tiny_va_config
  c.training.update(batch_size=4, num_steps=5, checkpoint_every=10, log_every=4)
  c.optimizer.warmup_steps = 1
  c.optimizer.base_learning_rate = 2.0  # The test double diverges at the tiny config's peak LR.
  hook = _CountingHook()
  make = train_test_double.make_batch_iterator_fn(4, jax.local_device_count())
  pretrain.train(c, str(tmp_path), make, train_test_double.build_test_double_model('i'),
                 hooks=[hook])
  assert hook.calls == [(2, 2), (4, 4), (5, 5)] and hook.closed  # Every 2 steps and the last.
  records = {r['step']: r for r in map(json.loads, open(tmp_path / 'metrics.jsonl'))}
  assert sorted(records) == [2, 4, 5]  # Step 2 is written for the hook although log_every is 4.
  assert records[2]['hook/value'] == 2.0 and 'loss' in records[2]
  assert 'hook/value 4' in capsys.readouterr().out  # On the progress line.


def test_monitor_reports_top1_and_draws_curve(tiny_va_config, tmp_path, monkeypatch):
  c = tiny_va_config
  c.knn_monitor.update(every_steps=1, k=3)
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 4)
  clips = {'video': (labels[:, None, None, None, None] / 3 + 0.01 * rng.normal(
      size=(12, 4, 32, 32, 3))).astype(np.float32), 'label': labels}
  monkeypatch.setattr(knn, 'load_clips', lambda config, source: clips)
  monkeypatch.setattr(knn, 'monitor_source', lambda config: 'clips')
  (monitor,) = knn.monitor_hooks(c, str(tmp_path))
  source = eval_test_utils.random_source(c)
  ts = step_lib.replicate(step_lib.TrainState(np.int32(3), source.params, source.state, (),
                                              np.zeros(2, np.uint32)))
  out = monitor(3, ts)
  assert set(out) == {'knn/top1', 'knn/seconds'} and 0.0 <= out['knn/top1'] <= 1.0
  assert out['knn/seconds'] > 0 and os.path.getsize(tmp_path / 'knn.png') > 1000
  assert monitor(4, ts)['knn/top1'] == out['knn/top1']  # Same weights, same clips.
  c.knn_monitor.every_steps = 0
  assert knn.monitor_hooks(c, str(tmp_path)) == []  # Off in full configs.
