"""Writes realistic benchmark shards: 256x340 frames, 12 s clips at 25 fps, 48 kHz audio.

Frames are smooth moving scenes with edges and sensor-like noise, so JPEG
sizes (and decode cost) resemble real video rather than flat colour.

  python bench/make_bench_shards.py --out=/tmp/brave_bench_shards [--clips=32 --shards=8]
  # --flow adds a stored optical-flow stream (flow/encoded, 256x340 JPEGs) for V/F and V/FA.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top,wrong-import-position

HEIGHT, WIDTH, SECONDS, FPS, AUDIO_RATE = 256, 340, 12.0, 25, 48000


def _scene(rng: np.random.RandomState, num_frames: int) -> np.ndarray:
  """uint8 [T, H, W, 3]: a textured background panning, with two moving objects."""
  yy, xx = np.mgrid[:HEIGHT, :WIDTH * 2].astype(np.float32)
  base = np.zeros((HEIGHT, WIDTH * 2, 3), np.float32)
  for c in range(3):
    for _ in range(6):
      fy, fx, ph = rng.uniform(0.005, 0.08), rng.uniform(0.005, 0.08), rng.uniform(0, 6.3)
      base[..., c] += rng.uniform(10, 30) * np.sin(fy * yy + fx * xx + ph)
  base += 120 + rng.uniform(-30, 30, size=3)
  frames = np.empty((num_frames, HEIGHT, WIDTH, 3), np.uint8)
  colours = rng.uniform(0, 255, size=(2, 3))
  for t in range(num_frames):
    shift = int(t * 0.8) % WIDTH
    f = base[:, shift:shift + WIDTH].copy()
    for k in range(2):
      cy = HEIGHT / 2 + 80 * np.sin(0.05 * t + k * 2)
      cx = WIDTH / 2 + 120 * np.cos(0.03 * t + k)
      mask = (np.abs(yy[:, :WIDTH] - cy) < 30 + 10 * k) & (np.abs(xx[:, :WIDTH] - cx) < 40)
      f[mask] = colours[k]
    f += rng.normal(0, 3.0, size=f.shape)
    frames[t] = np.clip(f, 0, 255).astype(np.uint8)
  return frames


def _flow_jpegs(rng: np.random.RandomState, num_frames: int) -> list[bytes]:
  """Stored flow per frame: a slowly turning pan plus a moving vortex, in pixels."""
  yy, xx = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
  pan = rng.uniform(-3, 3, size=2)
  out = []
  for t in range(num_frames):
    cy, cx = HEIGHT / 2 + 60 * np.sin(0.04 * t), WIDTH / 2 + 90 * np.cos(0.03 * t)
    weight = 6.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 40.0 ** 2))
    flow = np.stack([pan[0] * np.cos(0.01 * t) - weight * (yy - cy) / 40,
                     pan[1] + weight * (xx - cx) / 40], -1)
    out.append(dmvr_format.encode_flow_jpeg(flow + rng.normal(0, 0.2, flow.shape)))
  return out


def make_bench_shards(out_dir: str, num_clips: int = 32, num_shards: int = 8,
                      seed: int = 0, flow: bool = False) -> list[str]:
  """Writes `num_clips` clips into `num_shards` shards named bench-0000k-of-0000n (with a flow
  stream when `flow`; the frames and audio are the same either way)."""
  rng = np.random.RandomState(seed)
  flow_rng = np.random.RandomState(seed + 1)  # Its own stream: the frames stay the same.
  num_frames = int(SECONDS * FPS)
  t = np.arange(int(SECONDS * AUDIO_RATE)) / AUDIO_RATE

  def examples():
    for i in range(num_clips):
      frames = _scene(rng, num_frames)
      freq = rng.uniform(100, 2000)
      wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.randn(t.size)
      yield dmvr_format.encode_clip(dmvr_format.Clip(
          frames_TxHxWx3=frames, waveform=np.clip(wave, -1, 1).astype(np.float32),
          label_index=i % 10, label_text=f'class{i % 10}', video_id=f'bench_{i}',
          fps=FPS, audio_rate=AUDIO_RATE,
          encoded_flow=_flow_jpegs(flow_rng, num_frames) if flow else None))
      print(f'clip {i + 1}/{num_clips}', end='\r', flush=True)
  return dmvr_format.write_shards(examples(), out_dir, 'bench', num_shards)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--out', required=True)
  parser.add_argument('--clips', type=int, default=32)
  parser.add_argument('--shards', type=int, default=8)
  parser.add_argument('--flow', action='store_true', help='also store an optical-flow stream')
  args = parser.parse_args()
  paths = make_bench_shards(args.out, args.clips, args.shards, flow=args.flow)
  size = sum(os.path.getsize(p) for p in paths)
  print(f'\nwrote {len(paths)} shards, {args.clips} clips, {size / 2**20:.0f} MiB to {args.out}')


if __name__ == '__main__':
  main()
