"""Linear evaluation CLI: a training workdir or a published checkpoint -> eval.json + confusion.png.

  # A run of ours (reads W/config.json, restores the latest checkpoint):
  python -m brave_jax.evaluate --workdir=/tmp/brave_va \\
      --train_shards=/data/ucf101/train --test_shards=/data/ucf101/test --output_dir=/tmp/eval
  # A published BraVe checkpoint (.npy):
  python -m brave_jax.evaluate --checkpoint=brave_v_a.npy --train_shards=... --test_shards=... \\
      --output_dir=/tmp/eval_published
  # Re-fit the SVM (e.g. another C) on saved embeddings, no forward passes:
  python -m brave_jax.evaluate --embeddings=/tmp/eval/embeddings.npz --svm_c=auto --output_dir=...

Defaults follow the published protocol (config.eval: 32 frames, step 2, 224 px,
10x3 test crops at short side 256, 10 augmented train passes, C=1e-4). Empty
shard flags evaluate on the embedded synthetic dataset's splits.

Bad flags or config (missing file, a workdir that is a file or has no
config.json, a bad field) print one line, `error: ...`, and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

import ml_collections

from brave_jax import config_base
from brave_jax import errors

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
  """argparse, not absl: no global flag registry to clash with brave_jax.main's in one process."""
  p = argparse.ArgumentParser(prog='python -m brave_jax.evaluate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', help='Training workdir: config.json + latest checkpoint.')
  p.add_argument('--checkpoint', help='A published-format BraVe checkpoint (.npy).')
  p.add_argument('--config', help='configs/<file>.py[:variant]; overrides <workdir>/config.json.')
  p.add_argument('--train_shards', default='', help='Labelled DMVR shards for the SVM train split '
                 '(glob, directory or comma list); both shard flags empty = the synthetic set.')
  p.add_argument('--test_shards', default='', help='Labelled DMVR shards for the test split.')
  p.add_argument('--output_dir', help='Where eval.json and confusion.png go (default <workdir>/eval).')
  p.add_argument('--svm_c', help="LinearSVC C, or 'auto' to cross-validate it on the train split "
                 '(default config.eval.svm_c).')
  for flag, (field, text) in _EVAL_FLAGS.items():
    p.add_argument(f'--{flag}', type=int, help=f'{text} (default config.eval.{field}).')
  p.add_argument('--save_embeddings', action='store_true',
                 help='Also write <output_dir>/embeddings.npz (re-fit later with --embeddings).')
  p.add_argument('--embeddings', help='Re-fit on an embeddings.npz from --save_embeddings '
                 '(no model, no data).')
  return p.parse_args(argv)


def _merge_json(base: ml_collections.ConfigDict, values: dict[str, Any], prefix: str = '') -> None:
  """Writes JSON values into `base`, turning lists back into tuples where the schema has tuples."""
  for key, value in values.items():
    if key in base and isinstance(base[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge_json(base[key], value, f'{prefix}{key}.')
      continue
    if isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    with base.unlocked():
      if key in base and not isinstance(base[key], ml_collections.ConfigDict):
        base[key] = value
      else:
        base[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def config_from_json(path: str) -> ml_collections.ConfigDict:
  """The resolved config a training run wrote (config.json), on top of today's schema defaults."""
  if not os.path.isfile(path):
    raise UsageError(f'{path} not found: --workdir must be a training workdir (main.py '
                     'writes config.json there), or pass --config=configs/<file>.py[:variant]')
  try:
    with open(path) as f:
      values = json.load(f)
  except ValueError as error:
    raise UsageError(f'{path} is not valid JSON ({error}); pass '
                     '--config=configs/<file>.py[:variant] instead') from error
  config = config_base.base_config()
  _merge_json(config, values)
  return config


def _apply_flags(config: ml_collections.ConfigDict,
                 args: argparse.Namespace) -> ml_collections.ConfigDict:
  for flag, (field, _) in _EVAL_FLAGS.items():
    value = getattr(args, flag)
    if value is not None:
      config.eval[field] = value
  if args.svm_c is not None:
    try:
      config.eval.svm_c = args.svm_c if args.svm_c == 'auto' else float(args.svm_c)
    except ValueError:
      raise UsageError(f"--svm_c: a positive number or 'auto', got {args.svm_c!r}") from None
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


def _workdir_backbone(config: ml_collections.ConfigDict, workdir: str):
  """(embed_fn, (params, state), step) of the narrow backbone in the workdir's latest checkpoint."""
  from brave_jax.eval import run  # pylint: disable=g-import-not-at-top
  from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
  model = brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name=None)
  params, state, step = run.restore_latest(config, workdir, model)
  return run.narrow_embed_fn(model), run.narrow_only((params, state)), step


def _published_backbone(path: str):
  """(embed_fn, (params, state), None) of a published checkpoint's narrow video backbone."""
  from brave_jax import published  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import run  # pylint: disable=g-import-not-at-top
  loaded = published.load(path)
  return run.narrow_embed_fn(loaded.model), run.narrow_only((loaded.params, loaded.state)), None


def evaluate(config: ml_collections.ConfigDict, *, workdir: str | None, checkpoint: str | None,
             embeddings_path: str | None, train_shards: str, test_shards: str, output_dir: str,
             save_embeddings: bool = False) -> dict[str, Any]:
  """The CLI's work, callable from tests and notebooks; returns the eval.json record."""
  from brave_jax.eval import embeddings as embeddings_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import report  # pylint: disable=g-import-not-at-top
  from brave_jax.eval import run  # pylint: disable=g-import-not-at-top
  if embeddings_path:  # --workdir/--config then only supply the config.
    splits, metadata = embeddings_lib.load_embeddings(embeddings_path)
    if not {'train', 'test'} <= set(splits):
      raise ValueError(f'{embeddings_path} holds splits {sorted(splits)}; it needs train and test')
    record = run.fit_and_report(config, splits, output_dir, class_names=metadata.get('class_names'),
                                checkpoint_step=metadata.get('checkpoint_step'),
                                data=metadata.get('data'))
  else:
    if bool(checkpoint) == bool(workdir):
      raise UsageError('give exactly one of --workdir or --checkpoint (or --embeddings)')
    if checkpoint:
      embed_fn, variables, step = _published_backbone(checkpoint)
    else:
      embed_fn, variables, step = _workdir_backbone(config, workdir)
    record = run.evaluate_backbone(
        config, embed_fn, train_shards, test_shards, output_dir, variables=variables,
        checkpoint_step=step, save_embeddings=save_embeddings, file_suffix='',
        tag='pretrained' if workdir else 'published')
  tag = 'refit' if embeddings_path else 'pretrained' if workdir else 'published'
  print(report.format_table({tag: record}))
  print(f'wrote {os.path.join(output_dir, "eval.json")} and confusion.png')
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
  if not args.embeddings and bool(args.checkpoint) == bool(args.workdir):
    raise UsageError('give exactly one of --workdir or --checkpoint (or --embeddings to re-fit)')
  output_dir = args.output_dir or (args.workdir and os.path.join(args.workdir, 'eval'))
  if not output_dir:
    raise UsageError('give --output_dir (with --workdir it defaults to <workdir>/eval)')
  config = load_config(args)
  evaluate(config, workdir=args.workdir, checkpoint=args.checkpoint,
           embeddings_path=args.embeddings, train_shards=args.train_shards,
           test_shards=args.test_shards, output_dir=output_dir,
           save_embeddings=args.save_embeddings)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
