r"""Optical flow extraction speed per core (and accuracy) for the converter's --flow methods.

Sizes the flow conversion of a dataset: at 256 px (short side) TV-L1 runs at
about one frame/s per core, so Kinetics-400 (~240k clips x 250 frames) needs about
60M frames / (rate x cores) seconds. Single-threaded (cv2.setNumThreads(1)), as
each converter worker runs; speed is frames per CPU-second of this process, so
other jobs on the machine slow the wall clock but not the number.

Scene: 256x341 frames; a multi-scale textured background panning (1.5, 0.5)
px/frame and two textured discs moving (4, -2) and (-3, 1.5) px/frame, plus
sensor noise; the true flow is known, so each method's mean end-point error
(EPE, px) is printed too.

  python bench/flow_extraction.py [--pairs_tvl1=6] [--pairs_fast=40]
"""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from brave_jax.data import flow

HEIGHT, WIDTH = 256, 341
BACKGROUND_PX = (1.5, 0.5)
OBJECTS = (((100.0, 120.0), 55.0, (4.0, -2.0)), ((200.0, 160.0), 40.0, (-3.0, 1.5)))


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """float32 [h, w, 3] in [0, 255] with detail from 1 to 30 px, like natural images."""
  out = np.zeros([height, width, 3], np.float32)
  for sigma, weight in ((1.0, 0.5), (4.0, 1.0), (12.0, 1.5), (30.0, 2.0)):
    layer = cv2.GaussianBlur(rng.normal(0, 1, (height, width, 3)).astype(np.float32), (0, 0), sigma)
    out += weight * layer / (layer.std() + 1e-6)
  return np.clip(128 + 30 * out, 0, 255)


def _shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
  return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]),
                        (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)


def render(num_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """uint8 frames [T, H, W, 3] and true forward flow [T - 1, H, W, 2] (layer motion, px)."""
  rng = np.random.default_rng(seed)
  background = _texture(HEIGHT, WIDTH, rng)
  textures = [_texture(HEIGHT, WIDTH, rng) for _ in OBJECTS]
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
  frames, true_flow = [], []
  for t in range(num_frames):
    frame = _shift(background, BACKGROUND_PX[0] * t, BACKGROUND_PX[1] * t)
    motion = np.broadcast_to(np.float32(BACKGROUND_PX), (HEIGHT, WIDTH, 2)).copy()
    for ((cx, cy), radius, (vx, vy)), texture in zip(OBJECTS, textures):
      mask = np.hypot(xx - cx - vx * t, yy - cy - vy * t) < radius
      frame[mask] = _shift(texture, vx * t, vy * t)[mask]
      motion[mask] = (vx, vy)
    frame += rng.normal(0, 2.0, frame.shape).astype(np.float32)
    frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
    true_flow.append(motion)
  return np.stack(frames), np.stack(true_flow[:-1])


def measure(method: str, frames: np.ndarray, true_flow: np.ndarray) -> tuple[float, float, float]:
  """(frames per CPU-second, frames per wall-second, mean EPE px) over the consecutive pairs."""
  flow_fn = flow.make_flow_fn(method)
  grays = [flow.to_gray(f) for f in frames]
  flow.pair_flow(flow_fn, grays[0], grays[1])  # Warm-up (allocations, first-call setup).
  cpu0, wall0 = time.process_time(), time.perf_counter()
  estimates = [flow.pair_flow(flow_fn, a, b) for a, b in zip(grays[:-1], grays[1:])]
  cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
  epe = float(np.mean([np.linalg.norm(e - f, axis=-1).mean()
                       for e, f in zip(estimates, true_flow)]))
  return len(estimates) / cpu, len(estimates) / wall, epe


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--pairs_tvl1', type=int, default=6, help='frame pairs timed for TV-L1')
  p.add_argument('--pairs_fast', type=int, default=40, help='frame pairs timed for dis/farneback')
  args = p.parse_args(argv)
  cv2.setNumThreads(1)
  frames, true_flow = render(max(args.pairs_tvl1, args.pairs_fast) + 1)
  print(f'frames {WIDTH}x{HEIGHT}, OpenCV {cv2.__version__}, cv2.setNumThreads(1)')
  results = {}
  for method in flow.METHODS:
    n = args.pairs_tvl1 if method == 'tvl1' else args.pairs_fast
    per_cpu_s, per_wall_s, epe = measure(method, frames[:n + 1], true_flow[:n])
    results[method] = per_cpu_s
    print(f'{method:10s} {n:3d} pairs: {per_cpu_s:8.2f} frames/CPU-s  '
          f'{per_wall_s:8.2f} frames/wall-s  EPE {epe:.3f} px')
  for method, rate in results.items():
    print(f'{method}_frames_per_s_per_core={rate:.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
