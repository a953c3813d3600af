"""The linear protocol end to end: embed both splits with a frozen backbone, fit the SVM, report.

`run_request` (the protocol's entry, eval/protocols.py) serves the CLI
(`python -m brave_jax.evaluate`, the default protocol) and the end of training
(`evaluate_after_training`, when config.eval.run_after_training), so both
follow one protocol (docs/design.md, "Linear evaluation"): the train split seen
config.eval.train_passes times with training augmentation, the test split as
num_temporal_crops x num_spatial_crops crops per video, predictions averaged.
The classifier math lives in eval/svm.py.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from brave_jax import log
from brave_jax.eval import backbone as backbone_lib
from brave_jax.eval import embeddings as embeddings_lib
from brave_jax.eval import report
from brave_jax.eval import splits as splits_lib
from brave_jax.eval import svm

_LOG = log.get_logger(__name__)


def eval_iterator(config: ml_collections.ConfigDict, source: Any,
                  mode: str) -> Iterable[Mapping[str, np.ndarray]]:
  """mode 'train': config.eval.train_passes augmented passes (a video keeps its video_index);
  mode 'test': every multi-crop of every test video. The one place protocols get eval clips."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_eval_dataset(config, source, mode=mode, batch_size=config.eval.batch_size)


def embed_splits(config: ml_collections.ConfigDict, embed_fn: Callable[..., Any],
                 train_source: Any, test_source: Any, *, variables: Any = None,
                 tag: str = '') -> dict[str, dict[str, np.ndarray]]:
  """{'train': embeddings of the augmented passes, 'test': embeddings of every test crop}."""
  return {
      'train': embeddings_lib.compute_embeddings(
          embed_fn, eval_iterator(config, train_source, 'train'), variables=variables,
          pad_to=config.eval.batch_size,
          desc=f'{tag} train x{config.eval.train_passes}'.strip()),
      'test': embeddings_lib.compute_embeddings(
          embed_fn, eval_iterator(config, test_source, 'test'), variables=variables,
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
  missing = svm.labels_missing_from_train(train['labels'], test['labels'], test['video_index'])
  if missing:
    named = ', '.join(f'{k} ({class_names[k]!r})' if class_names and k < len(class_names) else str(k)
                      for k in missing)
    _LOG.warning(f'test label(s) {named} never occur in the train split; their '
                 f'{sum(missing.values())} test video(s) are scored as misses. Convert both '
                 'splits with the same class list (--classes_file) if that is not intended.')
  result = svm.evaluate_linear(
      train['feats'], train['labels'], test['feats'], test['labels'], test['video_index'], svm_c,
      train_video_index=train['video_index'],
      num_classes=len(class_names) if class_names else None,
      transform=config.eval.get('feature_transform', 'standardize'),
      cv_unit=config.eval.get('svm_c_cv_unit', 'video'))
  data = dict(data or {})
  if missing:
    data['test_labels_missing_from_train'] = {str(k): n for k, n in missing.items()}
  data.setdefault('num_train_videos', int(len(np.unique(train['video_index']))))
  data.setdefault('num_test_videos', int(len(np.unique(test['video_index']))))
  record = report.eval_record(result, config=config, checkpoint_step=checkpoint_step, data=data,
                              class_names=class_names)
  record['protocol'] = 'linear'
  record['feature_transform'] = result['feature_transform']  # What 'auto' chose, with svm_c.
  if outdir:
    report.write_report(outdir, record, class_names=class_names,
                        json_name=f'eval{file_suffix}.json', png_name=f'confusion{file_suffix}.png',
                        title=title)
  return record


def evaluate_backbone(config: ml_collections.ConfigDict, embed_fn: Callable[..., Any],
                      train_source: Any, test_source: Any, outdir: str | None, *,
                      save_embeddings: bool = False, tag: str = 'pretrained',
                      variables: Any = None, class_names: Sequence[str] | None = None,
                      checkpoint_step: int | None = None, svm_c: Any = None,
                      file_suffix: str = '') -> dict[str, Any]:
  """Linear-evaluates one backbone; returns the eval.json record (also written to `outdir`).

  `embed_fn(video_BxTxHxWx3) -> feats_BxD`, or `embed_fn(variables, video)`
  when `variables` (e.g. (params, state)) are given. Sources are what
  splits.resolve returns (shards, a TFDS split).
  """
  splits = embed_splits(config, embed_fn, train_source, test_source, variables=variables, tag=tag)
  data = {'train_shards': splits_lib.describe(train_source),
          'test_shards': splits_lib.describe(test_source)}
  if save_embeddings and outdir:
    path = os.path.join(outdir, f'embeddings{file_suffix}.npz')
    embeddings_lib.save_embeddings(path, splits, metadata={
        'tag': tag, 'checkpoint_step': checkpoint_step, 'class_names': class_names, 'data': data})
    _LOG.info(f'embeddings saved to {path}')
  return fit_and_report(config, splits, outdir, svm_c=svm_c, class_names=class_names,
                        checkpoint_step=checkpoint_step, data=data, file_suffix=file_suffix,
                        title=f'{tag}: test confusion (rows normalised)')


def evaluate_source(config: ml_collections.ConfigDict, source: backbone_lib.Source,
                    train_source: Any, test_source: Any, outdir: str | None, *,
                    class_names: Sequence[str] | None = None, tag: str | None = None,
                    **kwargs: Any) -> dict[str, Any]:
  """Linear-evaluates a source's narrow backbone (calibrating BN first for random init)."""
  if source.kind == 'random_init':
    source = backbone_lib.calibrate_batch_norm(config, source,
                                               eval_iterator(config, train_source, 'train'))
  from brave_jax.eval import protocols  # pylint: disable=g-import-not-at-top
  return evaluate_backbone(
      config, backbone_lib.embed_fn(source.model), train_source, test_source, outdir,
      variables=source.variables(backbone_lib.NARROW_ROOT), class_names=class_names,
      checkpoint_step=source.step, tag=tag or protocols.tag(source), **kwargs)


def evaluate_after_training(config: ml_collections.ConfigDict, workdir: str,
                            train_state: Any) -> dict[str, Any]:
  """Pretrained (and optionally random-init) narrow backbone: results.json + confusion PNGs + a table.

  `train_state.params/.state` carry the leading device axis (replicated by the
  train loop); device 0's copy is evaluated. Only process 0 evaluates (the
  eval data is not split over hosts) and writes; other processes return {}.
  """
  if jax.process_index() != 0:
    return {}
  pretrained = backbone_lib.from_train_state(config, train_state)
  train_source, test_source, class_names = splits_lib.resolve(config)
  variants = {'pretrained': pretrained}
  if config.eval.compare_random_init:  # Labelled with the step it is compared at.
    variants['random_init'] = dataclasses.replace(backbone_lib.random_init(config),
                                                  step=pretrained.step)
  results = {}
  for tag, source in variants.items():
    _LOG.info(f'linear evaluation: {tag} narrow backbone')
    results[tag] = evaluate_source(config, source, train_source, test_source, workdir, tag=tag,
                                   class_names=class_names, file_suffix=f'_{tag}',
                                   save_embeddings=bool(config.eval.get('save_embeddings', False)))
  report.write_json(os.path.join(workdir, 'results.json'), results)
  _LOG.info(report.format_table(results))
  return results


def run_request(config: ml_collections.ConfigDict, request: Any,
                output_dir: str) -> dict[str, Any]:
  """The protocol's entry (eval/protocols.py): a model on labelled splits, a re-fit of saved
  embeddings (request.embeddings), or the end of pretraining (request.train_state)."""
  from brave_jax.eval import protocols  # pylint: disable=g-import-not-at-top
  if request.train_state is not None:
    return evaluate_after_training(config, output_dir, request.train_state)
  if request.embeddings:  # --workdir/--config then only supply the config.
    splits, metadata = embeddings_lib.load_embeddings(request.embeddings)
    if not {'train', 'test'} <= set(splits):
      raise ValueError(f'{request.embeddings} holds splits {sorted(splits)}; it needs train and '
                       'test')
    record = fit_and_report(config, splits, output_dir, class_names=metadata.get('class_names'),
                            checkpoint_step=metadata.get('checkpoint_step'),
                            data=metadata.get('data'))
    tag = 'refit'
  else:
    source = request.source(config)
    train, test, class_names = request.splits(config)
    tag = protocols.tag(source)
    record = evaluate_source(config, source, train, test, output_dir, tag=tag,
                             class_names=class_names, save_embeddings=request.save_embeddings)
  _LOG.info(report.format_table({tag: record}))
  _LOG.info(f'wrote {os.path.join(output_dir, "eval.json")} and confusion.png')
  return record
