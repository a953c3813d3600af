r"""Converts a folder (or CSV) of video files into DMVR shards.

Every training and evaluation dataset enters the project through this file, so
it is written to survive real collections: mixed containers and codecs,
variable frame rates, files without audio, truncated downloads and files that
will not open at all. Bad files are reported by name and skipped; the rest
still convert.

  python -m brave_jax.data.convert --videos=/data/UCF-101 --output_dir=/data/ucf_dmvr \
      --prefix=train --split_file=/data/ucfTrainTestlist/trainlist01.txt \
      --classes_file=/data/ucfTrainTestlist/classInd.txt --workers=8

Frames are resampled by timestamp to `--fps` (for output time t = k/fps the
latest decoded frame with pts <= t is kept), resized so the short side is
`--short_side` and JPEG-encoded; audio is resampled to mono float PCM at
`--audio_rate`, aligned to the first video frame and cut to the video's length.
Shards are written by `dmvr_format.write_shards` in the parent process, and a
summary is printed and saved as `<output_dir>/<prefix>_summary.json`. Both are
written under temporary names and renamed when complete, so an interrupted or
failed run never leaves a half-written file, and a run that converts nothing
writes (and replaces) nothing and exits 1. Reconverting a prefix with another
`--num_shards` deletes the old `<prefix>-*-of-<old total>` set once the new
set is complete.

`--audio_only` converts sound collections (ESC-50, AudioSet): audio files
(wav, flac, ogg, mp3, ...) and the audio of video files become waveform-only
records (mono float PCM at `--audio_rate`, no frames). Labels come from the
first sub-folder, or from a CSV: `path,label[;label...]` rows, or a metadata
CSV with a header naming `--path_column` and `--label_column` (several labels
per clip separated by `--label_separator`, e.g. AudioSet's positive labels):

  python -m brave_jax.data.convert --audio_only --videos=/data/ESC-50/meta/esc50.csv \
      --media_root=/data/ESC-50/audio --path_column=filename --label_column=category \
      --output_dir=/data/esc50_shards --prefix=esc50

`--flow` also stores optical flow (`flow/encoded`, one JPEG per frame) for the
broad 'flow' view, computed by `brave_jax.data.flow` inside the worker
processes between consecutive stored frames at the stored resolution, with
`--flow_method=tvl1|dis|farneback` (recorded per clip as `flow/method` and in
the summary). TV-L1 runs at about 1 frame/s per core at 256 px, DIS at ~150
(bench/flow_extraction.py): use many --workers, or --flow_method=dis.

`--clip_seconds=S [--clip_stride=S2]` cuts each (long) video into records of
round(S * fps) frames starting every round(S2 * fps) frames (stride default:
S, back to back), from one decode of the file: its video stream and its audio
stream are each decoded once, whatever the number of clips. Each record holds
its frames and the audio of exactly those frames (sample k * rate / fps for
frame k, the whole video's alignment kept), its source (`clip/source`: the
video's id, which clip/id extends as `<id>#t=<start>`) and `clip/start_seconds`
(frame 0's time in the source). The tail shorter than a clip is dropped; a
video shorter than one clip gives one record of its whole length. The summary
counts clips per source (`clips_per_source`). Memory: one video's JPEG frames
and waveform, then its serialized clips (each frame freed once no later clip
holds it): 1.9 GB peak RSS for the 596 s Big Buck Bunny at 256 px (as one
whole-video record: 4.2 GB).

This module runs the worker pool and the CLI; the work itself is split by job:
`media` decodes and aligns, `listing` lists files, labels and splits,
`clip_cutting` cuts clips, `convert_file` turns one file into its records and
`convert_summary` counts what happened.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
import sys
import time
from typing import Any, Iterable, Iterator, Sequence

import cv2

from brave_jax import log
from brave_jax import tf_startup

_LOG = log.get_logger(__name__)

tf_startup.import_tensorflow()  # Before dmvr_format's import: TF's start-up banners once.

from brave_jax.data import clip_cutting  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import convert_file  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import convert_summary  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import flow as flow_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import listing  # pylint: disable=g-import-not-at-top,wrong-import-position


# ----------------------------------------------------------------------------- worker pool


def _convert_task(task: listing.Task, options: dict[str, Any]) -> convert_file.Result:
  """Worker entry point (module level so it pickles)."""
  return convert_file.convert_one(task.path, task.label_index, task.label_text, task.video_id,
                                  **options)


def _init_worker() -> None:
  """One OpenCV thread per worker process: the workers already fill the cores (flow solves)."""
  cv2.setNumThreads(1)


def _run_tasks(tasks: Sequence[listing.Task], options: dict[str, Any],
               workers: int) -> Iterator[convert_file.Result]:
  """Results in task order; at most 2*workers videos in flight, so memory stays bounded."""
  if workers <= 1:
    for task in tasks:
      yield _convert_task(task, options)
    return
  # spawn: the parent may already run TensorFlow threads, which fork does not survive safely.
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                              initializer=_init_worker) as pool:
    pending: collections.deque = collections.deque()  # (task, future), in task order.
    task_iter = iter(tasks)
    for task in task_iter:
      pending.append((task, pool.submit(_convert_task, task, options)))
      if len(pending) >= 2 * workers:
        break
    while pending:
      task, future = pending.popleft()
      try:
        yield future.result()
      except concurrent.futures.BrokenExecutor as e:
        raise RuntimeError(
            f'a worker process died while converting {task.path} or a neighbour (FFmpeg crash or '
            'out of memory?); rerun with --workers=1 to find the file, or lower --workers') from e
      task = next(task_iter, None)
      if task is not None:
        pending.append((task, pool.submit(_convert_task, task, options)))



def _check_options(flow_method: str | None, audio_only: bool, clip_seconds: float | None,
                   clip_stride: float | None, fps: float, short_audio_clips: str,
                   max_held_fraction: float | None) -> None:
  """Fails before any listing or decoding on options that cannot work, or not together."""
  if flow_method and flow_method not in flow_lib.METHODS:
    raise ValueError(f'--flow_method={flow_method!r} is unknown; choose from {flow_lib.METHODS}')
  if flow_method:
    flow_lib.make_flow_fn(flow_method)  # Fails here, once, if OpenCV lacks the method.
  if audio_only and flow_method:
    raise ValueError('--audio_only records hold no frames, so no --flow')
  if audio_only and clip_seconds:
    raise ValueError('--clip_seconds cuts videos; it does not combine with --audio_only')
  if clip_stride and not clip_seconds:
    raise ValueError('--clip_stride needs --clip_seconds (the clip length)')
  if clip_seconds is not None:
    # Fails here, once, on a bad length.
    clip_cutting.clip_frame_ranges(0, fps, clip_seconds, clip_stride)
  if short_audio_clips not in clip_cutting.SHORT_AUDIO_CLIPS:
    raise ValueError(f'--short_audio_clips={short_audio_clips!r}: choose from '
                     f'{clip_cutting.SHORT_AUDIO_CLIPS}')
  if max_held_fraction is not None and not 0.0 <= max_held_fraction <= 1.0:
    raise ValueError(f'--max_held_fraction={max_held_fraction}: a fraction in [0, 1]')


@dataclasses.dataclass
class _Listing:
  """What a run converts: its tasks, the class list, and what the listing left aside."""
  tasks: list[listing.Task]
  classes: list[str]
  missing_from_split: list[str]  # Named in the split file(s), not found.
  left_out: list[dict[str, str]]  # In the folder, not listed (extension), with the reason.


def _list_tasks(videos: str, *, audio_only: bool, extra_extensions: Sequence[str] | str,
                path_column: str | None, label_column: str | None, media_root: str | None,
                label_separator: str, classes_file: str | None, split_files: Sequence[str],
                hmdb_split: str | None) -> _Listing:
  """Lists the folder or CSV, applies the split file(s) and numbers the labels."""
  left_out: list[dict[str, str]] = []
  if os.path.isdir(videos):
    extensions = ((listing.AUDIO_EXTENSIONS + listing.VIDEO_EXTENSIONS if audio_only
                   else listing.VIDEO_EXTENSIONS) + listing.parse_extensions(extra_extensions))
    listed = listing.list_folder(videos, extensions, left_out=left_out)
  elif os.path.isfile(videos):
    listed = listing.list_csv(videos, path_column=path_column, label_column=label_column,
                              media_root=media_root, label_separator=label_separator)
  else:
    raise FileNotFoundError(f'--videos={videos!r} is neither a folder nor a CSV file')
  if classes_file:
    classes = listing.read_classes_file(classes_file)
  else:  # Sorted names, so separately written train and test shards agree.
    classes = sorted({n for _, _, label in listed for n in listing.label_names(label)})
  missing: list[str] = []
  if split_files:
    selection = listing.read_split_files(split_files, hmdb_split)
    listed, missing = listing.apply_split(listed, selection)
    if not classes_file:
      classes = sorted(set(classes) | {n for _, _, l in listed for n in listing.label_names(l)})
  tasks = listing.make_tasks(listed, classes)
  if not tasks:
    raise ValueError(f'no videos found in {videos!r}'
                     + (' after applying the split file(s)' if split_files else '')
                     + (f'; left out {len(left_out)} file(s), e.g. {left_out[0]["file"]}: '
                        f'{left_out[0]["reason"]}' if left_out else ''))
  return _Listing(tasks, classes, missing, left_out)


def convert(videos: str, output_dir: str, prefix: str = 'train', fps: float = 25.0,
            audio_rate: int = 48000, short_side: int = 256, num_shards: int | None = None,
            workers: int = 1, split_files: Sequence[str] = (), hmdb_split: str | None = None,
            classes_file: str | None = None, jpeg_quality: int = 95,
            max_seconds: float | None = None, progress: bool = True,
            flow_method: str | None = None, audio_only: bool = False,
            path_column: str | None = None, label_column: str | None = None,
            media_root: str | None = None, label_separator: str = ';',
            clip_seconds: float | None = None, clip_stride: float | None = None,
            short_audio_clips: str = 'drop', max_held_fraction: float | None = None,
            extra_extensions: Sequence[str] | str = ()) -> convert_summary.Summary:
  """Lists, converts and shards a dataset; returns (and saves) the summary.

  `flow_method` (one of flow.METHODS) also stores optical flow; None stores none.
  `audio_only` writes waveform-only records of audio files and of videos' audio.
  `clip_seconds` (and `clip_stride`) cut each video into clips (module docstring);
  `short_audio_clips` ('drop' or 'pad') says what happens to a clip whose audio ends early.
  `max_held_fraction` leaves out records with more held frames (None: count them only).
  `extra_extensions` adds file extensions to those a folder listing takes.
  """
  start = time.time()
  _check_options(flow_method, audio_only, clip_seconds, clip_stride, fps, short_audio_clips,
                 max_held_fraction)
  listed = _list_tasks(videos, audio_only=audio_only, extra_extensions=extra_extensions,
                       path_column=path_column, label_column=label_column,
                       media_root=media_root, label_separator=label_separator,
                       classes_file=classes_file, split_files=split_files,
                       hmdb_split=hmdb_split)
  tasks = listed.tasks
  num_records = (sum(clip_cutting.estimate_clips(t.path, clip_seconds, clip_stride, max_seconds)
                     for t in tasks)
                 if clip_seconds else len(tasks))
  num_shards = num_shards or max(1, math.ceil(num_records / 32))

  summary = convert_summary.Summary(
      prefix=prefix, videos_listed=len(tasks), classes=listed.classes,
      missing_from_split=listed.missing_from_split, fps=fps, audio_rate=audio_rate,
      short_side=short_side, flow_method=flow_method or None, audio_only=audio_only,
      clip_seconds=clip_seconds or None, clip_stride=clip_stride or None,
      left_out=listed.left_out, short_audio_clips=short_audio_clips,
      max_held_fraction=max_held_fraction)
  options = dict(fps=fps, audio_rate=audio_rate, short_side=short_side,
                 jpeg_quality=jpeg_quality, max_seconds=max_seconds, flow_method=flow_method,
                 audio_only=audio_only, clip_seconds=clip_seconds or None,
                 clip_stride=clip_stride or None)
  if not audio_only:
    options.update(short_audio_clips=short_audio_clips, max_held_fraction=max_held_fraction)
  results: Iterable[convert_file.Result] = _run_tasks(tasks, options, workers)
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=len(tasks), desc=f'convert {prefix}', unit='video')

  def examples() -> Iterator[bytes]:
    for result in results:
      summary.add(result)
      if bar is not None:
        bar.update(1)
        bar.set_postfix(ok=summary.converted, skipped=len(summary.skipped), refresh=False)
      yield from result.records()

  summary.replaced_shards = dmvr_format.stale_shards(output_dir, prefix, num_shards)
  try:
    summary.shards = dmvr_format.write_shards(examples(), output_dir, prefix, num_shards)
  except dmvr_format.NothingToWriteError:
    summary.shards, summary.replaced_shards = [], []  # Nothing written, replaced or removed.
  finally:
    if bar is not None:
      bar.close()
  summary.wall_seconds = time.time() - start
  if summary.shards:
    convert_summary.write_summary(summary, output_dir)
  return summary


# ----------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m brave_jax.data.convert',
                              description=__doc__.split('\n\n')[0])
  p.add_argument('--videos', required=True,
                 help='folder of videos (labels = first sub-folder) or CSV of path[,label[;label]]')
  p.add_argument('--audio_only', action='store_true',
                 help='waveform-only records from audio files (wav, flac, ogg, mp3, ...) and '
                      "videos' audio, for audio evaluation (ESC-50, AudioSet)")
  p.add_argument('--path_column', default=None,
                 help='CSV with a header: the column of file paths (e.g. ESC-50: filename)')
  p.add_argument('--label_column', default=None,
                 help='CSV with a header: the column of labels (e.g. ESC-50: category)')
  p.add_argument('--label_separator', default=';',
                 help='separates several labels of one clip in the CSV label field')
  p.add_argument('--media_root', default=None,
                 help="CSV paths are relative to this folder (default: the CSV's folder)")
  p.add_argument('--output_dir', required=True)
  p.add_argument('--prefix', default='train', help='shard name prefix, e.g. train or test')
  p.add_argument('--fps', type=float, default=25.0)
  p.add_argument('--audio_rate', type=int, default=48000)
  p.add_argument('--short_side', type=int, default=256, help='<= 0 keeps the source size')
  p.add_argument('--num_shards', type=int, default=None, help='default: one per 32 videos')
  p.add_argument('--workers', type=int, default=1, help='decoding processes')
  p.add_argument('--split_file', action='append', default=[],
                 help='UCF101 train/testlist or HMDB51 *_test_splitN.txt; repeat or glob')
  p.add_argument('--hmdb_split', choices=('train', 'test'), default=None)
  p.add_argument('--classes_file', default=None,
                 help='class list in label order (names, or UCF classInd.txt); default: sorted')
  p.add_argument('--jpeg_quality', type=int, default=95)
  p.add_argument('--max_seconds', type=float, default=None, help='keep at most this much per video')
  p.add_argument('--flow', action='store_true',
                 help='also store optical flow (flow/encoded) for the broad flow view')
  p.add_argument('--flow_method', choices=flow_lib.METHODS, default='tvl1',
                 help='flow algorithm with --flow: tvl1 (accurate, slow), dis or farneback (fast)')
  p.add_argument('--clip_seconds', type=float, default=None,
                 help='cut each video into records of this many seconds (one decode per video); '
                      'each record names its clip/source and clip/start_seconds')
  p.add_argument('--clip_stride', type=float, default=None,
                 help='with --clip_seconds: seconds between clip starts (default: the clip length)')
  p.add_argument('--short_audio_clips', choices=clip_cutting.SHORT_AUDIO_CLIPS, default='drop',
                 help='with --clip_seconds: a clip whose audio ends more than a frame early is '
                      'dropped (default) or padded with silence (pad); the summary counts them')
  p.add_argument('--max_held_fraction', type=float, default=None,
                 help='leave out records (clips) with more than this fraction of held frames '
                      '(frames repeated over stretches that did not decode); default: keep and '
                      'count them')
  p.add_argument('--extra_extensions', default='',
                 help='comma list of file extensions a folder listing also converts, e.g. '
                      '.rm,.swf (files with other extensions are named in the summary)')
  p.add_argument('--no_progress', action='store_true')
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI: converts, prints the summary; exit 1 when nothing converted (nothing written), 2 on errors."""
  log.configure_cli()
  args = _parse_args(argv)
  split_files = [s for arg in args.split_file for s in arg.split(',') if s]
  try:
    summary = convert(args.videos, args.output_dir, prefix=args.prefix, fps=args.fps,
                      audio_rate=args.audio_rate, short_side=args.short_side,
                      num_shards=args.num_shards, workers=args.workers, split_files=split_files,
                      hmdb_split=args.hmdb_split, classes_file=args.classes_file,
                      jpeg_quality=args.jpeg_quality, max_seconds=args.max_seconds,
                      progress=not args.no_progress,
                      flow_method=args.flow_method if args.flow else None,
                      audio_only=args.audio_only, path_column=args.path_column,
                      label_column=args.label_column, media_root=args.media_root,
                      label_separator=args.label_separator, clip_seconds=args.clip_seconds,
                      clip_stride=args.clip_stride, short_audio_clips=args.short_audio_clips,
                      max_held_fraction=args.max_held_fraction,
                      extra_extensions=args.extra_extensions)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    _LOG.error(f'{e}')
    return 2
  _LOG.info(summary.text())
  if not summary.converted:
    _LOG.warning(f'nothing converted, so nothing written: existing shards and summary in '
                 f'{args.output_dir} are untouched')
    return 1
  _LOG.info(f'summary: {convert_summary.summary_path(args.output_dir, args.prefix)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
