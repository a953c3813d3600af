"""Evaluation CLI: one command over every protocol of the paper (brave_jax/eval/<protocol>.py).

--protocol=<name> runs brave_jax/eval/<name>.py's `run_request` (eval/protocols.py);
the same function runs after pretraining for each name in config.eval.protocols.

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
audio split). Any config field can be set as in training (brave_jax/cli.py):
--config.finetune.num_steps=600, --config.eval.num_temporal_crops=4.
Defaults follow the published protocol (config.eval, config.finetune,
config.audio_eval, config.knn_monitor).

Bad flags or config (an unknown flag, missing file, a workdir that is a file
or has no config.json, a bad field) print one line, `error: ...`, and exit
with status 2.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

import ml_collections

from brave_jax import cli
from brave_jax import config_base
from brave_jax import errors
from brave_jax import log
from brave_jax import saved_config
from brave_jax import tf_startup
from brave_jax.eval import protocols

_LOG = log.get_logger(__name__)

# --flag -> config.eval field it overrides (shorthands for --config.eval.<field>=<value>).
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
  p = cli.ArgumentParser(prog='python -m brave_jax.evaluate', description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--protocol', default='linear', choices=protocols.NAMES,
                 help='linear (default), finetune, audio, knn or retrieval.')
  p.add_argument('--workdir', help='Training workdir: config.json + latest checkpoint.')
  p.add_argument('--checkpoint', help='A published-format BraVe checkpoint (.npy).')
  p.add_argument('--random_init', action='store_true',
                 help="An untrained model of the config's architecture (the baseline).")
  p.add_argument('--config', help=f'{cli.CONFIG_HELP}; replaces <workdir>/config.json.')
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
  return p.parse_with_overrides(argv)


def _eval_flag_overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
  """The shorthand flags as --config.eval.* overrides (before the explicit ones, which win)."""
  overrides = [(f'eval.{field}', str(getattr(args, flag)))
               for flag, (field, _) in _EVAL_FLAGS.items() if getattr(args, flag) is not None]
  if args.svm_c is not None:
    try:
      svm_c = args.svm_c if args.svm_c == 'auto' else repr(float(args.svm_c))
    except ValueError:
      raise UsageError(f"--svm_c: a positive number or 'auto', got {args.svm_c!r}") from None
    overrides.append(('eval.svm_c', svm_c))
  return overrides


def load_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """--config, else <workdir>/config.json, else the published defaults (base config); then flags."""
  base = None
  if not args.config:
    base = (saved_config.read(saved_config.path(args.workdir)) if args.workdir
            else config_base.base_config())
  return cli.resolve(args.config, _eval_flag_overrides(args) + list(args.overrides), base=base)


def _output_dir(args: argparse.Namespace) -> str:
  if args.output_dir:
    return args.output_dir
  subdir = protocols.OUTPUT_SUBDIR[args.protocol]
  if args.workdir:
    return os.path.join(args.workdir, subdir + ('_random_init' if args.random_init else ''))
  raise UsageError(f'give --output_dir (with --workdir it defaults to <workdir>/{subdir})')


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


def request_from_args(args: argparse.Namespace) -> protocols.Request:
  """The protocol request the flags describe."""
  return protocols.Request(
      workdir=args.workdir, checkpoint=args.checkpoint, random_init=args.random_init,
      train_shards=args.train_shards, test_shards=args.test_shards, tfds=args.tfds,
      tfds_data_dir=args.tfds_data_dir, tfds_splits=(args.tfds_train_split, args.tfds_test_split),
      save_embeddings=args.save_embeddings, embeddings=args.embeddings,
      audio_shards=args.audio_shards, folds_csv=args.folds_csv, id_column=args.id_column,
      fold_column=args.fold_column, multilabel=args.multilabel, num_classes=args.num_classes)


def main(argv: Sequence[str] | None = None) -> int:
  """The CLI: a RunError (bad flag, config, workdir) is printed as one line, exit status 2 or 1."""
  log.configure_cli()
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
  protocols.run(args.protocol, config, request_from_args(args), output_dir)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
