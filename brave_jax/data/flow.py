"""Optical flow between consecutive stored frames, for the broad 'flow' view.

One extraction path serves the converter (`convert.py --flow`), the embedded
synthetic dataset and the benchmark, so every flow shard in the project is
made the same way. Flow is computed on the frames at the resolution they are
stored at (after the short-side resize), forward from frame t to t+1, in
pixels, clipped to +-20 px (the DMVR/BraVe quantisation range); a clip of T
frames gets T flow frames, the last one repeating the one before it.

Methods (bench/flow_extraction.py measures their speed per core):
- 'tvl1': TV-L1 (OpenCV DualTVL1 from opencv-contrib, its defaults), the
  flow the two-stream / BraVe literature uses; accurate and slow.
- 'dis': Dense Inverse Search (OpenCV DIS, MEDIUM preset): ~150x faster, and
  within ~0.1 px of TV-L1 on textured motion.
- 'farneback': polynomial-expansion flow (OpenCV Farneback): fast, coarser.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from brave_jax.data import dmvr_format

METHODS = ('tvl1', 'dis', 'farneback')
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def to_gray(frame_HxWx3: np.ndarray) -> np.ndarray:
  """uint8 [H, W] luma of an RGB uint8 frame (every method works on grey images)."""
  if frame_HxWx3.ndim == 2:
    return frame_HxWx3
  return cv2.cvtColor(np.ascontiguousarray(frame_HxWx3), cv2.COLOR_RGB2GRAY)


def make_flow_fn(method: str = 'tvl1') -> FlowFn:
  """A function (grey_t, grey_t+1) -> float32 [H, W, 2] flow in px (x, y), unclipped.

  The OpenCV estimator is created once and reused for every pair of a video.
  """
  if method == 'tvl1':
    if not hasattr(cv2, 'optflow'):
      raise ImportError("flow method 'tvl1' needs OpenCV's contrib modules (cv2.optflow); "
                        'pip install opencv-contrib-python-headless, or choose --flow_method=dis')
    estimator = cv2.optflow.DualTVL1OpticalFlow_create()
    return lambda a, b: estimator.calc(a, b, None)
  if method == 'dis':
    estimator = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return lambda a, b: estimator.calc(a, b, None)
  if method == 'farneback':
    return lambda a, b: cv2.calcOpticalFlowFarneback(
        a, b, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5,
        poly_sigma=1.2, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
  raise ValueError(f'unknown flow method {method!r}; choose from {METHODS}')


def pair_flow(flow_fn: FlowFn, gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
  """float32 [H, W, 2] flow from a to b in px, clipped to the stored range (+-20 px)."""
  flow_HxWx2 = np.asarray(flow_fn(gray_a, gray_b), np.float32)
  return np.clip(flow_HxWx2, -dmvr_format.FLOW_CLIP_PX, dmvr_format.FLOW_CLIP_PX)


def compute_flow(frames_TxHxWx3: np.ndarray, method: str = 'tvl1') -> np.ndarray:
  """float32 [T, H, W, 2] forward flow in px (x, y), clipped to +-20; the last frame repeats."""
  frames_TxHxWx3 = np.asarray(frames_TxHxWx3)
  if frames_TxHxWx3.ndim != 4 or frames_TxHxWx3.shape[-1] != 3:
    raise ValueError(f'compute_flow needs uint8 RGB frames [T, H, W, 3], got shape '
                     f'{frames_TxHxWx3.shape}')
  num_frames, height, width, _ = frames_TxHxWx3.shape
  flow_fn = make_flow_fn(method)
  flow_TxHxWx2 = np.zeros([num_frames, height, width, 2], np.float32)
  grays = [to_gray(f) for f in frames_TxHxWx3.astype(np.uint8, copy=False)]
  for t in range(num_frames - 1):
    if not np.array_equal(grays[t], grays[t + 1]):  # Identical frames: zero flow, no solve.
      flow_TxHxWx2[t] = pair_flow(flow_fn, grays[t], grays[t + 1])
  if num_frames > 1:
    flow_TxHxWx2[-1] = flow_TxHxWx2[-2]
  return flow_TxHxWx2


class StreamingFlowEncoder:
  """Encodes flow JPEGs while a video is decoded, holding one grey frame at a time.

  The converter feeds every *distinct* output frame in order (`add`); each
  returns a record whose `flow_jpeg` is filled in when the next distinct frame
  arrives. `encoded_flow(frames)` then lays the flow out over the output
  frames, whose repeats (a source slower than the output rate) get zero flow.
  """

  class Frame:
    """One distinct output frame: its JPEG and the encoded flow to the next distinct frame."""
    __slots__ = ('jpeg', 'flow_jpeg')

    def __init__(self, jpeg: bytes):
      self.jpeg = jpeg
      self.flow_jpeg: bytes | None = None

  def __init__(self, method: str = 'tvl1', jpeg_quality: int = 95):
    self.method = method
    self._flow_fn = make_flow_fn(method)
    self._quality = jpeg_quality
    self._previous: tuple[StreamingFlowEncoder.Frame, np.ndarray] | None = None
    self._zero_jpeg: bytes | None = None
    self._hw = (0, 0)

  def _encode(self, flow_HxWx2: np.ndarray) -> bytes:
    return dmvr_format.encode_flow_jpeg(flow_HxWx2, self._quality)

  def add(self, frame_HxWx3: np.ndarray) -> 'StreamingFlowEncoder.Frame':
    """Records one distinct frame (uint8 RGB), computing the flow from the previous one to it."""
    record = StreamingFlowEncoder.Frame(dmvr_format.encode_jpeg(frame_HxWx3, self._quality))
    gray = to_gray(frame_HxWx3)
    self._hw = gray.shape[:2]
    if self._previous is not None:
      prev_record, prev_gray = self._previous
      prev_record.flow_jpeg = self._encode(pair_flow(self._flow_fn, prev_gray, gray))
    self._previous = (record, gray)
    return record

  def _zero(self) -> bytes:
    if self._zero_jpeg is None:
      self._zero_jpeg = self._encode(np.zeros(self._hw + (2,), np.float32))
    return self._zero_jpeg

  def encoded_flow(self, frames: list['StreamingFlowEncoder.Frame']) -> list[bytes]:
    """One flow JPEG per output frame: t -> t+1 flow, zero across repeats, the last repeated."""
    out = []
    for t in range(len(frames) - 1):
      if frames[t] is frames[t + 1] or frames[t].flow_jpeg is None:
        out.append(self._zero())
      else:
        out.append(frames[t].flow_jpeg)
    if frames:
      out.append(out[-1] if out else self._zero())
    return out
