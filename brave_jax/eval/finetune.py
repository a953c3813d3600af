"""The fine-tuning protocol: the narrow backbone plus a linear head, trained end to end on labels.

Trained by the pretraining loop itself (train/loop.py: the pmapped update of
train/step.py with cross-replica batch norm over every device of every
process, Orbax checkpoints in the output directory that a rerun resumes,
metrics.jsonl, TensorBoard, loss.png, the progress line), with its own
settings (config.finetune's steps and intervals), model
(models/classifier.py), optimizer and data:

- model: the backbone (pretrained weights from a workdir or a published .npy,
  or random init), dropout, a linear head (config.finetune.dropout_rate);
- optimizer: SGD with Nesterov momentum (or AdamW), linear warm-up then
  cosine decay, weight decay on weights only, the backbone's updates scaled by
  config.finetune.backbone_lr_multiplier;
- train clips: made as the linear protocol's (random window of
  config.eval.num_frames, random crop, flip, colour jitter, greyscale), the
  flip, jitter and greyscale inside the step when config.data.augment_on is
  'device';
- test: the linear protocol's multi-crop clips (pipeline.make_eval_dataset
  mode 'test'), softmax scores averaged per video.

Writes <output_dir>/eval.json (the linear protocol's fields, plus the loss
curve), confusion.png and loss.png.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import optax

from brave_jax import config_base
from brave_jax import log
from brave_jax.eval import backbone as backbone_lib
from brave_jax.eval import embeddings as embeddings_lib
from brave_jax.eval import linear
from brave_jax.eval import report
from brave_jax.eval import splits as splits_lib
from brave_jax.eval import svm
from brave_jax.train import loop

_LOG = log.get_logger(__name__)

REFERENCE_BATCH = 64  # config.finetune.base_learning_rate is the peak LR at this global batch.
TRAIN_ACCURACY_TAIL = 0.1  # Train top-1 = mean logged batch accuracy over the last 10% of steps.


def training_config(config: ml_collections.ConfigDict,
                    model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config a fine-tuning run records: config.finetune's batch, steps and logging as `training`.

  Written to <output_dir>/config.json, so the run can be read back, and a
  rerun is compared with it before it resumes. No pipeline reads it (they take
  `config`); only the classifier reads its model, the checkpoint's architecture.
  """
  # A copy because it is a record of a different run (a fine-tuning one), not a way to steer one.
  c = copy.deepcopy(config)
  f = c.finetune
  with c.unlocked():
    c.model = copy.deepcopy(model_config)  # The checkpoint's architecture...
    c.model.update(compute_dtype=config.model.compute_dtype,  # ...run as this config asks.
                   remat=bool(config.model.remat))
    c.training.update(batch_size=int(f.batch_size), num_steps=int(f.num_steps),
                      log_every=int(f.log_every), checkpoint_every=int(f.checkpoint_every),
                      keep_checkpoints=int(f.keep_checkpoints), plot_every=0)
    c.optimizer.warmup_steps = int(f.warmup_steps)
    c.eval.run_after_training = False
    c.knn_monitor.every_steps = 0
  return c


def settings(config: ml_collections.ConfigDict,
             stop_at_step: int | None = None) -> loop.Settings:
  """config.finetune's length and intervals (no periodic loss.png: it is drawn at the end)."""
  f = config.finetune
  return loop.Settings(
      num_steps=int(f.num_steps), batch_size=int(f.batch_size), log_every=int(f.log_every),
      checkpoint_every=int(f.checkpoint_every), keep_checkpoints=int(f.keep_checkpoints),
      plot_every=0, seed=int(config.seed), stop_at_step=stop_at_step, progress_fields=('top1',))


def check_batch_splits(config: ml_collections.ConfigDict) -> None:
  """Refuses a config.finetune.batch_size that does not split over every device of every process."""
  batch, processes, devices = (int(config.finetune.batch_size), jax.process_count(),
                               jax.local_device_count())
  uneven = config_base.uneven_batch(batch, processes, devices)
  if uneven:
    raise config_base.ConfigError(f'config.finetune.batch_size: global batch {batch} {uneven}')


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """Linear scaling rule from config.finetune.base_learning_rate at REFERENCE_BATCH."""
  f = config.finetune
  return float(f.base_learning_rate) * int(f.batch_size) / REFERENCE_BATCH


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to the peak, then cosine to 0 at config.finetune.num_steps."""
  f = config.finetune
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_learning_rate(config), warmup_steps=int(f.warmup_steps),
      decay_steps=int(f.num_steps), end_value=0.0)


def make_optimizer(config: ml_collections.ConfigDict,
                   backbone_root: str = backbone_lib.NARROW_ROOT) -> optax.GradientTransformation:
  """SGD + Nesterov momentum (or AdamW) with decoupled-from-norms weight decay and the backbone LR multiplier."""
  from brave_jax.train import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  f = config.finetune
  schedule = make_schedule(config)
  # Decay conv/linear weights, never biases or norm parameters (optimizer_lib's 'corrected' mask):
  # fine-tuning is our recipe, so it does not inherit the published pretraining optimizer's mask.
  weights_only = functools.partial(optimizer_lib.decay_mask, variant='corrected')
  if f.optimizer == 'sgd':
    base = optax.chain(
        optax.add_decayed_weights(float(f.weight_decay), mask=weights_only),
        optax.sgd(schedule, momentum=float(f.momentum), nesterov=bool(f.nesterov)))
  elif f.optimizer == 'adamw':
    base = optax.adamw(schedule, weight_decay=float(f.weight_decay), mask=weights_only)
  else:
    raise config_base.ConfigError(f'config.finetune.optimizer: must be one of '
                                  f'{config_base.FINETUNE_OPTIMIZERS}, got {f.optimizer!r}')
  multiplier = float(f.backbone_lr_multiplier)
  if multiplier == 1.0:
    return base
  return optax.chain(base, optimizer_lib.scale_by_multipliers(((f'^{backbone_root}/', multiplier),)))


def count_classes(source: Any, config: ml_collections.ConfigDict) -> int:
  """1 + the largest label of the train split (when no class list says how many there are)."""
  from brave_jax.data import eval_clips  # pylint: disable=g-import-not-at-top
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  one_frame = dataclasses.replace(eval_clips.EvalClips.from_config(config), num_frames=1,
                                  frame_step=1, train_passes=1)  # Only the labels are read.
  largest = -1
  for batch in pipeline.make_eval_dataset(config, source, mode='train', batch_size=256,
                                          clips=one_frame):
    largest = max(largest, int(np.max(batch['label'])))
  if largest < 1:
    raise ValueError(f'the fine-tuning train split ({splits_lib.describe(source)}) has no labels '
                     '(clip/label/index) or a single class')
  return largest + 1


def _train_accuracy(metrics_records: Sequence[dict[str, Any]], num_steps: int) -> float | None:
  """Mean logged training-batch top-1 over the last TRAIN_ACCURACY_TAIL of the steps."""
  first = num_steps * (1 - TRAIN_ACCURACY_TAIL)
  values = [r['top1'] for r in metrics_records if 'top1' in r and r['step'] >= first]
  return float(np.mean(values)) if values else None


def test_scores(config: ml_collections.ConfigDict, classifier: Any, params: Any, state: Any,
                test_source: Any) -> dict[str, np.ndarray]:
  """Softmax scores of every multi-crop test clip (the linear protocol's crops): {'feats': [N, K], ...}."""
  def probabilities(variables, video):
    p, s = variables
    return jax.nn.softmax(classifier.logits(p, s, video), axis=-1)
  return embeddings_lib.compute_embeddings(
      probabilities, linear.eval_iterator(config, test_source, 'test'), variables=(params, state),
      pad_to=config.eval.batch_size, desc='fine-tuned test')


def score_videos(scores: dict[str, np.ndarray], num_classes: int) -> dict[str, Any]:
  """Top-1/5, per-class accuracy and confusion of per-video averaged crop scores."""
  video_scores_VxK, labels_V = svm.group_crops(scores['feats'], scores['labels'],
                                               scores['video_index'])
  if labels_V.min() < 0:
    raise svm.LinearEvalError('the test split has unlabelled clips (label -1); fine-tuning '
                              'needs shards with clip/label/index')
  predicted_V = np.argmax(video_scores_VxK, axis=1)
  confusion_KxK = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion_KxK, (labels_V, predicted_V), 1)
  totals_K = confusion_KxK.sum(axis=1)
  return {
      'test': {'top1': svm.topk_accuracy(video_scores_VxK, labels_V, 1),
               'top5': svm.topk_accuracy(video_scores_VxK, labels_V, 5)},
      'per_class_test_accuracy': [float(confusion_KxK[k, k] / totals_K[k]) if totals_K[k] else None
                                  for k in range(num_classes)],
      'confusion_matrix': confusion_KxK.tolist(),
      'num_test_videos': int(len(labels_V)),
  }


def run(config: ml_collections.ConfigDict, source: backbone_lib.Source, output_dir: str, *,
        train_source: Any = None, test_source: Any = None, class_names: Sequence[str] | None = None,
        stop_at_step: int | None = None) -> dict[str, Any]:
  """Fine-tunes `source`'s narrow backbone in `output_dir` (resuming), tests it, writes eval.json.

  `source.kind == 'random_init'` trains the same architecture from scratch
  (fresh weights from the training seed; no pretrained variables). Returns the
  eval.json record (process 0; other processes take part in training and
  return {}). `stop_at_step` stops early with a checkpoint, as a preemption would.
  """
  from brave_jax.data import augment_device  # pylint: disable=g-import-not-at-top
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from brave_jax.models import classifier as classifier_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.train import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  config_base.validate(config)
  check_batch_splits(config)
  if train_source is None or test_source is None:
    train_source, test_source, class_names = splits_lib.resolve(config, train_source, test_source)
  num_classes = len(class_names) if class_names else count_classes(train_source, config)
  ft_config = training_config(config, source.model_config)
  root = backbone_lib.NARROW_ROOT
  classifier = classifier_lib.build_classifier(
      ft_config.model, num_classes, dropout_rate=float(config.finetune.dropout_rate),
      axis_name='i')
  initial = None if source.kind == 'random_init' else source.variables(root)

  def make_batch_iterator(start_step: int):
    return pipeline.make_finetune_dataset(
        config, train_source, batch_size=int(config.finetune.batch_size),
        process_index=jax.process_index(), process_count=jax.process_count(),
        num_local_devices=jax.local_device_count(), start_step=start_step)

  _LOG.info(f'fine-tuning the {source.kind} narrow backbone ({num_classes} classes) in '
            f'{output_dir}')
  train_state = loop.train(
      settings(config, stop_at_step), output_dir, ft_config,
      make_batch_iterator=make_batch_iterator, model=classifier,
      optimizer=make_optimizer(config, root), schedule=make_schedule(config),
      initial_variables=initial,
      # The linear protocol's clips have no blur (pipeline._make_eval_train_fn).
      prepare_batch=augment_device.batch_preparer(config, blur=False))
  done = int(step_lib.unreplicate(train_state.step))
  if jax.process_index() != 0 or done < int(config.finetune.num_steps):
    return {}
  params, state = step_lib.unreplicate((train_state.params, train_state.state))
  result = score_videos(test_scores(config, classifier, params, state, test_source),
                        num_classes)
  records = metrics_lib.read_metrics(output_dir)
  train_top1 = _train_accuracy(records, done)
  result['train'] = {'top1': train_top1, 'top5': None,
                     'measured_on': 'logged training batches (augmented, dropout on), last '
                                    f'{TRAIN_ACCURACY_TAIL:.0%} of steps'}
  result['svm_c'] = None
  data = {'train_shards': splits_lib.describe(train_source),
          'test_shards': splits_lib.describe(test_source)}
  record = report.eval_record(result, config=ft_config, checkpoint_step=source.step, data=data,
                              class_names=class_names)
  record.update(
      protocol='finetune', initialisation=source.kind, finetune_steps=done,
      finetune=ft_config.finetune.to_dict(), peak_learning_rate=peak_learning_rate(ft_config),
      loss_curve=[[r['step'], r['loss']] for r in records if 'loss' in r],
      train_top1_curve=[[r['step'], r['top1']] for r in records if 'top1' in r])
  report.write_report(output_dir, record, class_names=class_names,
                      title=f'fine-tuned ({source.kind}): test confusion (rows normalised)')
  _LOG.info(report.format_table({f'finetune ({source.kind})': record}))
  _LOG.info(f'wrote {os.path.join(output_dir, "eval.json")}, confusion.png and loss.png')
  return record


def run_request(config: ml_collections.ConfigDict, request: Any,
                output_dir: str) -> dict[str, Any]:
  """The protocol's entry (eval/protocols.py): `run` on the request's model and labelled splits."""
  source = request.source(config)
  train, test, class_names = request.splits(config)
  return run(config, source, output_dir, train_source=train, test_source=test,
             class_names=class_names)
