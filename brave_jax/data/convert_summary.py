"""The converter's summary: counts a user checks after a run, printed and saved as JSON.

Built from the workers' `convert_file.Result`s in task order, so the saved
`<prefix>_summary.json` says exactly what went into (and was left out of) the shards.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os

from brave_jax.data import convert_file
from brave_jax.data import media

@dataclasses.dataclass
class Summary:
  """What the run did, printed at the end and saved beside the shards."""
  prefix: str
  videos_listed: int = 0
  converted: int = 0
  total_seconds: float = 0.0
  total_frames: int = 0
  no_audio: int = 0
  no_audio_files: list[str] = dataclasses.field(default_factory=list)
  short_audio_files: list[str] = dataclasses.field(default_factory=list)
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  skipped_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
  # Files in the folder that were not listed (extension not in the list), with the reason.
  left_out: list[dict[str, str]] = dataclasses.field(default_factory=list)
  missing_from_split: list[str] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)
  classes: list[str] = dataclasses.field(default_factory=list)
  shards: list[str] = dataclasses.field(default_factory=list)
  # Shards of this prefix with another total, deleted once the new set was complete.
  replaced_shards: list[str] = dataclasses.field(default_factory=list)
  fps: float = 25.0
  audio_rate: int = 48000
  short_side: int = 256
  flow_method: str | None = None  # Optical flow algorithm of flow/encoded; None = no flow.
  audio_only: bool = False  # Waveform-only records (no frames).
  clip_seconds: float | None = None  # --clip_seconds: videos cut into clips of this length ...
  clip_stride: float | None = None  # ... starting this far apart (None: back to back).
  clips_per_source: dict[str, int] = dataclasses.field(default_factory=dict)
  records: int = 0  # Records written: one per video, or its clips.
  short_audio_clips: str = 'drop'  # --short_audio_clips policy ...
  clips_dropped_short_audio: int = 0  # ... clips it left out (audio ends early) ...
  clips_padded_short_audio: int = 0  # ... or padded with silence.
  # Records shorter than one clip (sources shorter than --clip_seconds, kept whole): the
  # pipelines loop them (repeat from their start) to fill their windows.
  looped_short_records: int = 0
  shortest_record_seconds: float | None = None
  clipped_audio: int = 0  # Files whose downmixed audio peaked above 1.0 and was clipped.
  clipped_audio_max_peak: float = 0.0
  max_held_fraction: float | None = None  # --max_held_fraction (None: held records kept).
  mostly_held_records: int = 0  # Records written with over MOSTLY_HELD held frames ...
  mostly_held_sources: list[str] = dataclasses.field(default_factory=list)
  dropped_held_records: int = 0  # ... and records left out for it.
  wall_seconds: float = 0.0

  def add(self, result: convert_file.Result) -> None:
    """Counts one worker result."""
    self.warnings += result.warnings
    self.clips_dropped_short_audio += result.clips_dropped_short_audio
    self.clips_padded_short_audio += result.clips_padded_short_audio
    self.dropped_held_records += result.dropped_held
    if result.audio_peak > 1.0:
      self.clipped_audio += 1
      self.clipped_audio_max_peak = max(self.clipped_audio_max_peak, result.audio_peak)
    if not result.ok:
      reason = result.reason or 'error'
      self.skipped.append({'video': result.video_id, 'reason': result.error or 'unknown',
                           'category': reason})
      self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
      return
    self.converted += 1
    self.records += len(result.records())
    if result.clips is not None:
      self.clips_per_source[result.video_id] = len(result.clips)
    if result.mostly_held:
      self.mostly_held_records += result.mostly_held
      self.mostly_held_sources.append(result.video_id)
    if self.clip_seconds:
      self.looped_short_records += sum(s < self.clip_seconds - 0.5 / self.fps
                                       for s in result.record_seconds)
    if result.record_seconds:
      shortest = min(result.record_seconds)
      if self.shortest_record_seconds is None or shortest < self.shortest_record_seconds:
        self.shortest_record_seconds = shortest
    self.total_seconds += result.duration_s
    self.total_frames += result.num_frames
    if not result.has_audio:
      self.no_audio += 1
      self.no_audio_files.append(result.video_id)
    if result.short_audio:
      self.short_audio_files.append(result.video_id)

  def text(self) -> str:
    """Human-readable lines for the end of the run: details first, the counts last."""
    lines = []
    if self.clip_seconds:
      lines.append(f'  cut into {self.records} clips of {self.clip_seconds:g}s every '
                   f'{self.clip_stride or self.clip_seconds:g}s: '
                   + ', '.join(f'{k} {v}' for k, v in list(self.clips_per_source.items())[:20])
                   + (' ...' if len(self.clips_per_source) > 20 else ''))
    if self.replaced_shards:
      lines.append(f'  removed {len(self.replaced_shards)} shard(s) of an earlier conversion with '
                   f'another --num_shards, e.g. {self.replaced_shards[0]}')
    lines += [f'  skipped {s["video"]}: {s["reason"]}' for s in self.skipped[:50]]
    if self.missing_from_split:
      lines.append(f'  {len(self.missing_from_split)} video(s) named in the split file were not '
                   f'found, e.g. {self.missing_from_split[:5]}')
    lines += [f'  warning: {w}' for w in self.warnings[:50]]
    if len(self.warnings) > 50:
      lines.append(f'  ... {len(self.warnings) - 50} more warnings in the summary JSON')
    counts = self.count_lines()
    lines += [f'  {line}' for line in counts[:-1]] + counts[-1:]  # The totals line last.
    return '\n'.join(lines)

  def count_lines(self) -> list[str]:
    """The counts a user checks after a run, one topic a line, the totals last."""
    what = (f'{self.total_seconds:.1f}s of audio (waveform only, {self.audio_rate} Hz)'
            if self.audio_only else
            f'{self.total_seconds:.1f}s of video ({self.total_frames} frames at {self.fps:g} fps)')
    lines = []
    unlisted = [f for f in self.left_out if f['reason'].startswith('extension ')]
    if unlisted:
      exts = sorted({os.path.splitext(f['file'])[1].lower() for f in unlisted})
      lines.append(f'left out {len(unlisted)} file(s) whose extension is not in the list: '
                   + ', '.join(f['file'] for f in unlisted[:5])
                   + (' ...' if len(unlisted) > 5 else '')
                   + f'; --extra_extensions={",".join(exts)} adds them')
    others = [f for f in self.left_out if f not in unlisted]
    for reason, n in collections.Counter(f['reason'] for f in others).most_common():
      names = [f['file'] for f in others if f['reason'] == reason]
      lines.append(f'left out {n} file(s): {", ".join(names[:5])}{" ..." if n > 5 else ""} '
                   f'({reason})')
    if self.skipped:
      lines.append(f'skipped {len(self.skipped)} file(s) (named above): '
                   + ', '.join(f'{r} {n}' for r, n in sorted(self.skipped_by_reason.items(),
                                                             key=lambda kv: -kv[1])))
    if self.clip_seconds:
      action = ('dropped' if self.short_audio_clips == 'drop' else 'padded with silence')
      other = 'pad' if self.short_audio_clips == 'drop' else 'drop'
      n = (self.clips_dropped_short_audio if self.short_audio_clips == 'drop'
           else self.clips_padded_short_audio)
      lines.append(f'clips whose audio ends early: {n} {action} '
                   f'(--short_audio_clips={self.short_audio_clips}; ={other} to {other} them)')
      lines.append(f'records shorter than one {self.clip_seconds:g}s clip (whole short videos, '
                   f'looped by the pipelines to fill their windows): {self.looped_short_records}')
    if self.shortest_record_seconds is not None:
      lines.append(f'shortest record: {self.shortest_record_seconds:.2f}s (records shorter than '
                   "a model's window are looped to fill it)")
    if not self.audio_only:
      held = (f'records made mostly (>{convert_file.MOSTLY_HELD:.0%}) of held frames: '
              f'{self.mostly_held_records}')
      if self.mostly_held_sources:
        held += f' (from {", ".join(self.mostly_held_sources[:5])})'
      if self.max_held_fraction is not None:
        held += (f'; left out over --max_held_fraction={self.max_held_fraction:g}: '
                 f'{self.dropped_held_records}')
      elif self.mostly_held_records:
        held += '; kept (--max_held_fraction=F leaves out records with more held frames)'
      lines.append(held)
    lines.append(f'audio clipped (peak above 1.0 after downmix, clipped to [-1, 1]): '
                 f'{self.clipped_audio} file(s)'
                 + (f', largest peak {self.clipped_audio_max_peak:.3f} (files above '
                    f'{media.CLIP_WARN_PEAK:g} are named in the warnings)'
                    if self.clipped_audio else ''))
    if not self.audio_only:
      lines.append(f'without audio: {self.no_audio}; audio shorter than video: '
                   f'{len(self.short_audio_files)}'
                   + (f'; flow: {self.flow_method}' if self.flow_method else ''))
    lines.append(f'[{self.prefix}] converted {self.converted}/{self.videos_listed} '
                 f'{"clips" if self.audio_only else "videos"} into {self.records} record(s), '
                 f'{what}, in {self.wall_seconds:.1f}s into {len(self.shards)} shard(s); '
                 f'skipped {len(self.skipped)}'
                 + (f'; {len(self.left_out)} other file(s) left out' if self.left_out else ''))
    return lines


def summary_path(output_dir: str, prefix: str) -> str:
  return os.path.join(output_dir, f'{prefix}_summary.json')


def write_summary(summary: Summary, output_dir: str) -> str:
  """Writes <prefix>_summary.json atomically (temporary file, then rename)."""
  path = summary_path(output_dir, summary.prefix)
  tmp = os.path.join(output_dir, f'.{summary.prefix}_summary.json.{os.getpid()}.tmp')
  try:
    with open(tmp, 'w') as f:
      json.dump(dataclasses.asdict(summary), f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
