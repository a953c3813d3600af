"""Evaluation CLI: one command over every protocol of the paper (brave_jax/eval/<protocol>.py).

  # Linear (default): frozen narrow backbone, linear SVM, multi-crop test -> eval.json, confusion.png
  python -m brave_jax.evaluate --workdir=/tmp/brave_va \\
      --train_shards=/data/ucf101/train --test_shards=/data/ucf101/test --output_dir=/tmp/eval
  python -m brave_jax.evaluate --checkpoint=brave_v_a.npy --train_shards=... --test_shards=... \\
      --output_dir=/tmp/eval_published
  python -m brave_jax.evaluate --embeddings=/tmp/eval/embeddings.npz --svm_c=auto --output_dir=...
  # Fine-tuning: backbone + dropout + linear head trained end to end (resumable) -> eval.json, loss.png
  python -m brave_jax.evaluate --protocol=finetune --workdir=/tmp/brave_va --tfds=ucf101/ucf101_1_256 \\
      --tfds_data_dir=/data/tfds --config.finetune.num_steps=8000
  # Audio, ESC-50 style (fixed folds from the metadata CSV) or AudioSet style (--multilabel):
  python -m brave_jax.evaluate --protocol=audio --workdir=/tmp/brave_va \\
      --audio_shards=/data/esc50/shards --folds_csv=/data/esc50/meta/esc50.csv
  python -m brave_jax.evaluate --protocol=audio --multilabel --workdir=/tmp/brave_va \\
      --train_shards=/data/audioset/balanced --test_shards=/data/audioset/eval
  # kNN (k = 20, cosine-weighted) of test videos against the train split's clips:
  python -m brave_jax.evaluate --protocol=knn --workdir=/tmp/brave_va
  # Audio<->video retrieval over test clips (models with an audio backbone), with random init and
  # chance beside it -> retrieval.json, retrieval.png (--train_shards: clips for random init's BN):
  python -m brave_jax.evaluate --protocol=retrieval --workdir=/tmp/brave_va --test_shards=/data/clips/test

The model: --workdir (a training run: its config.json and latest checkpoint),
--checkpoint (a published .npy), or --random_init (an untrained model of
--config's or the workdir's architecture: the baseline). The data: shard
flags, --tfds=NAME --tfds_data_dir=DIR (a prepared TFDS dataset, read as it
is), or nothing: the embedded synthetic dataset (for audio: its ESC-style
audio split). Any config field can be set as in training:
--config.finetune.num_steps=600, --config.eval.num_temporal_crops=4.
Defaults follow the published protocol (config.eval, config.finetune,
config.audio_eval, config.knn_monitor).

Bad flags or config (missing file, a workdir that is a file or has no
config.json, a bad field) print one line, `error: ...`, and exit with status 2.
"""
from __future__ import annotations

import argparse
import ast
import os
from typing import Any, Sequence

import ml_collections

from brave_jax import config_base
from brave_jax import errors
from brave_jax import tf_startup
from brave_jax.eval.backbone import config_from_json  # pylint: disable=unused-import  # Public API.

PROTOCOLS = ('linear', 'finetune', 'audio', 'knn', 'retrieval')
DEFAULT_SUBDIR = {'linear': 'eval', 'finetune': 'finetune', 'audio': 'audio_eval', 'knn': 'knn',
                  'retrieval': 'retrieval'}

# --flag -> config.eval field it overrides.
_EVAL_FLAGS = {
    'num_frames': ('num_frames', 'Frames per eval clip.'),
    'frame_step': ('frame_step', 'Stride between eval frames.'),
    'image_size': ('image_size', 'Eval crop side in pixels.'),
    'temporal_crops': ('num_temporal_crops', 'Test clips per video.'),
    'spatial_crops': ('num_spatial_crops', 'Test crops per clip.'),
    'short_side': ('resize_short_side', 'Test frames are resized to this short side.'),
    'train_passes': ('train_passes', 'Augmented passes over the train split.'),
    'batch_size': ('batch_size', 'Clips per forward pass.'),
}


UsageError = errors.UsageError  # The flags do not describe one evaluation.


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """argparse, not absl: no global flag registry to clash with brave_jax.main's in one process.

  `--config.<field>=<value>` arguments are collected into `args.overrides`.
  """
  p = argparse.ArgumentParser(prog='python -m brave_jax.evaluate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--protocol', default='linear', choices=PROTOCOLS,
                 help='linear (default), finetune, audio, knn or retrieval.')
  p.add_argument('--workdir', help='Training workdir: config.json + latest checkpoint.')
  p.add_argument('--checkpoint', help='A published-format BraVe checkpoint (.npy).')
  p.add_argument('--random_init', action='store_true',
                 help="An untrained model of the config's architecture (the baseline).")
  p.add_argument('--config', help='configs/<file>.py[:variant]; overrides <workdir>/config.json.')
  p.add_argument('--train_shards', default='', help='Labelled DMVR shards for the train split '
                 '(glob, directory or comma list); both shard flags empty = the synthetic set.')
  p.add_argument('--test_shards', default='', help='Labelled DMVR shards for the test split.')
  p.add_argument('--tfds', help='A prepared TFDS video dataset, e.g. ucf101/ucf101_1_256: its '
                 'video/label (and audio) features are read as they are.')
  p.add_argument('--tfds_data_dir', help='Where the TFDS dataset was prepared (default TFDS\'s).')
  p.add_argument('--tfds_train_split', default='train', help='TFDS split to train on.')
  p.add_argument('--tfds_test_split', default='test', help='TFDS split to test on.')
  p.add_argument('--output_dir', help='Where results go (default <workdir>/<protocol dir>).')
  p.add_argument('--svm_c', help="LinearSVC C, or 'auto' to cross-validate it on the train split "
                 '(default config.eval.svm_c).')
  for flag, (field, text) in _EVAL_FLAGS.items():
    p.add_argument(f'--{flag}', type=int, help=f'{text} (default config.eval.{field}).')
  p.add_argument('--save_embeddings', action='store_true',
                 help='Linear: also write <output_dir>/embeddings.npz (re-fit with --embeddings).')
  p.add_argument('--embeddings', help='Linear: re-fit on an embeddings.npz from --save_embeddings '
                 '(no model, no data).')
  p.add_argument('--audio_shards', default='', help='Audio, ESC style: shards of every clip '
                 '(waveform-only records are fine); with --folds_csv.')
  p.add_argument('--folds_csv', help="Audio, ESC style: metadata CSV with the clips' file names "
                 'and a fold column (ESC-50: meta/esc50.csv).')
  p.add_argument('--id_column', help='--folds_csv column of file names (default: filename).')
  p.add_argument('--fold_column', help='--folds_csv column of folds (default: fold).')
  p.add_argument('--multilabel', action='store_true', help='Audio, AudioSet style: several '
                 'labels per clip, train/test shard flags, mAP and mAUC.')
  p.add_argument('--num_classes', type=int, help='Audio --multilabel: classes (default: the '
                 "converter's class list beside the shards).")
  args, unknown = p.parse_known_args(argv)
  args.overrides = []
  for item in unknown:
    if not item.startswith('--config.') or '=' not in item:
      p.error(f'unrecognized argument {item!r} (config fields are set as --config.<field>=<value>)')
    key, value = item[len('--config.'):].split('=', 1)
    args.overrides.append((key, value))
  return args


def _parse_value(text: str, current: Any) -> Any:
  """A flag's text as the field's type: numbers, bools, tuples via literal_eval, else the string."""
  if isinstance(current, bool):
    if text.lower() in ('true', '1'):
      return True
    if text.lower() in ('false', '0'):
      return False
    raise UsageError(f'expected true/false, got {text!r}')
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
  if isinstance(current, float) and isinstance(value, int):
    return float(value)
  return value


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]]) -> None:
  """Sets `--config.a.b=value` fields, refusing names the schema does not have."""
  for key, text in overrides:
    node = config
    parts = key.split('.')
    for part in parts[:-1]:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise UsageError(f'--config.{key}: config has no section {part!r}')
      node = node[part]
    if parts[-1] not in node or isinstance(node[parts[-1]], ml_collections.ConfigDict):
      raise UsageError(f'--config.{key}: config has no field {parts[-1]!r} '
                       f'(fields: {sorted(node.keys())})')
    try:
      node[parts[-1]] = _parse_value(text, node[parts[-1]])
    except TypeError as e:
      raise UsageError(f'--config.{key}={text}: {e}') from None


def _apply_flags(config: ml_collections.ConfigDict,
                 args: argparse.Namespace) -> ml_collections.ConfigDict:
  for flag, (field, _) in _EVAL_FLAGS.items():
    value = getattr(args, flag, None)
    if value is not None:
      config.eval[field] = value
  if args.svm_c is not None:
    try:
      config.eval.svm_c = args.svm_c if args.svm_c == 'auto' else float(args.svm_c)
    except ValueError:
      raise UsageError(f"--svm_c: a positive number or 'auto', got {args.svm_c!r}") from None
  apply_overrides(config, getattr(args, 'overrides', ()))
  config_base.validate(config)
  return config


def load_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """--config, else <workdir>/config.json, else the published defaults (base config)."""
  if args.config:
    try:
      config = config_base.load(args.config)
    except (FileNotFoundError, errors.RunError) as error:
      raise UsageError(f'--config={args.config}: {error}') from error
  elif args.workdir:
    config = config_from_json(os.path.join(args.workdir, 'config.json'))
  else:
    config = config_base.base_config()
  return _apply_flags(config, args)


def _output_dir(args: argparse.Namespace) -> str:
  if args.output_dir:
    return args.output_dir
  if args.workdir:
    suffix = '_random_init' if args.random_init else ''
    return os.path.join(args.workdir, DEFAULT_SUBDIR[args.protocol] + suffix)
  raise UsageError('give --output_dir (with --workdir it defaults to '
                   f'<workdir>/{DEFAULT_SUBDIR[args.protocol]})')


def _model_source(config: ml_collections.ConfigDict, args: argparse.Namespace):
  from brave_jax.eval import backbone  # pylint: disable=g-import-not-at-top
  return backbone.load(config, workdir=None if args.random_init else args.workdir,
                       checkpoint=args.checkpoint, random=args.random_init)


def _check_model_flags(args: argparse.Namespace) -> None:
  if args.embeddings and args.protocol == 'linear':
    return
  if args.random_init:
    if args.checkpoint:
      raise UsageError('--random_init takes its architecture from --config or --workdir, '
                       'not --checkpoint')
    return
  if bool(args.checkpoint) == bool(args.workdir):
    raise UsageError('give exactly one of --workdir or --checkpoint (or --random_init; '
                     '--embeddings to re-fit a linear evaluation)')


def _data(config: ml_collections.ConfigDict, args: argparse.Namespace):
  from brave_jax.eval import splits  # pylint: disable=g-import-not-at-top
  return splits.resolve(config, args.train_shards, args.test_shards, tfds_name=args.tfds,
                        tfds_data_dir=args.tfds_data_dir,
                        tfds_splits=(args.tfds_train_split, args.tfds_test_split))


def run_linear(config, args, output_dir) -> dict[str, Any]:
  from brave_jax.eval import embeddings as embeddings_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import linear  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import report  # pylint: disable=g-import-not-at-top
  if args.embeddings:  # --workdir/--config then only supply the config.
    splits, metadata = embeddings_lib.load_embeddings(args.embeddings)
    if not {'train', 'test'} <= set(splits):
      raise ValueError(f'{args.embeddings} holds splits {sorted(splits)}; it needs train and test')
    record = linear.fit_and_report(config, splits, output_dir,
                                   class_names=metadata.get('class_names'),
                                   checkpoint_step=metadata.get('checkpoint_step'),
                                   data=metadata.get('data'))
    tag = 'refit'
  else:
    source = _model_source(config, args)
    train, test, class_names = _data(config, args)
    tag = {'workdir': 'pretrained'}.get(source.kind, source.kind)
    record = linear.evaluate_source(config, source, train, test, output_dir, tag=tag,
                                    class_names=class_names,
                                    save_embeddings=args.save_embeddings)
  print(report.format_table({tag: record}))
  print(f'wrote {os.path.join(output_dir, "eval.json")} and confusion.png')
  return record


def run_finetune(config, args, output_dir) -> dict[str, Any]:
  from brave_jax.eval import finetune  # pylint: disable=g-import-not-at-top
  source = _model_source(config, args)
  train, test, class_names = _data(config, args)
  return finetune.run(config, source, output_dir, train_source=train, test_source=test,
                      class_names=class_names)


def run_audio(config, args, output_dir) -> dict[str, Any]:
  from brave_jax.eval import audio  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import splits  # pylint: disable=g-import-not-at-top
  if args.multilabel:
    train, test, class_names = _data(config, args)
    num_classes = args.num_classes or (len(class_names) if class_names else None)
    if not num_classes:
      raise UsageError('--multilabel needs --num_classes (no class list found beside the shards)')
    return audio.run_multilabel(config, _model_source(config, args), train, test, num_classes,
                                output_dir, class_names=class_names)
  if args.tfds:
    raise UsageError('ESC-style folds need DMVR shards (--audio_shards) and --folds_csv; '
                     'TFDS examples carry no file names to match the folds to')
  if bool(args.audio_shards) != bool(args.folds_csv):
    raise UsageError('ESC-style audio evaluation needs both --audio_shards and --folds_csv '
                     '(or neither: the embedded ESC-style audio split)')
  if args.audio_shards:  # Every input the command names is checked before the model is built.
    audio.check_folds_cover(args.audio_shards, args.folds_csv, id_column=args.id_column,
                            fold_column=args.fold_column)
    class_names = splits.shard_class_names(args.audio_shards)
  source = _model_source(config, args)
  if args.audio_shards:
    data, folds_csv = args.audio_shards, args.folds_csv
  else:
    from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    a = config.audio_eval.synthetic
    dataset = synthetic.ensure_audio_dataset(
        config.data.synthetic, num_folds=int(a.num_folds), clips_per_fold=int(a.clips_per_fold),
        seconds=float(a.seconds), snr_db=tuple(a.snr_db))
    data, folds_csv, class_names = dataset['audio'], dataset['folds_csv'], dataset['class_names']
  return audio.run_folds(config, source, data, folds_csv, output_dir, class_names=class_names,
                         id_column=args.id_column, fold_column=args.fold_column)


def run_knn(config, args, output_dir) -> dict[str, Any]:
  from brave_jax.eval import backbone  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import knn  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import linear  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import report  # pylint: disable=g-import-not-at-top
  source = _model_source(config, args)
  train, test, class_names = _data(config, args)
  if source.kind == 'random_init':
    source = backbone.calibrate_batch_norm(config, source, linear.eval_iterator(config, train, 'train'))
  tag = {'workdir': 'pretrained'}.get(source.kind, source.kind)
  splits = linear.embed_splits(config, backbone.embed_fn(source.model), train, test,
                               variables=source.variables(backbone.NARROW_ROOT), tag=tag)
  m = config.knn_monitor
  result = knn.evaluate(splits['train'], splits['test'], k=int(m.k), temperature=float(m.temperature),
                        num_classes=len(class_names) if class_names else None)
  record = {'protocol': 'knn', 'backbone': tag, 'checkpoint_step': source.step, **result}
  report.write_json(os.path.join(output_dir, 'knn.json'), record)
  print(f'kNN ({tag}, k={result["k"]}): test top-1 {100 * result["top1"]:.1f}%, top-5 '
        f'{100 * result["top5"]:.1f}% over {result["num_test_videos"]} videos; wrote '
        f'{os.path.join(output_dir, "knn.json")}')
  return record


def run_retrieval(config, args, output_dir) -> dict[str, Any]:
  from brave_jax.eval import retrieval  # pylint: disable=g-import-not-at-top
  if args.tfds:
    raise UsageError('retrieval reads DMVR shards with audio (--test_shards), not --tfds')
  named = args.test_shards or config.data.test_shards
  if named:  # The shards hold what retrieval needs? Checked once, before any model is built.
    from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
    reader.check_shard_features(named, video=True, audio=True, what='--protocol=retrieval')
  modalities = None if args.checkpoint else tuple(config.data.broad_modalities)
  if modalities is None:  # A published file says what it holds once loaded.
    source = _model_source(config, args)
    modalities = source.broad_modalities
  if 'audio' not in modalities:
    raise UsageError(f'retrieval needs a model with an audio backbone (V/A, V/FA); this one has '
                     f'broad views {modalities}')
  if not args.checkpoint:
    source = _model_source(config, args)
  test = args.test_shards or config.data.test_shards
  calibration = args.train_shards or None
  if not test:  # The embedded dataset's test split (it has audio).
    _, test, _ = _data(config, args)
  record = retrieval.run(config, source, test, output_dir, calibration_data=calibration)
  print(retrieval.format_table(record))
  print(f'{record["num_clips"]} clips; wrote {os.path.join(output_dir, retrieval.JSON_FILE)} '
        f'and {retrieval.PLOT_FILE}')
  return record


def main(argv: Sequence[str] | None = None) -> int:
  """The CLI: a RunError (bad flag, config, workdir) is printed as one line, exit status 2 or 1."""
  args = parse_args(argv)

  def run() -> int:
    try:
      return _main(args)
    except FileNotFoundError as error:  # A path flag that points nowhere: its message names it.
      raise UsageError(str(error)) from error
  return errors.run_cli(run)


def _main(args: argparse.Namespace) -> int:
  from brave_jax.train import resume  # pylint: disable=g-import-not-at-top
  if args.workdir:
    resume.check_is_directory(args.workdir)
  _check_model_flags(args)
  output_dir = _output_dir(args)
  config = load_config(args)
  if not (args.embeddings and args.protocol == 'linear'):  # A re-fit reads no data.
    tf_startup.import_tensorflow()  # Its start-up banners once, before the data code imports it.
  runner = {'linear': run_linear, 'finetune': run_finetune, 'audio': run_audio,
            'knn': run_knn, 'retrieval': run_retrieval}[args.protocol]
  runner(config, args, output_dir)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
