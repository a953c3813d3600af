"""Audio evaluation of the broad audio backbone's frozen embeddings, as the paper reports it.

- ESC-50 style (`run_folds`): the dataset's fixed folds, read from its
  metadata CSV (a fold column keyed by file path, matched to each record's
  clip/id, the path the converter was given relative to --media_root: by the
  whole path, else by the unique row whose path ends like the clip's, so a
  CSV of bare ESC-50 file names still matches; a clip two rows could match,
  or a row two clips could match, is refused naming them); per fold a standardised linear SVM (eval/svm.py) is fitted on the
  other folds and scored on this one; mean and per-fold accuracy.
- AudioSet style (`run_multilabel`): several clip/label/index values per
  record; a linear or one-hidden-layer MLP head trained with sigmoid
  cross-entropy on the train split's embeddings; mean average precision
  (and mean ROC AUC) over the classes of the test split.

Each clip is embedded from config.audio_eval.num_windows log-mel windows of
the model's broad audio window (10.24 s at full size), evenly spaced and
averaged. A clip shorter than the window is looped, as the published pipeline
loops short clips; how many were is printed and recorded.
"""
from __future__ import annotations

import csv
import os
import posixpath
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from brave_jax import errors
from brave_jax import files
from brave_jax import log
from brave_jax.eval import backbone as backbone_lib
from brave_jax.eval import embeddings as embeddings_lib
from brave_jax.eval import report
from brave_jax.eval import svm

_LOG = log.get_logger(__name__)

ROOT = backbone_lib.AUDIO_ROOT
FOLD_COLUMNS = ('fold',)  # ESC-50's meta/esc50.csv: filename,fold,target,category,...
ID_COLUMNS = ('filename', 'file', 'path', 'clip_id', 'slice_file_name')


class AudioEvalError(errors.RunError, ValueError):
  """Audio data or metadata the protocol cannot use (a RunError: the CLI prints it as one line)."""


# ----------------------------------------------------------------------------- embeddings


def _audio_iterator(config: ml_collections.ConfigDict, source: Any, num_classes: int | None):
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_audio_eval_dataset(
      config, source, batch_size=int(config.audio_eval.batch_size),
      num_windows=int(config.audio_eval.num_windows), num_classes=num_classes)


def prepare_source(config: ml_collections.ConfigDict, source: backbone_lib.Source,
                   calibration_data: Any) -> backbone_lib.Source:
  """The source, with BN statistics of a random-init audio backbone re-estimated on clips."""
  if source.kind != 'random_init':
    return source
  return backbone_lib.calibrate_batch_norm(config, source,
                                           _audio_iterator(config, calibration_data, None),
                                           input_key='audio')


def embed_clips(config: ml_collections.ConfigDict, source: backbone_lib.Source, data: Any, *,
                num_classes: int | None = None, desc: str = 'audio') -> dict[str, np.ndarray]:
  """Per clip: 'feats' [C, D] (windows averaged), 'labels' [C], 'clip_id' [C], 'num_samples' [C],
  and with `num_classes` 'targets' [C, num_classes] (multi-hot)."""
  extra = ('clip_id', 'num_samples') + (('labels',) if num_classes else ())
  rows = embeddings_lib.compute_embeddings(
      backbone_lib.embed_fn(source.model, ROOT), _audio_iterator(config, data, num_classes),
      variables=source.variables(ROOT), input_key='audio',
      pad_to=int(config.audio_eval.batch_size), desc=desc, extra_keys=extra)
  if num_classes:
    rows['targets'] = rows.pop('labels')
    rows['labels'] = rows['targets'].argmax(axis=1)  # Unused for multi-label; kept for grouping.
  clips, feats, first = embeddings_lib.average_per_video(rows['feats'], rows['video_index'])
  out = {'feats': feats.astype(np.float32),
         'labels': rows['labels'][first], 'video_index': clips,
         'clip_id': np.array([c.decode() if isinstance(c, bytes) else str(c)
                              for c in rows['clip_id'][first]]),
         'num_samples': rows['num_samples'][first]}
  if num_classes:
    out['targets'] = rows['targets'][first]
  return out


def window_samples(config: ml_collections.ConfigDict) -> int:
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.audio_num_samples(config)


def looping_note(config: ml_collections.ConfigDict, num_samples_C: np.ndarray) -> dict[str, Any]:
  """How many clips were shorter than the model's window (and so looped), for the log and JSON."""
  window = window_samples(config)
  rate = float(config.data.audio_sample_rate)
  short = int(np.sum(num_samples_C < window))
  note = {'window_seconds': window / rate, 'looped_clips': short, 'num_clips': int(len(num_samples_C)),
          'shortest_clip_seconds': float(num_samples_C.min() / rate) if len(num_samples_C) else None}
  if short:
    _LOG.info(f'audio: {short} of {len(num_samples_C)} clips are shorter than the model\'s '
              f'{window / rate:.2f} s window and were looped (repeated from their start), as the '
              'published pipeline does')
  return note


# ----------------------------------------------------------------------------- ESC-style folds


def _column(header: Sequence[str], candidates: Sequence[str], given: str | None, path: str,
            what: str) -> int:
  lowered = [h.strip().lower() for h in header]
  for name in ([given] if given else list(candidates)):
    if name and name.lower() in lowered:
      return lowered.index(name.lower())
  raise AudioEvalError(f'{path}: no {what} column (looked for {[given] if given else candidates}; '
                       f'header: {header}); name it with --{what}_column')


def clip_key(path: str) -> str:
  """A clip's (or CSV row's) path as the fold key: '/' separators, no './', no `#t=` suffix.

  The converter stores the path it was given, relative to --media_root, as clip/id
  (cut clips append `#t=<start>` to their source's), so the key is that path.
  """
  path = path.strip().replace('\\', '/').split('#t=')[0]
  return posixpath.normpath(path).lstrip('/') if path else ''


def read_folds(csv_path: str, *, id_column: str | None = None,
               fold_column: str | None = None) -> dict[str, str]:
  """{file path key (clip_key): fold} from a metadata CSV with a header (ESC-50: meta/esc50.csv).

  A path listed twice with different folds is refused, naming the rows.
  """
  if not os.path.isfile(csv_path):
    raise FileNotFoundError(f'--folds_csv={csv_path!r} does not exist')
  try:
    with open(csv_path, newline='') as f:
      rows = list(csv.reader(f))
  except (csv.Error, UnicodeDecodeError) as e:
    raise AudioEvalError(f'--folds_csv={csv_path}: not a readable CSV ({type(e).__name__}: '
                         f'{e}); give the metadata CSV, e.g. ESC-50 meta/esc50.csv') from e
  if len(rows) < 2:
    raise AudioEvalError(f'{csv_path}: needs a header row and at least one clip')
  header = rows[0]
  id_i = _column(header, ID_COLUMNS, id_column, csv_path, 'id')
  fold_i = _column(header, FOLD_COLUMNS, fold_column, csv_path, 'fold')
  folds: dict[str, str] = {}
  first_line: dict[str, int] = {}
  conflicts = []
  for line_no, row in enumerate(rows[1:], 2):
    if not row or not ''.join(row).strip():
      continue
    if len(row) <= max(id_i, fold_i):
      raise AudioEvalError(f'{csv_path}:{line_no}: too few columns: {row}')
    key, fold = clip_key(row[id_i]), row[fold_i].strip()
    if not key or not fold:
      raise AudioEvalError(f'{csv_path}:{line_no}: empty {header[id_i]!r} or {header[fold_i]!r} '
                           f'field: {row}')
    if key in folds and folds[key] != fold:
      conflicts.append(f'{key!r} (lines {first_line[key]} and {line_no})')
    folds.setdefault(key, fold)
    first_line.setdefault(key, line_no)
  if conflicts:
    raise AudioEvalError(f'{csv_path}: {len(conflicts)} path(s) listed twice with different '
                         f'folds: {", ".join(conflicts[:5])}; each clip needs one fold')
  return folds


def _suffix_match(a: str, b: str) -> bool:
  """True when one path is the other or ends with it at a '/' boundary ('x/y/k.ogg', 'y/k.ogg')."""
  return a == b or a.endswith('/' + b) or b.endswith('/' + a)


def _tail_matches(key: str, by_name: Mapping[str, list[str]]) -> list[str]:
  """CSV paths that end like `key` or that `key` ends like (extension optional), sorted."""
  base = posixpath.basename(key)
  stem = posixpath.splitext(key)[0]
  near = by_name.get(base, []) + by_name.get(posixpath.splitext(base)[0], [])
  return sorted({k for k in near
                 if any(_suffix_match(a, b) for a in (key, stem)
                        for b in (k, posixpath.splitext(k)[0]))})


def assign_folds(clip_ids: Sequence[str], folds: Mapping[str, str], csv_path: str) -> np.ndarray:
  """The fold of each clip, matched by path; every clip must match exactly one CSV row.

  A clip's path (clip_key of its clip/id) matches the CSV row with the same path, else
  the one row whose path ends like the clip's or is a tail of it (bare ESC-50 file names
  against clips under an `audio/` folder), ignoring a missing extension. Two rows that
  could match one clip, or one row matched by two clips (repeated file names in nested
  folders against a CSV of bare names), make the key ambiguous: refused, naming them,
  since a guess would put clips in the wrong fold.
  """
  by_name: dict[str, list[str]] = {}
  for key in folds:
    by_name.setdefault(posixpath.basename(key), []).append(key)
    by_name.setdefault(posixpath.splitext(posixpath.basename(key))[0], []).append(key)
  found, missing, ambiguous = [], [], []
  row_of: dict[str, list[str]] = {}
  for clip in clip_ids:
    key = clip_key(clip)
    candidates = [key] if key in folds else _tail_matches(key, by_name)
    found.append(folds[candidates[0]] if len(candidates) == 1 else None)
    if len(candidates) == 1:
      row_of.setdefault(candidates[0], []).append(clip)
    elif candidates:
      ambiguous.append(f'clip {clip!r} matches rows {candidates[:3]}')
    else:
      missing.append(clip)
  shared = [f'row {row!r} matches clips {clips[:3]}' for row, clips in row_of.items()
            if len(clips) > 1]
  if ambiguous or shared:
    problems = ambiguous + shared
    raise AudioEvalError(
        f'{csv_path}: {len(problems)} ambiguous clip/row match(es): {"; ".join(problems[:3])}'
        f'{" ..." if len(problems) > 3 else ""}; list each clip in the CSV by the path the '
        'converter was given (relative to --media_root), e.g. de/alpha/k.ogg, not its file name')
  if missing:
    raise AudioEvalError(f'{len(missing)} clip(s) are not in {csv_path}, e.g. {missing[:3]}; the '
                         "CSV's file paths must match the records' clip/id (the path the converter "
                         'was given, relative to --media_root)')
  return np.asarray(found)


def shard_clip_ids(shards: Any) -> list[str]:
  """Every record's clip/id, read from the shards' context only (a quick pass, no audio decode)."""
  from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top
  from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files_ = reader.list_shards(shards)
  features = {dmvr_format.VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value='')}
  ds = tf.data.TFRecordDataset(files_).map(
      lambda r: tf.io.parse_single_sequence_example(r, context_features=features)[0][
          dmvr_format.VIDEO_ID_KEY]).ignore_errors(log_warning=False).batch(1024)
  return [c.decode() for batch in ds for c in batch.numpy()]


def check_folds_cover(shards: Any, folds_csv: str, *, id_column: str | None = None,
                      fold_column: str | None = None) -> dict[str, str]:
  """Reads the folds CSV and matches every shard record to one fold, before any model is built.

  Raises AudioEvalError (one line) for a CSV that does not parse, lacks the columns,
  lists a clip twice, or does not cover the shards; returns the folds.
  """
  folds = read_folds(folds_csv, id_column=id_column, fold_column=fold_column)
  ids = shard_clip_ids(shards)
  if not ids:
    raise AudioEvalError(f'--audio_shards={shards}: no readable record with a clip/id')
  assigned = assign_folds(ids, folds, folds_csv)
  if len(set(assigned.tolist())) < 2:
    raise AudioEvalError(f'{folds_csv}: the {len(ids)} clips of the shards fall in '
                         f'{sorted(set(assigned.tolist()))}; the protocol needs at least 2 folds')
  return folds


def _fold_sort_key(fold: str) -> tuple[int, Any]:
  return (0, int(fold)) if fold.isdigit() else (1, fold)


def evaluate_folds(feats_CxD: np.ndarray, labels_C: np.ndarray, folds_C: np.ndarray,
                   svm_c: Any, num_classes: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
  """Per fold: SVM fit on the other folds, accuracy on this one; plus mean, sd and summed confusion.

  The fits take minutes on a large set (more with svm_c='auto'), so a bar counts the folds.
  """
  labels_C = np.asarray(labels_C).reshape(-1)
  if labels_C.min() < 0:
    raise AudioEvalError('some clips have no label (clip/label/index); ESC-style folds need one')
  num_classes = num_classes or int(labels_C.max()) + 1
  names = sorted({str(f) for f in folds_C}, key=_fold_sort_key)
  if len(names) < 2:
    raise AudioEvalError(f'need at least 2 folds, the metadata gives {names}')
  per_fold, chosen_c = {}, {}
  confusion_KxK = np.zeros((num_classes, num_classes), np.int64)
  bar = tqdm.tqdm(names, desc='SVM per fold', unit='fold', disable=not progress)
  for fold in bar:
    test_C = folds_C == fold
    model = svm.fit_linear_svm(feats_CxD[~test_C], labels_C[~test_C], svm_c)
    scores = svm.class_scores(model, feats_CxD[test_C], num_classes)
    predicted = np.argmax(scores, axis=1)
    np.add.at(confusion_KxK, (labels_C[test_C], predicted), 1)
    per_fold[fold] = float(np.mean(predicted == labels_C[test_C]))
    chosen_c[fold] = float(model.named_steps['svm'].C)
  accs = np.array(list(per_fold.values()))
  return {'mean_accuracy': float(accs.mean()), 'std_accuracy': float(accs.std(ddof=1)),
          'per_fold_accuracy': per_fold, 'svm_c': chosen_c,
          'confusion_matrix': confusion_KxK.tolist(), 'num_folds': len(names)}


def plot_folds(path: str, per_fold: Mapping[str, float], title: str = '') -> str:
  """Bar chart of per-fold accuracy with the mean as a line."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  folds = list(per_fold)
  values = [100 * per_fold[f] for f in folds]
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.bar(range(len(folds)), values, color='tab:blue')
  ax.axhline(np.mean(values), color='tab:red', linestyle='--', label=f'mean {np.mean(values):.1f}%')
  ax.set_xticks(range(len(folds)), [f'fold {f}' for f in folds])
  ax.set_ylabel('test accuracy (%)')
  ax.set_ylim(0, 100)
  ax.set_title(title or 'accuracy per fold')
  ax.legend()
  fig.tight_layout()
  return files.save_figure(fig, path)


def run_folds(config: ml_collections.ConfigDict, source: backbone_lib.Source, data: Any,
              folds_csv: str, output_dir: str | None, *, class_names: Sequence[str] | None = None,
              id_column: str | None = None, fold_column: str | None = None,
              svm_c: Any = None, tag: str | None = None) -> dict[str, Any]:
  """ESC-50-style evaluation; writes audio_eval.json, folds.png and confusion.png to output_dir."""
  tag = tag or source.kind
  folds = read_folds(folds_csv, id_column=id_column, fold_column=fold_column)
  source = prepare_source(config, source, data)
  clips = embed_clips(config, source, data, desc=f'{tag} audio')
  folds_C = assign_folds(clips['clip_id'], folds, folds_csv)
  svm_c = config.eval.svm_c if svm_c is None else svm_c
  num_classes = len(class_names) if class_names else None
  result = evaluate_folds(clips['feats'], clips['labels'], folds_C, svm_c, num_classes)
  record = {'protocol': 'audio_folds', 'backbone': tag, 'checkpoint_step': source.step,
            **result, **looping_note(config, clips['num_samples']),
            'num_windows': int(config.audio_eval.num_windows), 'folds_csv': folds_csv,
            'class_names': list(class_names) if class_names else None}
  _LOG.info(f'audio ({tag}): mean accuracy {100 * result["mean_accuracy"]:.1f}% '
            f'(sd {100 * result["std_accuracy"]:.1f}) over {result["num_folds"]} folds: ' +
            ', '.join(f'{f}: {100 * a:.1f}%' for f, a in result['per_fold_accuracy'].items()))
  if output_dir:
    report.write_json(os.path.join(output_dir, 'audio_eval.json'), record)
    plot_folds(os.path.join(output_dir, 'folds.png'), result['per_fold_accuracy'],
               title=f'{tag}: accuracy per fold')
    report.plot_confusion(os.path.join(output_dir, 'confusion.png'), result['confusion_matrix'],
                          class_names, title=f'{tag}: confusion summed over folds')
  return record


# ----------------------------------------------------------------------------- AudioSet-style


def train_multilabel_head(train_x: np.ndarray, train_y: np.ndarray,
                          config: ml_collections.ConfigDict, seed: int = 0):
  """A linear or MLP head fitted with Adam on sigmoid cross-entropy; returns `scores(x) -> [N, K]`.

  Features are standardised with the train split's mean and sd first.
  """
  a = config.audio_eval
  mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
  x = jnp.asarray((train_x - mean) / std, jnp.float32)
  y = jnp.asarray(train_y, jnp.float32)
  num_classes = y.shape[1]
  key = jax.random.PRNGKey(seed)
  k1, k2, key = jax.random.split(key, 3)
  d = x.shape[1]
  if a.head == 'mlp':
    h = int(a.hidden_dim)
    params = {'w1': jax.random.normal(k1, (d, h)) * np.sqrt(2.0 / d), 'b1': jnp.zeros(h),
              'w2': jax.random.normal(k2, (h, num_classes)) * np.sqrt(1.0 / h),
              'b2': jnp.zeros(num_classes)}
  else:
    params = {'w2': jnp.zeros((d, num_classes)), 'b2': jnp.zeros(num_classes)}

  def logits(p, x):
    if 'w1' in p:
      x = jax.nn.relu(x @ p['w1'] + p['b1'])
    return x @ p['w2'] + p['b2']

  optimizer = optax.adamw(float(a.learning_rate), weight_decay=float(a.weight_decay))
  opt_state = optimizer.init(params)

  @jax.jit
  def step(p, s, xb, yb):
    def loss(p):
      return jnp.mean(optax.sigmoid_binary_cross_entropy(logits(p, xb), yb))
    value, grads = jax.value_and_grad(loss)(p)
    updates, s = optimizer.update(grads, s, p)
    return optax.apply_updates(p, updates), s, value

  batch = min(int(a.head_batch_size), len(train_x))
  rng = np.random.default_rng(seed)
  for _ in range(int(a.epochs)):
    order = rng.permutation(len(train_x))
    for i in range(0, len(order) - batch + 1, batch):
      idx = order[i:i + batch]
      params, opt_state, _ = step(params, opt_state, x[idx], y[idx])

  def scores(features):
    return np.asarray(jax.nn.sigmoid(logits(params, jnp.asarray((features - mean) / std))))
  return scores


def multilabel_metrics(scores_NxK: np.ndarray, targets_NxK: np.ndarray) -> dict[str, Any]:
  """mAP over classes with a positive test clip; mAUC over classes with positives and negatives."""
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  targets_NxK = np.asarray(targets_NxK) > 0.5
  ap, auc = {}, {}
  for k in range(targets_NxK.shape[1]):
    positives = int(targets_NxK[:, k].sum())
    if positives:
      ap[k] = float(sk_metrics.average_precision_score(targets_NxK[:, k], scores_NxK[:, k]))
      if positives < len(targets_NxK):
        auc[k] = float(sk_metrics.roc_auc_score(targets_NxK[:, k], scores_NxK[:, k]))
  if not ap:
    raise AudioEvalError('the test split has no positive label for any class')
  return {'mAP': float(np.mean(list(ap.values()))),
          'mAUC': float(np.mean(list(auc.values()))) if auc else None,
          'per_class_ap': {str(k): v for k, v in ap.items()},
          'num_scored_classes': len(ap)}


def plot_ap(path: str, per_class_ap: Mapping[str, float], class_names: Sequence[str] | None,
            title: str = '') -> str:
  """Per-class average precision, sorted, as a bar chart."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  items = sorted(per_class_ap.items(), key=lambda kv: -kv[1])
  fig, ax = plt.subplots(figsize=(max(6, min(0.25 * len(items), 40)), 4))
  ax.bar(range(len(items)), [v for _, v in items])
  if len(items) <= 60:
    names = [class_names[int(k)] if class_names and int(k) < len(class_names) else k
             for k, _ in items]
    ax.set_xticks(range(len(items)), names, rotation=90, fontsize=7)
  ax.set_ylabel('average precision')
  ax.set_ylim(0, 1)
  ax.set_title(title or 'AP per class')
  fig.tight_layout()
  return files.save_figure(fig, path)


def run_multilabel(config: ml_collections.ConfigDict, source: backbone_lib.Source,
                   train_data: Any, test_data: Any, num_classes: int, output_dir: str | None, *,
                   class_names: Sequence[str] | None = None,
                   tag: str | None = None) -> dict[str, Any]:
  """AudioSet-style evaluation; writes audio_eval.json and ap.png to output_dir."""
  tag = tag or source.kind
  source = prepare_source(config, source, train_data)
  train = embed_clips(config, source, train_data, num_classes=num_classes, desc=f'{tag} train')
  test = embed_clips(config, source, test_data, num_classes=num_classes, desc=f'{tag} test')
  scores = train_multilabel_head(train['feats'], train['targets'], config, seed=int(config.seed))
  result = multilabel_metrics(scores(test['feats']), test['targets'])
  record = {'protocol': 'audio_multilabel', 'backbone': tag, 'checkpoint_step': source.step,
            'head': config.audio_eval.head, **result,
            'train': looping_note(config, train['num_samples']),
            'test': looping_note(config, test['num_samples']),
            'num_classes': int(num_classes),
            'class_names': list(class_names) if class_names else None}
  _LOG.info(f'audio ({tag}, {config.audio_eval.head} head): mAP {result["mAP"]:.3f}, mAUC '
            f'{result["mAUC"] if result["mAUC"] is None else round(result["mAUC"], 3)} over '
            f'{result["num_scored_classes"]} classes')
  if output_dir:
    report.write_json(os.path.join(output_dir, 'audio_eval.json'), record)
    plot_ap(os.path.join(output_dir, 'ap.png'), result['per_class_ap'], class_names,
            title=f'{tag}: test AP per class (mAP {result["mAP"]:.3f})')
  return record


# ----------------------------------------------------------------------------- the protocol


def run_request(config: ml_collections.ConfigDict, request: Any,
                output_dir: str) -> dict[str, Any]:
  """The protocol's entry (eval/protocols.py): AudioSet-style with request.multilabel, else
  ESC-style folds (request.audio_shards + folds_csv, or the embedded ESC-style audio split)."""
  from brave_jax.eval import splits as splits_lib  # pylint: disable=g-import-not-at-top
  if request.multilabel:
    train, test, class_names = request.splits(config)
    num_classes = request.num_classes or (len(class_names) if class_names else None)
    if not num_classes:
      raise errors.UsageError('--multilabel needs --num_classes (no class list found beside the '
                              'shards)')
    return run_multilabel(config, request.source(config), train, test, num_classes, output_dir,
                          class_names=class_names)
  if request.tfds:
    raise errors.UsageError('ESC-style folds need DMVR shards (--audio_shards) and --folds_csv; '
                            'TFDS examples carry no file names to match the folds to')
  if bool(request.audio_shards) != bool(request.folds_csv):
    raise errors.UsageError('ESC-style audio evaluation needs both --audio_shards and --folds_csv '
                            '(or neither: the embedded ESC-style audio split)')
  if request.audio_shards:  # Every input the command names is checked before the model is built.
    check_folds_cover(request.audio_shards, request.folds_csv, id_column=request.id_column,
                      fold_column=request.fold_column)
    class_names = splits_lib.shard_class_names(request.audio_shards)
  source = request.source(config)
  if request.audio_shards:
    data, folds_csv = request.audio_shards, request.folds_csv
  else:
    from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    a = config.audio_eval.synthetic
    dataset = synthetic.ensure_audio_dataset(
        config.data.synthetic, num_folds=int(a.num_folds), clips_per_fold=int(a.clips_per_fold),
        seconds=float(a.seconds), snr_db=tuple(a.snr_db))
    data, folds_csv, class_names = dataset['audio'], dataset['folds_csv'], dataset['class_names']
  return run_folds(config, source, data, folds_csv, output_dir, class_names=class_names,
                   id_column=request.id_column, fold_column=request.fold_column)
