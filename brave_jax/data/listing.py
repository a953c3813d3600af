"""What a conversion run converts: files listed from a folder or CSV, their labels, class
lists and UCF101/HMDB51 split files.

Pure file-system and text work, no decoding, so a listing can be checked (and
its mistakes named) before any worker starts.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import os
import re
from typing import Sequence

VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.avi', '.mkv', '.webm', '.mov', '.mpg', '.mpeg', '.m2v',
                    '.ts', '.mts', '.m2ts', '.flv', '.wmv', '.3gp', '.ogv', '.ogg', '.vob')
AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.oga', '.opus', '.mp3', '.m4a', '.aac', '.aif',
                    '.aiff', '.wma')
_HMDB_SPLIT_RE = re.compile(r'^(?P<cls>.+)_test_split\d+\.txt$')
_HMDB_SPLIT_CODES = {'train': '1', 'test': '2'}


Label = str | tuple[str, ...] | None  # One class name, several (multi-label), or none.


@dataclasses.dataclass
class Task:
  """One video to convert (picklable, sent to a worker)."""
  path: str
  video_id: str
  label_index: int | list[int] | None
  label_text: str | list[str] | None



def read_classes_file(path: str) -> list[str]:
  """Class names in label order: one name per line, or UCF `classInd.txt` lines `N name`."""
  entries = []
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) == 2 and parts[0].isdigit():
        entries.append((int(parts[0]), parts[1]))
      elif len(parts) == 1:
        entries.append((len(entries), parts[0]))
      else:
        raise ValueError(f'{path}:{line_no}: expected "name" or "index name", got {line!r}')
  names = [name for _, name in sorted(entries)]
  if len(set(names)) != len(names):
    raise ValueError(f'{path}: duplicate class names')
  return names


def list_folder(root: str, extensions: Sequence[str] = VIDEO_EXTENSIONS,
                left_out: list[dict[str, str]] | None = None) -> list[tuple[str, str, Label]]:
  """(path, video_id, label) for every media file under root; label = first sub-folder name.

  Files whose extension is not in `extensions` are appended to `left_out` (when given) as
  {'file': relative path, 'reason': ...}, so the summary can say what was not converted
  and which flag would add it; hidden files (.DS_Store, ...) are ignored silently.
  """
  found = []
  extensions = tuple(e.lower() for e in extensions)
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
      if name.startswith('.'):
        continue
      if not name.lower().endswith(extensions):
        if left_out is not None:
          left_out.append({'file': os.path.relpath(os.path.join(dirpath, name), root),
                           'reason': left_out_reason(name)})
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      parts = rel.split(os.sep)
      found.append((path, rel.replace(os.sep, '/'), parts[0] if len(parts) > 1 else None))
  return found


def left_out_reason(name: str) -> str:
  """Why a listed folder's file is not converted, and the flag that would convert it."""
  ext = os.path.splitext(name)[1].lower()
  if not ext:
    return 'no file extension; rename it with its container\'s extension (e.g. .mp4)'
  if ext in AUDIO_EXTENSIONS:
    return f'{ext} is an audio extension; --audio_only converts audio files'
  return (f'extension {ext} is not in the list of media extensions; '
          f'--extra_extensions={ext} adds it')


def parse_extensions(text: str | Sequence[str] | None) -> tuple[str, ...]:
  """'.rm,swf' -> ('.rm', '.swf'): --extra_extensions as lower-case suffixes with a dot."""
  items = text.split(',') if isinstance(text, str) else list(text or ())
  out = []
  for item in items:
    item = item.strip().lower()
    if item:
      out.append(item if item.startswith('.') else '.' + item)
  return tuple(out)


def _split_labels(text: str, separator: str) -> Label:
  """'a;b' -> ('a', 'b') (multi-label), 'a' -> 'a', '' -> None."""
  names = [n.strip() for n in text.split(separator)] if separator else [text.strip()]
  names = [n for n in names if n]
  if not names:
    return None
  return names[0] if len(names) == 1 else tuple(names)


def list_csv(csv_path: str, *, path_column: str | None = None, label_column: str | None = None,
             media_root: str | None = None, label_separator: str = ';'
             ) -> list[tuple[str, str, Label]]:
  """(path, video_id, label) from a CSV; relative paths are relative to `media_root` (or the CSV).

  Without `path_column`: `path[,label]` rows (an optional header row is
  skipped), the label field may hold several labels separated by
  `label_separator`. With `path_column` (and `label_column`): a metadata CSV
  whose header names those columns, e.g. ESC-50's `filename`/`category`.
  """
  base = media_root or os.path.dirname(os.path.abspath(csv_path))
  found = []
  with open(csv_path, newline='') as f:
    rows = [[c.strip() for c in row] for row in csv.reader(f)]
  columns = None
  if path_column:
    header = rows[0] if rows else []
    missing = [c for c in (path_column, label_column) if c and c not in header]
    if missing:
      raise ValueError(f'{csv_path}: no column(s) {missing} in the header {header}')
    columns = (header.index(path_column), header.index(label_column) if label_column else None)
  for row_no, row in enumerate(rows, 1):
    if not row or not row[0] or row[0].startswith('#'):
      continue
    if columns:
      if row_no == 1:
        continue  # Header.
      if len(row) <= max(c for c in columns if c is not None):
        raise ValueError(f'{csv_path}:{row_no}: too few columns for {path_column}/{label_column}')
      rel = row[columns[0]]
      label = _split_labels(row[columns[1]], label_separator) if columns[1] is not None else None
    else:
      if row_no == 1 and row[0].lower() in ('path', 'video', 'filename', 'file'):
        continue  # Header.
      if len(row) > 2:
        raise ValueError(f'{csv_path}:{row_no}: expected "path[,label]", got {row}; for a '
                         'metadata CSV name its columns with --path_column/--label_column')
      rel = row[0]
      label = _split_labels(row[1], label_separator) if len(row) > 1 else None
    path = rel if os.path.isabs(rel) else os.path.join(base, rel)
    found.append((path, rel, label))
  return found


def read_split_files(patterns: Sequence[str], hmdb_split: str | None
                     ) -> dict[str, str | None]:
  """Selected videos from UCF101/HMDB51 split files: {relative path or basename: label}.

  UCF lines are `Class/v_x.avi [index]` (label = Class); HMDB files
  `<class>_test_splitN.txt` hold `x.avi 0|1|2` (1 train, 2 test), picked by `hmdb_split`.
  """
  files = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise ValueError(f'--split_file {pattern!r} matches no file')
    files += matches
  selected: dict[str, str | None] = {}
  for split_path in files:
    hmdb = _HMDB_SPLIT_RE.match(os.path.basename(split_path))
    if hmdb and hmdb_split not in _HMDB_SPLIT_CODES:
      raise ValueError(f'{split_path} is an HMDB51 split file: pass --hmdb_split=train|test')
    with open(split_path) as f:
      for line_no, line in enumerate(f, 1):
        parts = line.split()
        if not parts:
          continue
        if hmdb:
          if len(parts) != 2:
            raise ValueError(f'{split_path}:{line_no}: expected "video.avi 0|1|2", got {line!r}')
          if parts[1] == _HMDB_SPLIT_CODES[hmdb_split]:
            selected[parts[0]] = hmdb.group('cls')
        else:
          rel = parts[0].replace('\\', '/')
          selected[rel] = rel.split('/')[0] if '/' in rel else None
  return selected


def apply_split(videos: list[tuple[str, str, str | None]], selected: dict[str, str | None]
                ) -> tuple[list[tuple[str, str, str | None]], list[str]]:
  """Keeps videos named in the split (by relative path, else basename); lists the missing."""
  by_key = {}
  for entry in videos:
    by_key.setdefault(entry[1], entry)
    by_key.setdefault(os.path.basename(entry[1]), entry)
  kept, missing = [], []
  for key, label in selected.items():
    entry = by_key.get(key) or by_key.get(os.path.basename(key))
    if entry is None:
      missing.append(key)
    else:
      kept.append((entry[0], entry[1], label if label is not None else entry[2]))
  return kept, missing


def label_names(label: Label) -> tuple[str, ...]:
  """The class names of one listed label (none, one, or several)."""
  if label is None:
    return ()
  return (label,) if isinstance(label, str) else tuple(label)


def make_tasks(videos: list[tuple[str, str, Label]], classes: list[str]) -> list[Task]:
  """Attaches label indices (positions in `classes`) to the listed videos (lists when multi-label)."""
  index = {name: i for i, name in enumerate(classes)}
  unknown = sorted({n for _, _, label in videos for n in label_names(label) if n not in index})
  if unknown:
    raise ValueError(f'labels not in the class list: {unknown[:10]}; fix --classes_file or the '
                     'input labels')
  tasks = []
  for path, vid, label in videos:
    if isinstance(label, tuple):
      tasks.append(Task(path, vid, [index[n] for n in label], list(label)))
    else:
      tasks.append(Task(path, vid, index[label] if label is not None else None, label))
  return tasks
