"""What an evaluation leaves behind: eval.json (plain numbers), confusion.png, a printed table.

Kept apart from the protocol so the numbers can be re-plotted or re-tabulated
from eval.json alone, and so the protocol code never imports matplotlib.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from brave_jax import files


def _plain(value: Any) -> Any:
  """JSON-safe copy: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def _config_dict(config: Any) -> Any:
  """A ConfigDict (or anything with to_dict) as plain JSON; None stays None."""
  if config is None:
    return None
  return _plain(config.to_dict() if hasattr(config, 'to_dict') else config)


def eval_record(linear_result: Mapping[str, Any], *, config: Any = None,
                checkpoint_step: int | None = None, data: Mapping[str, Any] | None = None,
                class_names: Sequence[str] | None = None) -> dict[str, Any]:
  """The eval.json content: protocol numbers plus what produced them (crops, clip, data, step)."""
  per_class_acc = linear_result['per_class_test_accuracy']
  names = list(class_names) if class_names else [str(k) for k in range(len(per_class_acc))]
  if len(names) < len(per_class_acc):  # Labels beyond the names list: keep their index.
    names += [str(k) for k in range(len(names), len(per_class_acc))]
  record = {
      'train': dict(linear_result['train']),
      'test': dict(linear_result['test']),
      'per_class': [{'class': k, 'name': names[k], 'test_accuracy': acc}
                    for k, acc in enumerate(per_class_acc)],
      'confusion_matrix': linear_result['confusion_matrix'],
      'svm_c': linear_result['svm_c'],
      'checkpoint_step': checkpoint_step,
      'data': dict(data or {}),
  }
  record['data'].setdefault('num_train_clips', linear_result.get('num_train_clips'))
  record['data'].setdefault('num_test_videos', linear_result.get('num_test_videos'))
  if config is not None and 'eval' in config:
    e = config.eval
    record['crops'] = {'temporal': e.num_temporal_crops, 'spatial': e.num_spatial_crops,
                       'short_side': e.resize_short_side, 'train_passes': e.train_passes}
    record['clip'] = {'frames': e.num_frames, 'step': e.frame_step, 'size': e.image_size}
  record['config'] = _config_dict(config)
  return _plain(record)


def write_json(path: str, record: Mapping[str, Any]) -> str:
  """Writes JSON atomically (tmp + rename), so a reader never sees half a file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return files.write_json(path, _plain(record))


def plot_confusion(path: str, confusion_KxK: Sequence[Sequence[int]],
                   class_names: Sequence[str] | None = None, title: str = '') -> str:
  """Row-normalised confusion matrix (true class per row) as a PNG, class names on both axes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  counts_KxK = np.asarray(confusion_KxK, np.float64)
  num_classes = counts_KxK.shape[0]
  row_totals_K = counts_KxK.sum(axis=1, keepdims=True)
  normed_KxK = np.divide(counts_KxK, row_totals_K, out=np.zeros_like(counts_KxK),
                         where=row_totals_K > 0)
  names = list(class_names)[:num_classes] if class_names else []
  names += [str(k) for k in range(len(names), num_classes)]

  side = min(max(4.0, 0.45 * num_classes + 2.0), 40.0)
  fig, ax = plt.subplots(figsize=(side, side * 0.9))
  image = ax.imshow(normed_KxK, cmap='Blues', vmin=0.0, vmax=1.0)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='fraction of true class')
  if num_classes <= 60:  # Beyond that tick labels are unreadable; the indices still show.
    ax.set_xticks(range(num_classes), names, rotation=90, fontsize=8)
    ax.set_yticks(range(num_classes), names, fontsize=8)
  if num_classes <= 20:
    for i in range(num_classes):
      for j in range(num_classes):
        if counts_KxK[i, j]:
          ax.text(j, i, f'{normed_KxK[i, j]:.2f}', ha='center', va='center', fontsize=7,
                  color='white' if normed_KxK[i, j] > 0.5 else 'black')
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title or 'test confusion (rows normalised)')
  fig.tight_layout()
  return files.save_figure(fig, path)


def format_table(records: Mapping[str, Mapping[str, Any]]) -> str:
  """A small fixed-width table, one row per evaluated backbone (e.g. pretrained, random_init)."""
  width = max([14] + [len(name) for name in records])
  header = f"{'backbone':<{width}} {'train top1':>10} {'train top5':>10} {'test top1':>10} " \
           f"{'test top5':>10} {'svm C':>9}"
  lines = [header, '-' * len(header)]
  def pct(value):
    return f'{"-":>9} ' if value is None else f'{100 * value:>9.1f}%'
  for name, r in records.items():
    c = f'{"-":>9}' if r.get('svm_c') is None else f"{r['svm_c']:>9.1e}"
    lines.append(f"{name:<{width}} {pct(r['train']['top1'])} {pct(r['train']['top5'])} "
                 f"{pct(r['test']['top1'])} {pct(r['test']['top5'])} {c}")
  return '\n'.join(lines)


def write_report(outdir: str, record: Mapping[str, Any], *, class_names: Sequence[str] | None = None,
                 json_name: str = 'eval.json', png_name: str = 'confusion.png',
                 title: str = '') -> dict[str, str]:
  """eval.json + confusion.png in `outdir`; returns their paths."""
  return {
      'json': write_json(os.path.join(outdir, json_name), record),
      'confusion': plot_confusion(os.path.join(outdir, png_name), record['confusion_matrix'],
                                  class_names, title=title),
  }
