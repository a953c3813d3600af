"""Linear classification of frozen features: multi-crop grouping, top-k, SVM fit, C selection, embeddings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brave_jax.eval import embeddings
from brave_jax.eval import svm


def test_group_crops_averages_each_videos_rows():
  feats_NxD = np.array([[0., 0.], [2., 4.], [10., 10.], [1., 1.], [3., 3.], [5., 5.]])
  labels_N = np.array([7, 7, 3, 1, 1, 1])
  video_index_N = np.array([4, 4, 9, 2, 2, 2])
  feats_VxD, labels_V = svm.group_crops(feats_NxD, labels_N, video_index_N)
  np.testing.assert_allclose(feats_VxD, [[3., 3.], [1., 2.], [10., 10.]])  # Videos 2, 4, 9.
  np.testing.assert_array_equal(labels_V, [1, 7, 3])


def test_group_crops_refuses_mixed_labels_naming_the_video():
  with pytest.raises(svm.LinearEvalError, match='video_index 5'):
    svm.group_crops(np.zeros((4, 2)), np.array([0, 0, 1, 2]), np.array([3, 3, 5, 5]))


def test_topk_accuracy_hand_made():
  scores_VxK = np.array([
      [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: top-1 hit.
      [0.1, 0.9, 0.8, 0.7, 0.6, 0.05],  # label 5: 6th of 6, miss at top-5.
      [0.5, 0.9, 0.1, 0.2, 0.3, 0.4],  # label 4: 3rd, top-5 hit only.
      [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # label 9: outside the columns, never a hit.
  ])
  labels_V = np.array([0, 5, 4, 9])
  assert svm.topk_accuracy(scores_VxK, labels_V, 1) == pytest.approx(0.25)
  assert svm.topk_accuracy(scores_VxK, labels_V, 5) == pytest.approx(0.5)
  assert svm.topk_accuracy(scores_VxK, labels_V, 6) == pytest.approx(0.75)


def _separable(num_classes=4, videos_per_class=6, crops=3, dim=8, seed=0):
  """Class means far apart (fixed) with small noise (per seed); several clips per video."""
  means_KxD = np.random.default_rng(123).normal(size=(num_classes, dim)) * 5
  rng = np.random.default_rng(seed)
  labels_N = np.repeat(np.arange(num_classes), videos_per_class * crops)
  video_index_N = np.repeat(np.arange(num_classes * videos_per_class), crops)
  feats_NxD = means_KxD[labels_N] + 0.3 * rng.normal(size=(len(labels_N), dim))
  return feats_NxD.astype(np.float32), labels_N, video_index_N


def test_svm_on_separable_embeddings_is_perfect():
  train_x, train_y, train_vid = _separable(seed=0)
  test_x, test_y, test_vid = _separable(videos_per_class=3, seed=1)
  keep = test_y < 2  # Test only classes 0 and 1: the others get per-class None.
  test_x, test_y, test_vid = test_x[keep], test_y[keep], test_vid[keep]
  result = svm.evaluate_linear(train_x, train_y, test_x, test_y, test_vid, 1e-2)
  assert result['train'] == {'top1': 1.0, 'top5': 1.0}
  assert result['test'] == {'top1': 1.0, 'top5': 1.0}
  assert result['svm_c'] == 1e-2
  assert result['num_test_videos'] == len(np.unique(test_vid))
  confusion = np.array(result['confusion_matrix'])
  assert confusion.shape == (4, 4) and np.all(confusion == np.diag(np.diag(confusion)))
  assert result['per_class_test_accuracy'] == [1.0, 1.0, None, None]  # Only classes 0, 1 tested.


def test_test_scores_are_averaged_over_crops():
  """One bad crop is outvoted by its video's other crops (prediction averaging)."""
  train_x, train_y, _ = _separable(num_classes=2, crops=1, seed=0)
  mean0 = train_x[train_y == 0].mean(0)
  mean1 = train_x[train_y == 1].mean(0)
  test_x = np.stack([mean0, mean0, mean0 * 0.2 + mean1 * 0.8])  # Third crop looks like class 1.
  result = svm.evaluate_linear(train_x, train_y, test_x, np.zeros(3, int), np.zeros(3, int), 1.0)
  assert result['test']['top1'] == 1.0 and result['num_test_videos'] == 1


def test_auto_c_cross_validates_on_train_only(monkeypatch):
  train_x, train_y, train_vid = _separable(num_classes=3, videos_per_class=4, crops=2, seed=0)
  seen_rows = []
  real_fit = svm._fit_quietly

  def spy(model, x, y):
    seen_rows.append(len(x))
    return real_fit(model, x, y)
  monkeypatch.setattr(svm, '_fit_quietly', spy)
  c, cv_scores = svm.choose_c(train_x, train_y, groups=train_vid)
  assert c in svm.C_GRID and set(cv_scores) == set(svm.C_GRID)
  assert max(seen_rows) < len(train_x)  # Every CV fit held out a fold.
  assert c == min(k for k, v in cv_scores.items() if v == max(cv_scores.values()))

  # Test features never influence the chosen C: garbage test data, same C.
  seen_rows.clear()
  test_x = np.random.default_rng(5).normal(size=(6, train_x.shape[1])) * 100
  result = svm.evaluate_linear(train_x, train_y, test_x, np.array([0, 0, 1, 1, 2, 2]),
                                  np.array([0, 0, 1, 1, 2, 2]), 'auto', train_video_index=train_vid)
  assert result['svm_c'] == c
  assert seen_rows[-1] == len(train_x)  # The final fit uses all train clips, no test rows.


def test_video_accuracy_scores_a_video_by_its_clips_mean_score():
  """Two videos of class 0, two clips each, one clip of each pointing at class 1: clip top-1 is
  1/2, but each video's mean score still points at class 0 (as the test split is scored)."""
  scores_NxK = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5]])
  labels_N = np.zeros(4, int)
  assert np.mean(np.argmax(scores_NxK, axis=1) == labels_N) == 0.5
  assert svm.video_accuracy(scores_NxK, labels_N, np.array([0, 0, 1, 1])) == 1.0
  # Negative control: grouped the other way, one video is all class-0 clips, one all class-1.
  assert svm.video_accuracy(scores_NxK, labels_N, np.array([0, 1, 0, 1])) == 0.5


def test_auto_c_cv_unit_video_scores_held_out_videos_not_clips():
  """Clips are noisy views of their video: a fold's video-level accuracy (what the test reports)
  exceeds its clip-level accuracy; 'clip' keeps the old measure, an unknown unit is refused."""
  rng = np.random.default_rng(0)
  num_classes, videos_per_class, clips = 4, 8, 5
  labels_V = np.repeat(np.arange(num_classes), videos_per_class)
  centres_KxD = rng.normal(size=(num_classes, 16)) * 0.6
  video_x_VxD = centres_KxD[labels_V] + rng.normal(size=(len(labels_V), 16)) * 0.3
  x_NxD = np.repeat(video_x_VxD, clips, axis=0) + rng.normal(size=(len(labels_V) * clips, 16)) * 1.5
  y_N = np.repeat(labels_V, clips)
  groups_N = np.repeat(np.arange(len(labels_V)), clips)
  _, by_video = svm.choose_c(x_NxD, y_N, groups=groups_N, cv_unit='video')
  _, by_clip = svm.choose_c(x_NxD, y_N, groups=groups_N, cv_unit='clip')
  assert np.mean(list(by_video.values())) > np.mean(list(by_clip.values())) + 0.05
  with pytest.raises(svm.LinearEvalError, match='svm_c_cv_unit'):
    svm.choose_c(x_NxD, y_N, groups=groups_N, cv_unit='frame')


def test_l2_standardize_ignores_each_embeddings_scale():
  """'l2_standardize' scores a clip the same whatever positive factor scales its embedding; the
  published 'standardize' does not (negative control), so a clip-level gain cannot be a feature."""
  train_x, train_y, _ = _separable(num_classes=3, crops=1, seed=0)
  test_x, _, _ = _separable(num_classes=3, crops=1, seed=1)
  gains = np.random.default_rng(2).uniform(0.2, 5.0, size=(len(test_x), 1)).astype(np.float32)
  l2 = svm.fit_linear_svm(train_x, train_y, 1e-2, transform='l2_standardize')
  np.testing.assert_allclose(l2.decision_function(test_x * gains), l2.decision_function(test_x),
                             rtol=1e-4, atol=1e-5)
  plain = svm.fit_linear_svm(train_x, train_y, 1e-2, transform='standardize')
  assert not np.allclose(plain.decision_function(test_x * gains), plain.decision_function(test_x),
                         rtol=1e-4, atol=1e-5)
  result = svm.evaluate_linear(train_x, train_y, test_x, np.repeat(np.arange(3), 6), np.arange(18),
                               'auto', train_video_index=np.arange(len(train_x)),
                               transform='l2_standardize')
  assert result['feature_transform'] == 'l2_standardize' and result['test']['top1'] == 1.0
  with pytest.raises(svm.LinearEvalError, match='feature_transform'):
    svm.fit_linear_svm(train_x, train_y, 1e-2, transform='whiten')


def _gained_clips(class_in_norm: bool, seed: int = 0):
  """Clips of 4 classes x 8 videos x 4 clips in 16-d. With class_in_norm False, the class is a
  faint direction (0.3 x a random one, plus noise 0.5) and each clip's embedding has a random gain
  from 1/50 to 50 (a nuisance only L2 removes); with class_in_norm True, the classes share a
  direction and differ only in their norm (what L2 destroys)."""
  rng = np.random.default_rng(seed)
  num_classes, videos, clips, dim = 4, 8, 4, 16
  labels_V = np.repeat(np.arange(num_classes), videos)
  if class_in_norm:
    direction_D = rng.normal(size=dim)
    x_VxD = np.outer(1.0 + labels_V, direction_D / np.linalg.norm(direction_D))
  else:
    x_VxD = 0.3 * rng.normal(size=(num_classes, dim))[labels_V]
  x_NxD = np.repeat(x_VxD, clips, axis=0) + rng.normal(size=(len(labels_V) * clips, dim)) * (
      0.1 if class_in_norm else 0.5)
  if not class_in_norm:
    x_NxD *= np.exp(rng.uniform(np.log(0.02), np.log(50.0), size=(len(x_NxD), 1)))
  return x_NxD, np.repeat(labels_V, clips), np.repeat(np.arange(len(labels_V)), clips)


def test_auto_transform_is_chosen_by_train_cv():
  """feature_transform='auto' takes the transform the train-split CV prefers, with C: L2 when a
  clip's gain is a nuisance, the published standardisation when the norm is the class
  (negative control); evaluate_linear reports what was chosen."""
  x, y, groups = _gained_clips(class_in_norm=False)
  transform, c, scores = svm.choose_probe(x, y, 'auto', 'auto', groups=groups)
  assert transform == 'l2_standardize' and set(scores) == set(svm.FEATURE_TRANSFORMS)
  assert max(scores['l2_standardize'].values()) > max(scores['standardize'].values())
  assert c == min(k for k, v in scores['l2_standardize'].items()
                  if v == max(scores['l2_standardize'].values()))
  x_norm, y_norm, groups_norm = _gained_clips(class_in_norm=True)
  assert svm.choose_probe(x_norm, y_norm, 'auto', 'auto', groups=groups_norm)[0] == 'standardize'
  # A fixed C still lets the transform be chosen; a fixed transform is kept as given.
  assert svm.choose_probe(x, y, 1e-2, 'auto', groups=groups)[:2] == ('l2_standardize', 1e-2)
  assert svm.choose_probe(x, y, 'auto', 'standardize', groups=groups)[0] == 'standardize'
  result = svm.evaluate_linear(x, y, x_norm[:4], y_norm[:4], np.zeros(4, int), 'auto',
                               train_video_index=groups, transform='auto')
  assert result['feature_transform'] == 'l2_standardize'


def test_auto_c_refuses_single_video_classes():
  x = np.random.default_rng(0).normal(size=(4, 3))
  with pytest.raises(svm.LinearEvalError, match='--svm_c'):
    svm.fit_linear_svm(x, np.array([0, 1, 1, 1]), 'auto')


def _fake_embed(variables, video_BxTxHxWx3):
  """A tiny deterministic 'backbone': mean-pool then a linear map."""
  pooled_BxC = jnp.mean(video_BxTxHxWx3, axis=(1, 2, 3))
  return jnp.tanh(pooled_BxC @ variables['w_CxD'] + variables['b_D'])


def _video_batches(num_clips, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  video = rng.uniform(size=(num_clips, 2, 4, 4, 3)).astype(np.float32)
  for start in range(0, num_clips, batch_size):
    stop = min(start + batch_size, num_clips)
    yield {'video': video[start:stop], 'label': np.arange(start, stop) % 3,
           'video_index': np.arange(start, stop) // 2}


def test_embeddings_pmapped_with_partial_batch_match_unpadded_jit(tmp_path):
  assert jax.local_device_count() == 2, 'tests/conftest.py should force 2 CPU devices'
  rng = np.random.default_rng(0)
  variables = {'w_CxD': rng.normal(size=(3, 5)).astype(np.float32),
               'b_D': rng.normal(size=(5,)).astype(np.float32)}
  got = embeddings.compute_embeddings(_fake_embed, _video_batches(11, 4), variables=variables,
                                      num_devices=2)  # Batches of 4, 4, 3 -> last padded.
  video = np.concatenate([b['video'] for b in _video_batches(11, 4)])
  want = np.asarray(jax.jit(_fake_embed)(variables, video))
  assert got['feats'].shape == (11, 5)
  np.testing.assert_allclose(got['feats'], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got['labels'], np.arange(11) % 3)
  np.testing.assert_array_equal(got['video_index'], np.arange(11) // 2)

  closure = embeddings.compute_embeddings(lambda x: _fake_embed(variables, x),
                                          _video_batches(11, 3), num_devices=1)
  np.testing.assert_allclose(closure['feats'], want, rtol=1e-5, atol=1e-6)

  path = embeddings.save_embeddings(str(tmp_path / 'emb.npz'), {'train': got, 'test': closure},
                                    metadata={'checkpoint_step': 7})
  splits, metadata = embeddings.load_embeddings(path)
  assert metadata == {'checkpoint_step': 7} and set(splits) == {'train', 'test'}
  for key in embeddings.SPLIT_KEYS:
    np.testing.assert_array_equal(splits['train'][key], got[key])
