"""Linear evaluation of a narrow backbone end to end: embed both splits, fit the SVM, write the report.

`evaluate_backbone` serves the CLI (brave_jax/evaluate.py) and the end of
training (`evaluate_after_training`, called by main.py when
config.eval.run_after_training), so both follow one protocol
(ARCHITECTURE.md, "Linear evaluation"): the train split seen
config.eval.train_passes times with training augmentation, the test split as
num_temporal_crops x num_spatial_crops crops per video, predictions averaged.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from brave_jax.eval import embeddings as embeddings_lib
from brave_jax.eval import linear
from brave_jax.eval import report

RANDOM_INIT_SEED_OFFSET = 1_000_003  # random_init: PRNGKey(config.seed + this), not training's.
NARROW_ROOT = 'narrow_video_embedding'  # Haiku module root of the evaluated backbone.
BN_CALIBRATION_BATCHES = 20  # Eval-train batches that set a random-init backbone's BN statistics.


def resolve_shards(config: ml_collections.ConfigDict, train_shards: Any = None,
                   test_shards: Any = None) -> tuple[Any, Any, list[str] | None]:
  """(train, test, class names): empty arguments -> config.data.*_shards -> the synthetic set.

  The linear train split is config.data.train_shards (the pretraining shards,
  which must then carry labels) unless given explicitly.
  """
  train_shards = train_shards or config.data.train_shards
  test_shards = test_shards or config.data.test_shards
  if train_shards and test_shards:
    return train_shards, test_shards, None
  if bool(train_shards) != bool(test_shards):
    missing = 'test' if train_shards else 'train'
    raise ValueError(f'linear evaluation needs both splits: give --{missing}_shards (or '
                     f'config.data.{missing}_shards), or neither to use the embedded synthetic set')
  from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  # Same flag as training's call (main.train_shards), so both reuse one cached dataset.
  dataset = synthetic.ensure_dataset(config.data.synthetic,
                                     with_flow='flow' in config.data.broad_modalities)
  return dataset['train'], dataset['test'], list(dataset['class_names'])


def _eval_iterator(config: ml_collections.ConfigDict, shards: Any,
                   mode: str) -> Iterable[Mapping[str, np.ndarray]]:
  """mode 'train': config.eval.train_passes augmented passes (a video keeps its video_index);
  mode 'test': every multi-crop of every test video."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_eval_dataset(config, shards, mode=mode, batch_size=config.eval.batch_size)


def embed_splits(config: ml_collections.ConfigDict, embed_fn: Callable[..., Any],
                 train_shards: Any, test_shards: Any, *, variables: Any = None,
                 tag: str = '') -> dict[str, dict[str, np.ndarray]]:
  """{'train': embeddings of the augmented passes, 'test': embeddings of every test crop}."""
  return {
      'train': embeddings_lib.compute_embeddings(
          embed_fn, _eval_iterator(config, train_shards, 'train'), variables=variables,
          pad_to=config.eval.batch_size,
          desc=f'{tag} train x{config.eval.train_passes}'.strip()),
      'test': embeddings_lib.compute_embeddings(
          embed_fn, _eval_iterator(config, test_shards, 'test'), variables=variables,
          pad_to=config.eval.batch_size,
          desc=f'{tag} test'.strip()),
  }


def fit_and_report(config: ml_collections.ConfigDict,
                   splits: Mapping[str, Mapping[str, np.ndarray]], outdir: str | None, *,
                   svm_c: Any = None, class_names: Sequence[str] | None = None,
                   checkpoint_step: int | None = None, data: Mapping[str, Any] | None = None,
                   file_suffix: str = '', title: str = '') -> dict[str, Any]:
  """Fits the SVM on train clips, scores test videos; writes eval{suffix}.json, confusion{suffix}.png."""
  train, test = splits['train'], splits['test']
  svm_c = config.eval.svm_c if svm_c is None else svm_c
  missing = linear.labels_missing_from_train(train['labels'], test['labels'], test['video_index'])
  if missing:
    named = ', '.join(f'{k} ({class_names[k]!r})' if class_names and k < len(class_names) else str(k)
                      for k in missing)
    print(f'warning: test label(s) {named} never occur in the train split; their '
          f'{sum(missing.values())} test video(s) are scored as misses. Convert both splits with '
          'the same class list (--classes_file) if that is not intended.', file=sys.stderr,
          flush=True)
  result = linear.evaluate_linear(
      train['feats'], train['labels'], test['feats'], test['labels'], test['video_index'], svm_c,
      train_video_index=train['video_index'],
      num_classes=len(class_names) if class_names else None)
  data = dict(data or {})
  if missing:
    data['test_labels_missing_from_train'] = {str(k): n for k, n in missing.items()}
  data.setdefault('num_train_videos', int(len(np.unique(train['video_index']))))
  data.setdefault('num_test_videos', int(len(np.unique(test['video_index']))))
  record = report.eval_record(result, config=config, checkpoint_step=checkpoint_step, data=data,
                              class_names=class_names)
  if outdir:
    report.write_report(outdir, record, class_names=class_names,
                        json_name=f'eval{file_suffix}.json', png_name=f'confusion{file_suffix}.png',
                        title=title)
  return record


def _shard_list(shards: Any) -> Any:
  return list(shards) if isinstance(shards, (list, tuple)) else shards


def evaluate_backbone(config: ml_collections.ConfigDict, embed_fn: Callable[..., Any],
                      train_shards: Any, test_shards: Any, workdir_or_outdir: str | None, *,
                      save_embeddings: bool = False, tag: str = 'pretrained',
                      variables: Any = None, class_names: Sequence[str] | None = None,
                      checkpoint_step: int | None = None, svm_c: Any = None,
                      file_suffix: str = '') -> dict[str, Any]:
  """Linear-evaluates one backbone; returns the eval.json record (also written to the outdir).

  `embed_fn(video_BxTxHxWx3) -> feats_BxD`, or `embed_fn(variables, video)`
  when `variables` (e.g. (params, state)) are given. Empty shard arguments use
  config.data.{train,test}_shards, then the embedded synthetic dataset.
  """
  train_shards, test_shards, synthetic_names = resolve_shards(config, train_shards, test_shards)
  class_names = class_names or synthetic_names
  splits = embed_splits(config, embed_fn, train_shards, test_shards, variables=variables, tag=tag)
  data = {'train_shards': _shard_list(train_shards), 'test_shards': _shard_list(test_shards)}
  if save_embeddings and workdir_or_outdir:
    path = os.path.join(workdir_or_outdir, f'embeddings{file_suffix}.npz')
    embeddings_lib.save_embeddings(path, splits, metadata={
        'tag': tag, 'checkpoint_step': checkpoint_step, 'class_names': class_names, 'data': data})
    print(f'embeddings saved to {path}')
  return fit_and_report(config, splits, workdir_or_outdir, svm_c=svm_c, class_names=class_names,
                        checkpoint_step=checkpoint_step, data=data, file_suffix=file_suffix,
                        title=f'{tag}: test confusion (rows normalised)')


def narrow_embed_fn(model: Any) -> Callable[[Any, Any], Any]:
  """`(variables=(params, state), video) -> feats` for compute_embeddings, from a BraVe model."""
  def embed(variables, video_BxTxHxWx3):
    params, state = variables
    return model.embed_narrow(params, state, video_BxTxHxWx3)
  return embed


def _init_batch(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A one-example batch of zeros shaped like the training batch, for model.init."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  shapes = pipeline.batch_shapes(config)

  def zeros(shape):
    dtype = np.int32 if len(shape) == 0 else np.float32
    return np.zeros((1,) + tuple(shape), dtype)
  batch = jax.tree.map(zeros, shapes, is_leaf=lambda x: isinstance(x, tuple))
  batch['label'] = np.zeros((1,), np.int32)
  return batch


def narrow_only(tree: Any) -> Any:
  """The narrow backbone's modules of Haiku params/state (or a tuple): all embed_narrow reads."""
  if isinstance(tree, tuple):
    return tuple(narrow_only(t) for t in tree)
  return {k: v for k, v in tree.items() if k.split('/')[0] == NARROW_ROOT}


def calibrate_batch_norm(config: ml_collections.ConfigDict, model: Any, params: Any, state: Any,
                         batches: Iterable[Mapping[str, np.ndarray]],
                         num_batches: int = BN_CALIBRATION_BATCHES) -> Any:
  """BN moving statistics re-estimated on eval clips (training-mode forward passes; params unchanged).

  A fresh model's BN state is Haiku's zero-initialised moving averages
  (variance 0), so inference-mode features of an untrained network grow by
  ~1/sqrt(eps) per layer and overflow float32. Only model.loss updates BN
  state, so it runs on the clips with zero broad views (their statistics are
  never read by embed_narrow).
  """
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  broad_shapes = pipeline.batch_shapes(config)['broad']
  loss_fn = jax.jit(model.loss)
  rng = jax.random.PRNGKey(0)
  rows = None
  for i, batch in enumerate(batches):
    if i >= num_batches:
      break
    video = np.asarray(batch['video'])
    rows = rows or len(video)
    if len(video) != rows:  # A partial last batch would recompile; skip it.
      continue
    full = {'narrow': {'video': video},
            'broad': {m: np.zeros((rows,) + tuple(s), np.float32) for m, s in broad_shapes.items()},
            'label': np.asarray(batch['label'], np.int32)}
    _, (state, _) = loss_fn(params, state, rng, full)
  if rows is None:
    raise ValueError('calibrate_batch_norm: no batches; check the eval train shards')
  return state


def random_init_variables(config: ml_collections.ConfigDict, model: Any,
                          train_shards: Any) -> tuple[Any, Any]:
  """(params, state) of an untrained narrow backbone of the same architecture: the baseline to beat.

  Weights: model.init with a seed other than training's. BN statistics:
  re-estimated on eval-train clips (`calibrate_batch_norm`), without which an
  untrained network's inference features are not finite.
  """
  rng = jax.random.PRNGKey(config.seed + RANDOM_INIT_SEED_OFFSET)
  params, state = jax.jit(model.init)(rng, _init_batch(config))
  state = calibrate_batch_norm(config, model, params, state,
                               _eval_iterator(config, train_shards, 'train'))
  return narrow_only((params, state))


def restore_latest(config: ml_collections.ConfigDict, workdir: str,
                   model: Any) -> tuple[Any, Any, int]:
  """(params, state, step) of the newest checkpoint in `workdir/checkpoints` (train.loop's)."""
  from brave_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  from brave_jax.train import loop  # pylint: disable=g-import-not-at-top
  from brave_jax.train import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(os.path.abspath(os.path.expanduser(workdir)), loop.CHECKPOINT_SUBDIR)
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f'no checkpoints in {ckpt_dir}: is --workdir a training workdir '
                            '(python -m brave_jax.main --workdir=...)?')
  ckpt = checkpointing.Checkpointer(ckpt_dir, keep=max(1, int(config.training.keep_checkpoints)),
                                    async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f'no finished checkpoint in {ckpt_dir}; train longer or check the path')
    # The restore template only needs shapes: trace init on one device, allocate zeros.
    init = step_lib.make_init(model, optimizer_lib.make_optimizer(config), jax.local_devices()[:1])
    batch = jax.tree.map(lambda x: x[None], _init_batch(config))
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0), batch)
    template = jax.tree.map(lambda s: np.zeros(s.shape[1:], s.dtype), shapes)
    restored, _ = ckpt.restore(template, step)
  finally:
    ckpt.close()
  return restored.params, restored.state, int(np.asarray(restored.step))


def evaluate_after_training(config: ml_collections.ConfigDict, workdir: str,
                            train_state: Any) -> dict[str, Any]:
  """Pretrained (and optionally random-init) narrow backbone: results.json + confusion PNGs + a table.

  `train_state.params/.state` carry the leading device axis (replicated by the
  train loop); device 0's copy is evaluated. Only process 0 evaluates (the
  eval data is not split over hosts) and writes; other processes return {}.
  """
  if jax.process_index() != 0:
    return {}
  from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  model = brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name=None)
  embed = narrow_embed_fn(model)
  params, state = step_lib.unreplicate(narrow_only((train_state.params, train_state.state)))
  checkpoint_step = int(step_lib.unreplicate(train_state.step))
  train_shards, test_shards, class_names = resolve_shards(config)

  variants = {'pretrained': (params, state)}
  if config.eval.compare_random_init:
    variants['random_init'] = random_init_variables(config, model, train_shards)
  results = {}
  for tag, variables in variants.items():
    print(f'linear evaluation: {tag} narrow backbone')
    results[tag] = evaluate_backbone(
        config, embed, train_shards, test_shards, workdir, tag=tag, variables=variables,
        class_names=class_names, checkpoint_step=checkpoint_step, file_suffix=f'_{tag}')
  report.write_json(os.path.join(workdir, 'results.json'), results)
  print(report.format_table(results))
  return results
