"""Audio<->video retrieval: find the sound that belongs to a picture, and the reverse.

For every test clip the narrow backbone embeds its video (data.narrow's
frames, step and crop size; config.eval's short-side resize, then
config.retrieval's deterministic windows and diagonal crops) and the broad
audio backbone embeds the audio of the broad window from the same start (the
training pairing, `broad_start='at_narrow'`). Every audio clip is then ranked
for every video clip, and every video clip for every audio clip; the true
partner's rank gives R@1/R@5/R@10 and the median rank per direction, beside
chance (R@K = K/N, median rank (N+1)/2) and a random-init model of the same
architecture (its batch-norm statistics re-estimated on clips first, as the
linear protocol does, here with both views fed so the shared head's
statistics are those of real features).

Which space: both projection and prediction, as the loss pairs them. The
loss regresses the narrow view's prediction h_n onto the audio projection
z_a and the audio prediction h_a onto the narrow projection z_n (normalised
regression, 2 - 2 cos each), and nothing else: z_n and z_a are never pulled
together directly (BYOL-style, the predictor is what bridges the views). So
a video clip v and an audio clip a are scored by exactly what pretraining
made large for true pairs:

    score(v, a) = cos(h_n(v), z_a(a)) + cos(h_a(a), z_n(v))

one symmetric matrix for both directions (the headline, 'both'). The JSON
also has each loss term alone ('narrow_predicts_audio', 'audio_predicts_narrow')
and the plain projections ('projections', cos(z_n, z_a)) as diagnostics.
Ties count against the query (a constant score ranks the true partner last).

Outputs (output_dir): retrieval.json and retrieval.png, a few queries per
direction with their top matches (a frame of each clip; the true partner
framed in green).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from brave_jax import errors
from brave_jax import files
from brave_jax import log
from brave_jax.data import eval_clips
from brave_jax.eval import backbone as backbone_lib
from brave_jax.eval import embeddings as embeddings_lib

_LOG = log.get_logger(__name__)

JSON_FILE = 'retrieval.json'
PLOT_FILE = 'retrieval.png'
HEADLINE = 'both'
SCORES = ('both', 'narrow_predicts_audio', 'audio_predicts_narrow', 'projections')
DIRECTIONS = ('video_to_audio', 'audio_to_video')
KS = (1, 5, 10)
THUMBNAIL_PX = 64  # Largest side of the frames kept for retrieval.png.


class RetrievalError(ValueError):
  """A model or data set the protocol cannot rank."""


# ----------------------------------------------------------------------------- ranking


def similarities(emb: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Score matrices [video clip, audio clip] of every SCORES entry from L2-normalised vectors."""
  narrow_predicts_audio = emb['h_narrow'] @ emb['z_audio'].T
  audio_predicts_narrow = emb['z_narrow'] @ emb['h_audio'].T
  return {'both': narrow_predicts_audio + audio_predicts_narrow,
          'narrow_predicts_audio': narrow_predicts_audio,
          'audio_predicts_narrow': audio_predicts_narrow,
          'projections': emb['z_narrow'] @ emb['z_audio'].T}


def true_partner_ranks(scores_QxC: np.ndarray) -> np.ndarray:
  """Rank (1 = first) of each query's true partner (column i for row i); ties count against it."""
  scores_QxC = np.asarray(scores_QxC, np.float64)
  if scores_QxC.ndim != 2 or scores_QxC.shape[0] != scores_QxC.shape[1]:
    raise RetrievalError(f'need a square score matrix (clip i pairs with clip i), got '
                         f'{scores_QxC.shape}')
  if not np.all(np.isfinite(scores_QxC)):
    raise RetrievalError('scores contain NaN/inf: the model diverged or its BN statistics are unset')
  true_Q = np.diagonal(scores_QxC)[:, None]
  return np.sum(scores_QxC >= true_Q, axis=1)


def rank_metrics(ranks_Q: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
  """R@K (fraction of queries whose partner is in the top K), median and mean rank."""
  ranks_Q = np.asarray(ranks_Q)
  out = {f'R@{k}': float(np.mean(ranks_Q <= k)) for k in ks}
  out.update(median_rank=float(np.median(ranks_Q)), mean_rank=float(np.mean(ranks_Q)))
  return out


def chance_metrics(num_clips: int, ks: Sequence[int] = KS) -> dict[str, float]:
  """What a random ranking scores on average: R@K = min(K, N) / N, median and mean rank (N+1)/2."""
  out = {f'R@{k}': min(k, num_clips) / num_clips for k in ks}
  out.update(median_rank=(num_clips + 1) / 2, mean_rank=(num_clips + 1) / 2)
  return out


def evaluate_embeddings(emb: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """{score name: {'video_to_audio': metrics, 'audio_to_video': metrics}} (rows: video queries)."""
  out = {}
  for name, s_VxA in similarities(emb).items():
    out[name] = {'video_to_audio': rank_metrics(true_partner_ranks(s_VxA)),
                 'audio_to_video': rank_metrics(true_partner_ranks(s_VxA.T))}
  return out


# ----------------------------------------------------------------------------- embedding


def retrieval_clips(config: ml_collections.ConfigDict) -> eval_clips.EvalClips:
  """The narrow view's clip (frames, step, crop size), config.eval's short-side resize and
  config.retrieval's crop counts: the clips the narrow backbone saw in pretraining."""
  r, n = config.retrieval, config.data.narrow
  return dataclasses.replace(
      eval_clips.EvalClips.from_config(config), num_frames=int(n.num_frames),
      frame_step=int(n.frame_step), image_size=int(n.image_size),
      num_temporal_crops=int(r.num_temporal_crops), num_spatial_crops=int(r.num_spatial_crops))


def clip_batches(config: ml_collections.ConfigDict, data: Any,
                 clips: eval_clips.EvalClips | None = None):
  """Test batches of every clip: 'video' crops, 'audio' log-mel of the same start, 'video_index'.

  `clips`: default `retrieval_clips(config)`.
  """
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_eval_dataset(config, data, mode='test',
                                    batch_size=int(config.retrieval.batch_size),
                                    include_audio=True, clips=clips or retrieval_clips(config))


def _normalise(x_NxK: np.ndarray) -> np.ndarray:
  return x_NxK / np.maximum(np.linalg.norm(x_NxK, axis=-1, keepdims=True), 1e-12)


def _embed_fn(model: Any):
  """(variables, video, audio) -> unit vectors {'z_narrow', 'h_narrow', 'z_audio', 'h_audio'}."""
  def embed(variables, video, audio):
    params, state = variables
    z_n, h_n = model.project['narrow'](params, state, model.embed_narrow(params, state, video))
    z_a, h_a = model.project['audio'](params, state,
                                      model.embed_broad['audio'](params, state, audio))

    def unit(x):
      return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return {'z_narrow': unit(z_n), 'h_narrow': unit(h_n), 'z_audio': unit(z_a),
            'h_audio': unit(h_a)}
  return embed


def _thumbnail(frame_HxWx3: np.ndarray) -> np.ndarray:
  """A uint8 frame at most THUMBNAIL_PX on its longer side (nearest-neighbour)."""
  h, w = frame_HxWx3.shape[:2]
  step = max(1, int(np.ceil(max(h, w) / THUMBNAIL_PX)))
  return (np.clip(frame_HxWx3[::step, ::step], 0, 1) * 255).astype(np.uint8)


def embed_clips(config: ml_collections.ConfigDict, source: backbone_lib.Source, data: Any, *,
                desc: str = 'retrieval') -> dict[str, np.ndarray]:
  """Per clip: unit vectors 'z_narrow', 'h_narrow', 'z_audio', 'h_audio' [C, K] (the crops'
  unit vectors averaged and renormalised), 'video_index' [C] (record position) and
  'thumbnails' [C, h, w, 3] (the middle frame of the clip's first crop)."""
  if 'audio' not in source.model.embed_broad:
    raise RetrievalError(f'retrieval needs a model with an audio backbone (V/A, V/FA); this '
                         f'{source.kind} model has broad views {sorted(source.model.embed_broad)}')
  limit = int(config.retrieval.max_clips) or None
  thumbs: dict[int, np.ndarray] = {}

  def batches_keeping_thumbnails():
    for batch in clip_batches(config, data):
      for i, clip in enumerate(np.asarray(batch['video_index']).reshape(-1)):
        if int(clip) not in thumbs:
          thumbs[int(clip)] = _thumbnail(np.asarray(batch['video'][i, batch['video'].shape[1] // 2]))
      yield batch
      if limit and len(thumbs) > limit:
        return

  try:
    rows = embeddings_lib.compute_embeddings(
        _embed_fn(source.model), batches_keeping_thumbnails(),
        variables=(source.params, source.state), input_key=('video', 'audio'),
        pad_to=int(config.retrieval.batch_size), desc=desc)
  except ValueError:
    if thumbs:
      raise
    raise RetrievalError(f'no clips with frames and audio in {data!r}') from None
  keep = slice(0, limit)
  out = {}
  for key in ('z_narrow', 'h_narrow', 'z_audio', 'h_audio'):
    clips, means, _ = embeddings_lib.average_per_video(rows[key], rows['video_index'])
    out[key] = _normalise(means).astype(np.float32)[keep]
  out['video_index'] = clips[keep]
  out['thumbnails'] = np.stack([thumbs[int(c)] for c in out['video_index']])
  return out


def clip_names(data: Any, entries: Sequence[int]) -> list[str]:
  """clip/id (else clip/source@start, else '#entry') of the records at these index positions."""
  from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top
  from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    index = reader.index_shards(reader.list_shards(data))
    rd = index.reader()
  except (reader.ShardError, TypeError, ValueError):
    return [f'#{e}' for e in entries]
  names = []
  for entry in entries:
    try:
      ctx = tf.train.SequenceExample.FromString(index.read(rd, int(entry))).context.feature
    except Exception:  # pylint: disable=broad-except  # A name is a nicety; the rank is not.
      names.append(f'#{entry}')
      continue
    if ctx[dmvr_format.VIDEO_ID_KEY].bytes_list.value:
      names.append(ctx[dmvr_format.VIDEO_ID_KEY].bytes_list.value[0].decode())
    else:
      names.append(f'#{entry}')
  return names


# ----------------------------------------------------------------------------- baseline


def calibrate(config: ml_collections.ConfigDict, source: backbone_lib.Source,
              data: Any) -> backbone_lib.Source:
  """BN statistics re-estimated on `data`'s retrieval clips (video and audio both fed)."""
  # One crop per clip: the statistics of clips, not of near-copies.
  one_crop = dataclasses.replace(retrieval_clips(config), num_spatial_crops=1)
  return backbone_lib.calibrate_batch_norm(config, source, clip_batches(config, data, one_crop),
                                           input_key=('video', 'audio'))


# ----------------------------------------------------------------------------- report


def plot_queries(path: str, emb: Mapping[str, np.ndarray], names: Sequence[str], *,
                 num_queries: int, top: int, title: str = '') -> str:
  """retrieval.png: per direction, evenly spaced queries and their top matches (headline score)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  s_VxA = similarities(emb)[HEADLINE]
  n = len(s_VxA)
  num_queries, top = min(num_queries, n), min(top, n)
  queries = np.unique(np.linspace(0, n - 1, num_queries).round().astype(int))
  rows = [(d, q) for d in DIRECTIONS for q in queries]
  fig, axes = plt.subplots(len(rows), top + 1, figsize=(1.9 * (top + 1), 1.9 * len(rows)),
                           squeeze=False)
  for r, (direction, q) in enumerate(rows):
    scores = s_VxA[q] if direction == 'video_to_audio' else s_VxA[:, q]
    order = np.argsort(-scores, kind='stable')
    rank = int(np.sum(scores >= scores[q]))
    cells = [(q, f'{"video" if direction == "video_to_audio" else "audio"} query\n'
              f'{_short(names[q])}\ntrue partner rank {rank}/{n}')]
    cells += [(int(m), f'{"audio" if direction == "video_to_audio" else "video"} #{j + 1}\n'
               f'{_short(names[m])}') for j, m in enumerate(order[:top])]
    for c, (clip, label) in enumerate(cells):
      ax = axes[r, c]
      ax.imshow(emb['thumbnails'][clip])
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(label, fontsize=6)
      colour = 'tab:blue' if c == 0 else ('tab:green' if clip == q else None)
      if colour:
        for spine in ax.spines.values():
          spine.set_edgecolor(colour)
          spine.set_linewidth(3)
  fig.suptitle(title or 'retrieval (frames show the clip each video or audio came from; '
               'green: the true partner)', fontsize=8)
  fig.tight_layout()
  return files.save_figure(fig, path)


def _audio_seconds(config: ml_collections.ConfigDict) -> float:
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.audio_num_samples(config) / float(config.data.audio_sample_rate)


def _short(name: str, width: int = 28) -> str:
  return name if len(name) <= width else '...' + name[-(width - 3):]


def format_table(record: Mapping[str, Any]) -> str:
  """The headline numbers: rows per model and chance, both directions."""
  lines = [f'{"":<14}' + ''.join(f'{d:>36}' for d in DIRECTIONS),
           f'{"":<14}' + ''.join(f'{"R@1":>9}{"R@5":>9}{"R@10":>9}{"med.r":>9}' for _ in DIRECTIONS)]
  rows = [(tag, rec['scores'][HEADLINE]) for tag, rec in record['models'].items()]
  rows.append(('chance', {d: record['chance'] for d in DIRECTIONS}))
  for tag, metrics in rows:
    cells = ''
    for d in DIRECTIONS:
      m = metrics[d]
      cells += ''.join(f'{100 * m[f"R@{k}"]:>8.1f}%' for k in KS) + f'{m["median_rank"]:>9.1f}'
    lines.append(f'{tag:<14}{cells}')
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, source: backbone_lib.Source, test_data: Any,
        output_dir: str, *, calibration_data: Any = None) -> dict[str, Any]:
  """Ranks the test clips with `source` (and, per config.retrieval.compare_random_init, a
  random-init model of its architecture), writes retrieval.json and retrieval.png, returns the record.

  `calibration_data` (default: the test clips; no labels are read) sets the BN
  statistics of a random-init model.
  """
  calibration_data = calibration_data or test_data
  tag = {'workdir': 'pretrained'}.get(source.kind, source.kind)
  models = {tag: calibrate(config, source, calibration_data) if source.kind == 'random_init'
            else source}
  if source.kind != 'random_init' and config.retrieval.compare_random_init:
    models['random_init'] = calibrate(config, backbone_lib.random_init(config, like=source),
                                      calibration_data)
  record: dict[str, Any] = {'protocol': 'retrieval', 'headline_score': HEADLINE,
                            'score_definitions': {
                                'both': 'cos(h_narrow, z_audio) + cos(h_audio, z_narrow)',
                                'narrow_predicts_audio': 'cos(h_narrow, z_audio)',
                                'audio_predicts_narrow': 'cos(h_audio, z_narrow)',
                                'projections': 'cos(z_narrow, z_audio)'},
                            'data': str(test_data), 'calibration_data': str(calibration_data),
                            'checkpoint_step': source.step, 'models': {}}
  first = None
  for name, model_source in models.items():
    emb = embed_clips(config, model_source, test_data, desc=f'retrieval ({name})')
    first = first or emb
    if len(emb['video_index']) != len(first['video_index']) or np.any(
        emb['video_index'] != first['video_index']):
      raise RetrievalError('the models saw different clips (a record failed to decode for one?)')
    record['models'][name] = {'kind': model_source.kind, 'scores': evaluate_embeddings(emb)}
    if name == tag:
      pretrained_emb = emb
  num_clips = len(first['video_index'])
  if num_clips < 2:
    raise RetrievalError(f'{test_data!r} gives {num_clips} clip; retrieval needs at least 2')
  record['num_clips'] = num_clips
  record['chance'] = chance_metrics(num_clips)
  names = clip_names(test_data, first['video_index'])
  record['clips'] = names
  r, e = config.retrieval, retrieval_clips(config)
  record['settings'] = {'num_frames': e.num_frames, 'frame_step': e.frame_step,
                        'image_size': e.image_size, 'resize_short_side': e.resize_short_side,
                        'num_temporal_crops': e.num_temporal_crops,
                        'num_spatial_crops': e.num_spatial_crops,
                        'audio_window_seconds': _audio_seconds(config)}
  os.makedirs(output_dir, exist_ok=True)
  if r.plot_queries:
    plot_queries(os.path.join(output_dir, PLOT_FILE), pretrained_emb, names,
                 num_queries=int(r.plot_queries), top=int(r.plot_top),
                 title=f'{tag}: audio<->video retrieval over {num_clips} test clips '
                       '(frames show the clip each video or audio came from; green: true partner)')
  files.write_json(os.path.join(output_dir, JSON_FILE), record)
  return record


def run_request(config: ml_collections.ConfigDict, request: Any,
                output_dir: str) -> dict[str, Any]:
  """The protocol's entry (eval/protocols.py): checks the shards and the model's views, then `run`.

  Test clips: request.test_shards, else config.data.test_shards, else the
  embedded test split; request.train_shards (if any) calibrate random init's BN.
  """
  if request.tfds:
    raise errors.UsageError('retrieval reads DMVR shards with audio (--test_shards), not --tfds')
  named = request.test_shards or config.data.test_shards
  if named:  # The shards hold what retrieval needs? Checked once, before any model is built.
    from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
    reader.check_shard_features(named, video=True, audio=True, what='--protocol=retrieval')
  source = None
  if request.checkpoint or request.train_state is not None:  # The model says what it holds.
    source = request.source(config)
    modalities = source.broad_modalities
  else:
    modalities = tuple(config.data.broad_modalities)
  if 'audio' not in modalities:
    raise errors.UsageError(f'retrieval needs a model with an audio backbone (V/A, V/FA); this '
                            f'one has broad views {modalities}')
  source = source or request.source(config)
  test = named
  if not test:  # The embedded dataset's test split (it has audio).
    _, test, _ = request.splits(config)
  record = run(config, source, test, output_dir, calibration_data=request.train_shards or None)
  _LOG.info(format_table(record))
  _LOG.info(f'{record["num_clips"]} clips; wrote {os.path.join(output_dir, JSON_FILE)} '
            f'and {PLOT_FILE}')
  return record
