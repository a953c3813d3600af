"""May this config resume the checkpoints already in a workdir? Decided before anything is written.

A workdir's config.json describes its checkpoints. A rerun with a config that
trains something else (another model, other views, another seed or batch) must
not print "Resumed" and then die in a shape error, nor overwrite config.json
on the way: it is refused up front, naming every field that differs.

What may change on resume (RESUMABLE_FIELDS): how long to train and how often
to log, plot and checkpoint; linear-evaluation settings (they act after
training); where the shards live (a moved copy of the same data); input-pipeline
parallelism and the bad-data budget; and rematerialisation (memory only, same
parameters). Changing
training.num_steps re-draws the cosine schedule over the new length from the
resumed step on. Everything else must match the workdir's config.json.

Fields that exist only on one side (a config.json written before a field was
added to the schema, or after one was removed) are not compared, except those
in FIELDS_ADDED_LATER: a config.json without one of them was trained as that
field's value says (data.augment_on: a run from before it existed augmented on
the host; data.jpeg_decode: it decoded its crops at reduced scale), so resuming
it with another value is refused like any other change.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from etils import epath
import ml_collections

from brave_jax import errors
from brave_jax import saved_config

RESUMABLE_FIELDS = (
    'training.num_steps',
    'training.log_every',
    'training.checkpoint_every',
    'training.keep_checkpoints',
    'training.plot_every',
    'eval.',  # Every eval field: evaluation runs after training.
    'data.train_shards',
    'data.test_shards',
    'data.synthetic.cache_dir',
    'data.num_parallel_calls',
    'data.prefetch',
    'data.tf_intra_op_threads',
    'data.max_bad_record_fraction',
    'data.max_consecutive_bad_records',
    'model.remat',
)

# Fields added after config.json files were written, with the value that earlier runs had.
FIELDS_ADDED_LATER = {
    'data.augment_on': 'host',
    'data.shipped_frames_dtype': 'float32',
    'data.jpeg_decode': 'reduced_scale',  # Training crops before the published full decode.
    'data.narrow.resize_on': 'host',  # Narrow crops resized in the pipeline.
    'data.narrow.crop_buffer_pixels': 256 * 456,  # Unused with 'host'.
}


def may_change_on_resume(field: str) -> bool:
  """True for fields in RESUMABLE_FIELDS (a trailing '.' covers a whole group)."""
  return any(field == f or (f.endswith('.') and field.startswith(f)) for f in RESUMABLE_FIELDS)


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'training.num_steps': 60, ...} from nested dicts; lists/tuples are compared as lists."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f'{prefix}{key}.'))
    return out
  if isinstance(tree, tuple):
    tree = list(tree)
  return {prefix[:-1]: json.loads(json.dumps(tree))}  # Tuples -> lists, as config.json has them.


def differences(saved: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  """[(field, saved value, new value)] for fields present in both whose values differ."""
  old, new = flatten(saved), flatten(config)
  old = dict({k: v for k, v in FIELDS_ADDED_LATER.items() if k in new}, **old)
  return [(k, old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]


def _describe(changes: Iterable[tuple[str, Any, Any]], limit: int = 8) -> str:
  changes = list(changes)
  shown = [f'{k}: {old!r} -> {new!r}' for k, old, new in changes[:limit]]
  if len(changes) > limit:
    shown.append(f'and {len(changes) - limit} more')
  return '; '.join(shown)


def check_config_matches(config: ml_collections.ConfigDict, workdir: str,
                         checkpoint_step: int) -> list[tuple[str, Any, Any]]:
  """Raises WorkdirMismatchError if `config` changes a field resuming may not change.

  Returns the allowed changes (to be written into config.json once the
  checkpoint has been restored). Without a readable config.json nothing can be
  compared here; the checkpoint's shapes are then checked at restore.
  """
  saved = saved_config.read_dict(workdir)
  if saved is None:
    return []
  changes = differences(saved, saved_config.as_dict(config))
  refused = [c for c in changes if not may_change_on_resume(c[0])]
  if refused:
    raise errors.WorkdirMismatchError(
        f'{workdir} holds checkpoints (latest: step {checkpoint_step}) of another config; this '
        f'run changes {len(refused)} field(s) that resuming cannot: {_describe(refused)}. Use a new '
        f'--workdir for this config, or rerun with the workdir\'s own config '
        f'({saved_config.path(workdir)}). Fields that may change on resume: '
        f'{", ".join(f.rstrip(".") + ("*" if f.endswith(".") else "") for f in RESUMABLE_FIELDS)}.')
  return changes


def check_is_directory(workdir: str, flag: str = '--workdir') -> None:
  """Refuses a workdir that exists as a file (training would die in mkdir with FileExistsError)."""
  path = epath.Path(workdir)
  if path.exists() and not path.is_dir():
    raise errors.UsageError(f'{flag}={workdir} is a file, not a directory: give a directory '
                            '(it is created if missing)')
  for parent in path.parents:  # A file further up makes mkdir fail too.
    if parent.exists():
      if not parent.is_dir():
        raise errors.UsageError(f'{flag}={workdir}: {parent} is a file, not a directory')
      break
