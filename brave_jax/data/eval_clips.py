"""The clips an evaluation pipeline cuts from each record, as one value the caller passes.

The linear probe, kNN, fine-tuning and retrieval all read labelled videos
through `pipeline.make_eval_dataset` (and fine-tuning through
`make_finetune_dataset`), but not with the same clips: the kNN monitor wants
one centre crop, retrieval the narrow view's clip. Passing the settings as a
value, rather than a config copy with config.eval rewritten, keeps every
config what the user gave and shows at the call which clips a protocol uses.
"""
from __future__ import annotations

import dataclasses

import ml_collections


@dataclasses.dataclass(frozen=True)
class EvalClips:
  """Window, crop and pass counts of evaluation clips (config.eval's fields of the same names)."""
  num_frames: int  # Frames per clip ...
  frame_step: int  # ... this many frames apart.
  image_size: int  # Side of the square crop.
  resize_short_side: int  # Test frames: short side resized to this before cropping.
  num_temporal_crops: int  # Test: evenly spaced windows per video ...
  num_spatial_crops: int  # ... times crops on the diagonal per window.
  train_passes: int  # Train: augmented passes over the split (one random clip per pass).

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> EvalClips:
    """config.eval's clips: what every protocol uses unless it says otherwise."""
    e = config.eval
    return cls(num_frames=int(e.num_frames), frame_step=int(e.frame_step),
               image_size=int(e.image_size), resize_short_side=int(e.resize_short_side),
               num_temporal_crops=int(e.num_temporal_crops),
               num_spatial_crops=int(e.num_spatial_crops), train_passes=int(e.train_passes))

  @property
  def test_rows(self) -> int:
    """Rows a test video gives: one per (window, crop)."""
    return self.num_temporal_crops * self.num_spatial_crops
