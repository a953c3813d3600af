"""Weighted k-nearest-neighbour classification of embeddings, and the online kNN monitor of pretraining.

The classifier: features are L2-normalised, each query's k most
cosine-similar bank entries vote for their labels with weight
exp(similarity / temperature) (the weighted kNN of Wu et al. 2018 and DINO),
and the class with the largest total wins. No training, so it can watch
pretraining as it goes:

`Monitor` is a train.loop hook. Every config.knn_monitor.every_steps updates
it embeds a small labelled set (config.knn_monitor.shards, else
data.test_shards, else the embedded synthetic test split; one centre clip per
video, decoded once and kept in memory) with the current narrow backbone and
reports leave-one-out kNN top-1 within that set (k = 20 by default) as
`knn/top1` in metrics.jsonl, TensorBoard and the progress line, and redraws
`knn.png`. `knn/seconds` is its own wall time, so its cost is on record.

As an evaluation protocol (`run_request`; `python -m brave_jax.evaluate
--protocol=knn`), every multi-crop test video is classified against the
train split's clips (crop scores averaged per video).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from brave_jax import files
from brave_jax import log
from brave_jax.eval import backbone as backbone_lib
from brave_jax.eval import embeddings as embeddings_lib

_LOG = log.get_logger(__name__)

PLOT_FILE = 'knn.png'
METRIC = 'knn/top1'


def knn_scores(bank_NxD: np.ndarray, bank_labels_N: np.ndarray, query_MxD: np.ndarray,
               num_classes: int, *, k: int = 20, temperature: float = 0.07,
               exclude_self: bool = False) -> np.ndarray:
  """Class scores [M, num_classes]: summed exp(cos / temperature) of each query's k nearest.

  `exclude_self` (queries == bank, leave-one-out) drops each query's own row.
  """
  bank_NxD = np.asarray(bank_NxD, np.float32)
  query_MxD = np.asarray(query_MxD, np.float32)
  bank_labels_N = np.asarray(bank_labels_N).reshape(-1)
  if bank_NxD.ndim != 2 or query_MxD.ndim != 2 or bank_NxD.shape[1] != query_MxD.shape[1]:
    raise ValueError(f'knn_scores: need bank [N, D] and queries [M, D], got {bank_NxD.shape} '
                     f'and {query_MxD.shape}')
  if len(bank_labels_N) != len(bank_NxD) or bank_labels_N.min(initial=0) < 0:
    raise ValueError('knn_scores: every bank row needs a label >= 0 (clip/label/index)')
  if not (np.all(np.isfinite(bank_NxD)) and np.all(np.isfinite(query_MxD))):
    raise ValueError('knn_scores: embeddings contain NaN/inf; the backbone diverged')

  def normalise(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  sims_MxN = normalise(query_MxD) @ normalise(bank_NxD).T
  if exclude_self:
    if sims_MxN.shape[0] != sims_MxN.shape[1]:
      raise ValueError('knn_scores: exclude_self needs the queries to be the bank')
    np.fill_diagonal(sims_MxN, -np.inf)
  k = min(int(k), len(bank_NxD) - int(exclude_self))
  if k < 1:
    raise ValueError('knn_scores: the bank is too small for any neighbour')
  nearest_MxK = np.argpartition(-sims_MxN, k - 1, axis=1)[:, :k]
  sims_MxK = np.take_along_axis(sims_MxN, nearest_MxK, axis=1)
  weights_MxK = np.exp((sims_MxK - 1.0) / temperature)  # Shifted by the max similarity (1): no overflow.
  scores_MxC = np.zeros((len(query_MxD), num_classes), np.float64)
  rows_MxK = np.broadcast_to(np.arange(len(query_MxD))[:, None], nearest_MxK.shape)
  np.add.at(scores_MxC, (rows_MxK, bank_labels_N[nearest_MxK]), weights_MxK)
  return scores_MxC


def leave_one_out_top1(feats_NxD: np.ndarray, labels_N: np.ndarray, *, k: int = 20,
                       temperature: float = 0.07) -> float:
  """Top-1 of classifying every row by its k nearest other rows."""
  labels_N = np.asarray(labels_N).reshape(-1)
  scores = knn_scores(feats_NxD, labels_N, feats_NxD, int(labels_N.max()) + 1, k=k,
                      temperature=temperature, exclude_self=True)
  return float(np.mean(np.argmax(scores, axis=1) == labels_N))


def evaluate(bank: Mapping[str, np.ndarray], queries: Mapping[str, np.ndarray], *, k: int = 20,
             temperature: float = 0.07, num_classes: int | None = None) -> dict[str, Any]:
  """kNN top-1/5 of query videos (crop scores averaged per video) against a bank of train clips."""
  from brave_jax.eval import svm  # pylint: disable=g-import-not-at-top
  num_classes = num_classes or int(max(bank['labels'].max(), queries['labels'].max())) + 1
  scores = knn_scores(bank['feats'], bank['labels'], queries['feats'], num_classes, k=k,
                      temperature=temperature)
  video_scores_VxK, labels_V = svm.group_crops(scores, queries['labels'], queries['video_index'])
  return {'top1': svm.topk_accuracy(video_scores_VxK, labels_V, 1),
          'top5': svm.topk_accuracy(video_scores_VxK, labels_V, 5),
          'k': int(k), 'temperature': float(temperature), 'num_bank_clips': int(len(bank['feats'])),
          'num_test_videos': int(len(labels_V))}


# ----------------------------------------------------------------------------- the monitor


def monitor_source(config: ml_collections.ConfigDict) -> Any:
  """The monitor's labelled set: knn_monitor.shards, data.test_shards, or the embedded test split."""
  if config.knn_monitor.shards:
    return config.knn_monitor.shards
  if config.data.test_shards:
    return config.data.test_shards
  from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.ensure_dataset(config.data.synthetic,
                                  with_flow='flow' in config.data.broad_modalities)['test']


def load_clips(config: ml_collections.ConfigDict, source: Any) -> dict[str, np.ndarray]:
  """One centre clip (config.eval's clip) per video of the set, at most knn_monitor.max_videos."""
  from brave_jax.data import eval_clips  # pylint: disable=g-import-not-at-top
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  centre = dataclasses.replace(eval_clips.EvalClips.from_config(config), num_temporal_crops=1,
                               num_spatial_crops=1)
  limit = int(config.knn_monitor.max_videos)
  video, labels = [], []
  for batch in pipeline.make_eval_dataset(config, source, mode='test',
                                          batch_size=config.eval.batch_size, clips=centre):
    video.append(batch['video'])
    labels.append(batch['label'])
    if sum(len(v) for v in video) >= limit:
      break
  if not video:
    raise ValueError(f'kNN monitor: no clips in {source!r} (config.knn_monitor.shards)')
  clips = {'video': np.concatenate(video)[:limit], 'label': np.concatenate(labels)[:limit]}
  if clips['label'].min() < 0:
    raise ValueError(f'kNN monitor: {source!r} has unlabelled videos (no clip/label/index); set '
                     'config.knn_monitor.shards to labelled shards')
  return clips


def plot_curve(workdir: str, steps: list[int], top1: list[float], chance: float | None,
               path: str | None = None) -> str:
  """knn.png: monitor top-1 against pretraining step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.plot(steps, [100 * t for t in top1], marker='o', label='kNN top-1 (leave-one-out)')
  if chance:
    ax.axhline(100 * chance, color='tab:gray', linestyle='--', label='chance')
  ax.set_xlabel('pretraining step')
  ax.set_ylabel('top-1 (%)')
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  path = path or os.path.join(workdir, PLOT_FILE)
  return files.save_figure(fig, path)


class Monitor:
  """train.loop hook: leave-one-out kNN top-1 of the narrow backbone on a small labelled set."""

  progress_fields = (METRIC,)

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, model: Any = None):
    m = config.knn_monitor
    self.every_steps = int(m.every_steps)
    self._config = config
    self._workdir = workdir
    self._k, self._temperature = int(m.k), float(m.temperature)
    self._model = model or backbone_lib.build_model(config)
    self._embed = backbone_lib.embed_fn(self._model)
    self._clips: dict[str, np.ndarray] | None = None
    self._source = None
    self.total_seconds = 0.0

  def _curve(self) -> tuple[list[int], list[float]]:
    from brave_jax.train import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    records = [r for r in metrics_lib.read_metrics(self._workdir) if METRIC in r]
    return [r['step'] for r in records], [r[METRIC] for r in records]

  def __call__(self, step: int, train_state: Any) -> dict[str, float]:
    if jax.process_index() != 0:
      return {}
    from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    if self._clips is None:
      _LOG.info(f'kNN monitor (step {step}): loading its clips and compiling the embedding, once '
                '(training pauses meanwhile)...')
      self._source = monitor_source(self._config)
      self._clips = load_clips(self._config, self._source)
    variables = step_lib.unreplicate(backbone_lib.only_root(
        (train_state.params, train_state.state), backbone_lib.NARROW_ROOT))
    size = int(self._config.eval.batch_size)
    batches = [{k: v[i:i + size] for k, v in self._clips.items()}
               for i in range(0, len(self._clips['video']), size)]
    feats = embeddings_lib.compute_embeddings(
        self._embed, batches, variables=variables, num_devices=1, pad_to=size,
        show_progress=False)['feats']
    top1 = leave_one_out_top1(feats, self._clips['label'], k=self._k,
                              temperature=self._temperature)
    steps, curve = self._curve()
    num_classes = int(self._clips['label'].max()) + 1
    plot_curve(self._workdir, steps + [step], curve + [top1], 1.0 / num_classes)
    seconds = time.perf_counter() - start
    self.total_seconds += seconds
    return {METRIC: top1, 'knn/seconds': seconds}

  def close(self) -> None:
    if self.total_seconds:
      _LOG.info(f'kNN monitor: {self.total_seconds:.1f} s in all (knn/seconds in metrics.jsonl)')


def monitor_hooks(config: ml_collections.ConfigDict, workdir: str) -> list[Monitor]:
  """[Monitor] when config.knn_monitor.every_steps > 0, else []: what main.py hands train.loop."""
  if not int(config.knn_monitor.every_steps):
    return []
  from brave_jax.train import loop  # pylint: disable=g-import-not-at-top
  return [Monitor(config, loop.resolve_workdir(workdir))]


# ----------------------------------------------------------------------------- the protocol


def run_request(config: ml_collections.ConfigDict, request: Any,
                output_dir: str) -> dict[str, Any]:
  """The protocol's entry (eval/protocols.py): kNN of test videos against the train split's clips."""
  from brave_jax.eval import linear  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import protocols  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import report  # pylint: disable=g-import-not-at-top
  source = request.source(config)
  train, test, class_names = request.splits(config)
  if source.kind == 'random_init':
    source = backbone_lib.calibrate_batch_norm(config, source,
                                               linear.eval_iterator(config, train, 'train'))
  tag = protocols.tag(source)
  splits = linear.embed_splits(config, backbone_lib.embed_fn(source.model), train, test,
                               variables=source.variables(backbone_lib.NARROW_ROOT), tag=tag)
  m = config.knn_monitor
  result = evaluate(splits['train'], splits['test'], k=int(m.k), temperature=float(m.temperature),
                    num_classes=len(class_names) if class_names else None)
  record = {'protocol': 'knn', 'backbone': tag, 'checkpoint_step': source.step, **result}
  report.write_json(os.path.join(output_dir, 'knn.json'), record)
  _LOG.info(f'kNN ({tag}, k={result["k"]}): test top-1 {100 * result["top1"]:.1f}%, top-5 '
            f'{100 * result["top5"]:.1f}% over {result["num_test_videos"]} videos; wrote '
            f'{os.path.join(output_dir, "knn.json")}')
  return record
