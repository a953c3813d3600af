"""A second embedded dataset, made independently of the first, to check that a recipe generalises.

The demo recipe (the `:demo` of configs/brave_rgb_audio.py) was tuned on the embedded
dataset (data/synthetic.py). A recipe that only works there has learned that
dataset's quirks, so this generator was written without reading the first
one's classes, sizes or sounds (only how the pipeline consumes a dataset: DMVR
shards, a manifest, config.data.synthetic's seed and cache_dir). It is a check,
not a tuning target: its parameters are fixed here, never taken from a recipe.

Each class is one kind of audio-visual *event*, with its sound tied to the
motion in time where the physics suggests it (a click at each bounce, a burst
at each jump):

  bounce   object falls and bounces on the floor      click at every impact
  orbit    object circles a centre                    two tones alternating (trill)
  zoom     object grows and shrinks in place          tone whose pitch follows the size
  spin     object rotates about its centre            band of noise, swelling twice a turn
  drift    object slides across, wrapping around      steady buzzy (sawtooth) tone
  jitter   object jumps a little every frame          crackle (sparse random impulses)
  hop      object still, then jumps to a new place    short noise burst at each jump
  spiral   object spirals in and out                  rising chirp, restarting each cycle

Per-video nuisances (what a random network reads without learning): background
colour and a smooth random texture, object colour, shape (ellipse, box or
triangle, always elongated), size, position, direction (left/right, clockwise or not, so a
horizontal flip keeps the class), rate and phase; sound pitch, loudness and a
background of pink-ish noise.

12 fps, 3 s clips of 56x72 px, 16 kHz audio, 8 classes x (48 train + 16 test)
videos. The pipeline must read it at that rate: config.data.video_fps=12 and
config.data.audio_sample_rate=16000 (config_base.validate says so if not).
Selected with config.data.synthetic.generator='independent' (or the shards
from `python -m brave_jax.data.synthetic_independent --output_dir=DIR`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Iterator

import numpy as np
import tqdm

from brave_jax import files
from brave_jax import log
from brave_jax.data import dmvr_format
from brave_jax.data import flow as flow_lib
from brave_jax.data import synthetic  # The shared cache, manifest and shard-count logic.

_LOG = log.get_logger(__name__)

NAME = 'independent'  # config.data.synthetic.generator value that selects this dataset.
GENERATOR_VERSION = 1  # Bump when the generated content changes, so old caches are not reused.
CLASSES = ('bounce', 'orbit', 'zoom', 'spin', 'drift', 'jitter', 'hop', 'spiral')
# Label index = position in the sorted class names (as the converter writes labels).
CLASS_NAMES = tuple(sorted(CLASSES))
OBJECT_SHAPES = ('ellipse', 'box', 'triangle')
JPEG_QUALITY = 92
FLOW_METHOD = 'farneback'
MANIFEST = synthetic.MANIFEST  # Written last: its presence marks a complete dataset directory.
SPLITS = ('train', 'test')


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything the content depends on; the defaults are the dataset (tests shrink them)."""
  fps: float = 12.0
  audio_rate: int = 16000
  seconds: float = 3.0
  height: int = 56
  width: int = 72
  train_per_class: int = 48
  test_per_class: int = 16
  seed: int = 0

  @property
  def num_frames(self) -> int:
    return int(round(self.seconds * self.fps))

  @property
  def num_samples(self) -> int:
    return int(round(self.seconds * self.audio_rate))


DEFAULT_SPEC = Spec()


# ----------------------------------------------------------------------------- video

def _smooth_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """[H, W, 3] in about [-1, 1]: a few random low-frequency cosines per channel."""
  y = np.linspace(0.0, 1.0, height)[:, None]
  x = np.linspace(0.0, 1.0, width)[None, :]
  out = np.zeros((height, width, 3))
  for c in range(3):
    for _ in range(3):
      fy, fx = rng.uniform(0.5, 3.0, 2) * rng.choice([-1, 1], 2)
      out[..., c] += np.cos(2 * np.pi * (fy * y + fx * x) + rng.uniform(0, 2 * np.pi)) / 3
  return out


def _object_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float,
                 ry: float, angle: float) -> np.ndarray:
  """Soft [H, W] coverage of one object centred at (cx, cy), half-sizes (rx, ry), rotated."""
  ca, sa = math.cos(angle), math.sin(angle)
  u = ((xx - cx) * ca + (yy - cy) * sa) / max(rx, 0.5)
  v = (-(xx - cx) * sa + (yy - cy) * ca) / max(ry, 0.5)
  if shape == 'ellipse':
    d = np.sqrt(u * u + v * v) - 1.0
  elif shape == 'box':
    d = np.maximum(np.abs(u), np.abs(v)) - 1.0
  else:  # triangle pointing along +v: three half-planes.
    d = np.maximum.reduce([-v - 0.6, 0.866 * u + 0.5 * v - 0.5, -0.866 * u + 0.5 * v - 0.5])
  # ~1 px soft edge in object units.
  edge = 1.0 / max(min(rx, ry), 1.0)
  return np.clip(0.5 - d / edge, 0.0, 1.0)


@dataclasses.dataclass
class _Object:
  cx: np.ndarray  # [T] centre x (px)
  cy: np.ndarray  # [T] centre y (px)
  rx: np.ndarray  # [T] half-width (px)
  ry: np.ndarray  # [T] half-height (px)
  angle: np.ndarray  # [T] radians


def _motion(rng: np.random.Generator, cls: str, t_T: np.ndarray, height: int,
            width: int) -> tuple[list[_Object], np.ndarray]:
  """The class's objects over time, and the event times (s) the sound is tied to."""
  size = rng.uniform(0.09, 0.15) * min(height, width) * np.ones_like(t_T)
  # Every object is elongated (so a spin shows), by a class-independent amount and direction.
  aspect = rng.uniform(1.5, 2.2) ** rng.choice([-1.0, 1.0])
  rx, ry = size * aspect ** 0.5, size / aspect ** 0.5
  angle0 = rng.uniform(0, 2 * np.pi)
  still = angle0 * np.ones_like(t_T)
  margin = 0.2
  x0 = rng.uniform(margin, 1 - margin) * width
  y0 = rng.uniform(margin, 1 - margin) * height
  sign = rng.choice([-1.0, 1.0])
  seconds = t_T[-1] + (t_T[1] - t_T[0] if len(t_T) > 1 else 1.0)
  events = np.zeros(0)
  if cls == 'bounce':
    period = rng.uniform(0.6, 1.0)
    phase = rng.uniform(0, period)
    u = np.mod(t_T + phase, period) / period  # 0 and 1 = on the floor.
    floor = height * rng.uniform(0.75, 0.88)
    top = height * rng.uniform(0.15, 0.3)
    cy = floor - (floor - top) * 4 * u * (1 - u)
    cx = x0 + sign * rng.uniform(0.0, 4.0) * t_T
    cx = np.mod(cx, width)
    events = np.arange(-phase, seconds, period)
    events = events[events >= 0]
    return [_Object(cx, cy, rx, ry, still)], events
  if cls == 'orbit':
    period = rng.uniform(0.8, 1.4)
    radius = min(height, width) * rng.uniform(0.18, 0.26)
    a = sign * 2 * np.pi * t_T / period + rng.uniform(0, 2 * np.pi)
    cxc = width / 2 + rng.uniform(-0.1, 0.1) * width
    cyc = height / 2 + rng.uniform(-0.1, 0.1) * height
    obj = _Object(cxc + radius * np.cos(a), cyc + radius * np.sin(a), rx, ry, still)
    events = np.arange(0.0, seconds, period / 2)  # The trill switches twice a turn.
    return [obj], events
  if cls == 'zoom':
    period = rng.uniform(0.7, 1.3)
    phase = rng.uniform(0, 2 * np.pi)
    s = 1.0 + 0.6 * np.sin(2 * np.pi * t_T / period + phase)
    return [_Object(x0 * np.ones_like(t_T), y0 * np.ones_like(t_T), rx * s, ry * s, still)], \
        np.array([period, phase])
  if cls == 'spin':
    period = rng.uniform(0.8, 1.5)
    a = angle0 + sign * 2 * np.pi * t_T / period
    return [_Object(x0 * np.ones_like(t_T), y0 * np.ones_like(t_T), rx, ry, a)], \
        np.array([period])
  if cls == 'drift':
    speed = rng.uniform(0.35, 0.6) * width  # px/s
    cx = np.mod(x0 + sign * speed * t_T, width)
    return [_Object(cx, y0 * np.ones_like(t_T), rx, ry, still)], events
  if cls == 'jitter':
    step = rng.uniform(1.5, 3.0)
    cx = np.clip(x0 + np.cumsum(rng.normal(0, step, len(t_T))), 0.1 * width, 0.9 * width)
    cy = np.clip(y0 + np.cumsum(rng.normal(0, step, len(t_T))), 0.1 * height, 0.9 * height)
    return [_Object(cx, cy, rx, ry, still)], events
  if cls == 'hop':
    period = rng.uniform(0.5, 0.8)
    phase = rng.uniform(0, period)
    events = np.arange(period - phase, seconds, period)
    n_hops = len(events) + 1
    xs = rng.uniform(margin, 1 - margin, n_hops) * width
    ys = rng.uniform(margin, 1 - margin, n_hops) * height
    which = np.searchsorted(events, t_T, side='right')
    return [_Object(xs[which], ys[which], rx, ry, still)], events
  if cls == 'spiral':
    period = rng.uniform(1.0, 1.6)
    u = np.mod(t_T / period + rng.uniform(0, 1), 1.0)
    radius = min(height, width) * (0.05 + 0.3 * u)
    a = sign * 2 * np.pi * 2.0 * u + rng.uniform(0, 2 * np.pi)
    cxc, cyc = width / 2, height / 2
    return [_Object(cxc + radius * np.cos(a), cyc + radius * np.sin(a), rx, ry, still)], \
        np.array([period, float(u[0])])
  raise ValueError(f'unknown class {cls!r}; choose from {CLASSES}')


def render_video(rng: np.random.Generator, cls: str, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [T, H, W, 3] frames, event parameters for the sound)."""
  t_T = np.arange(spec.num_frames) / spec.fps
  objs, events = _motion(rng, cls, t_T, spec.height, spec.width)
  shape = OBJECT_SHAPES[rng.integers(len(OBJECT_SHAPES))]
  bg = rng.uniform(0.1, 0.9, 3)
  texture = _smooth_texture(rng, spec.height, spec.width) * rng.uniform(0.03, 0.12)
  pan = rng.normal(0, 3.0, 2)  # Slow texture pan (px/s): camera-like nuisance motion.
  fg = np.clip(bg + rng.choice([-1, 1], 3) * rng.uniform(0.25, 0.5, 3), 0, 1)
  noise = rng.uniform(0.0, 0.03)
  yy, xx = np.mgrid[0:spec.height, 0:spec.width].astype(np.float64)
  frames = np.empty((spec.num_frames, spec.height, spec.width, 3), np.uint8)
  for i, t in enumerate(t_T):
    shift = np.round(pan * t).astype(int)
    img = bg + np.roll(texture, tuple(shift), axis=(0, 1))
    for o in objs:
      m = _object_mask(shape, xx, yy, o.cx[i], o.cy[i], o.rx[i], o.ry[i], o.angle[i])[..., None]
      img = img * (1 - m) + fg * m
    img = img + rng.normal(0, noise, img.shape)
    frames[i] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
  return frames, events


# ----------------------------------------------------------------------------- audio

def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
  spectrum = np.fft.rfft(rng.normal(size=n))
  f = np.arange(len(spectrum))
  spectrum[1:] /= np.sqrt(f[1:])
  spectrum[0] = 0
  x = np.fft.irfft(spectrum, n)
  return x / (np.abs(x).max() + 1e-9)


def render_audio(rng: np.random.Generator, cls: str, events: np.ndarray, spec: Spec) -> np.ndarray:
  """float32 [num_samples] in [-1, 1]: the class's sound (tied to `events`) over pink noise."""
  n, rate = spec.num_samples, spec.audio_rate
  t = np.arange(n) / rate
  pitch = rng.uniform(0.8, 1.25)  # Per-video pitch factor (nuisance).
  out = np.zeros(n)
  if cls == 'bounce':
    for e in events:
      k = int(e * rate)
      length = int(0.04 * rate)
      seg = np.arange(min(length, max(n - k, 0)))
      out[k:k + len(seg)] += np.exp(-seg / (0.006 * rate)) * np.sin(2 * np.pi * 1800 * pitch *
                                                                     seg / rate)
  elif cls == 'orbit':
    switch = np.mod(np.searchsorted(events, t, side='right'), 2)
    f = np.where(switch == 0, 500.0, 750.0) * pitch
    out = np.sin(2 * np.pi * np.cumsum(f) / rate)
  elif cls == 'zoom':
    period, phase = events  # Pitch follows the object's size.
    f = 400 * pitch * (1 + 0.35 * np.sin(2 * np.pi * t / period + phase))
    out = np.sin(2 * np.pi * np.cumsum(f) / rate)
  elif cls == 'spin':
    period = events[0]
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    centre = 2500 * pitch
    spectrum *= np.exp(-0.5 * ((freqs - centre) / 300) ** 2)
    band = np.fft.irfft(spectrum, n)
    band /= np.abs(band).max() + 1e-9
    out = band * (0.55 + 0.45 * np.cos(4 * np.pi * t / period))
  elif cls == 'drift':
    f0 = 150 * pitch
    out = 2 * np.mod(f0 * t, 1.0) - 1  # Sawtooth.
    out = 0.6 * out
  elif cls == 'jitter':
    clicks = rng.random(n) < 25 / rate  # ~25 impulses per second.
    out = clicks * rng.choice([-1.0, 1.0], n)
    out = np.convolve(out, np.exp(-np.arange(40) / 6.0), mode='same')
  elif cls == 'hop':
    for e in events:
      k = int(e * rate)
      length = min(int(0.08 * rate), max(n - k, 0))
      out[k:k + length] += rng.normal(size=length) * np.hanning(length) if length else 0
  elif cls == 'spiral':
    period, u0 = events
    u = np.mod(t / period + u0, 1.0)
    f = (300 + 1500 * u) * pitch
    out = np.sin(2 * np.pi * np.cumsum(f) / rate) * np.minimum(1.0, 20 * (1 - u))
  else:
    raise ValueError(f'unknown class {cls!r}; choose from {CLASSES}')
  out = out / (np.abs(out).max() + 1e-9) * rng.uniform(0.3, 0.8)
  out = out + _pink_noise(rng, n) * rng.uniform(0.03, 0.15)
  return np.clip(out, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- shards

def _split_examples(spec: Spec, split: str, with_flow: bool,
                    progress: tqdm.tqdm | None) -> Iterator[bytes]:
  """Serialised clips of one split, classes interleaved so every shard holds every class."""
  per_class = spec.train_per_class if split == 'train' else spec.test_per_class
  for i in range(per_class):
    for label, name in enumerate(CLASS_NAMES):
      # One generator per video; the seed list differs from the first generator's in length and
      # contents, so the two datasets share no random stream.
      rng = np.random.default_rng([7919, spec.seed, SPLITS.index(split), label, i])
      frames, events = render_video(rng, name, spec)
      wave = render_audio(rng, name, events, spec)
      flow = flow_lib.compute_flow(frames, FLOW_METHOD) if with_flow else None
      clip = dmvr_format.Clip(
          frames_TxHxWx3=frames, waveform=wave, label_index=label, label_text=name,
          video_id=f'{NAME}_{split}_{name}_{i:04d}', fps=spec.fps, audio_rate=spec.audio_rate,
          flow_TxHxWx2=flow, flow_method=FLOW_METHOD if with_flow else None)
      yield dmvr_format.encode_clip(clip, jpeg_quality=JPEG_QUALITY)
      if progress is not None:
        progress.update(1)


def spec_hash(spec: Spec, with_flow: bool) -> str:
  """Cache key: the spec, flow or not, and the generator version."""
  key = dict(dataclasses.asdict(spec), with_flow=bool(with_flow), version=GENERATOR_VERSION,
             name=NAME)
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def write_dataset(output_dir: str, spec: Spec = DEFAULT_SPEC, with_flow: bool = False,
                  show_progress: bool = True) -> dict[str, Any]:
  """Generates both splits into `output_dir` (not atomic: `ensure_dataset` adds that)."""
  os.makedirs(output_dir, exist_ok=True)
  total = len(CLASSES) * (spec.train_per_class + spec.test_per_class)
  result: dict[str, Any] = {}
  with tqdm.tqdm(total=total, desc=f'{NAME} synthetic dataset', unit='video',
                 disable=not show_progress, mininterval=1.0) as progress:
    for split in SPLITS:
      n = len(CLASSES) * (spec.train_per_class if split == 'train' else spec.test_per_class)
      paths = dmvr_format.write_shards(_split_examples(spec, split, with_flow, progress),
                                       output_dir, split, synthetic.num_shards(n))
      result[split] = [os.path.basename(p) for p in paths]
  manifest = dict(result, class_names=list(CLASS_NAMES), spec=dataclasses.asdict(spec),
                  with_flow=with_flow, version=GENERATOR_VERSION, generator=NAME)
  files.write_json(os.path.join(output_dir, MANIFEST), manifest, indent=1)
  return synthetic.resolve_manifest(output_dir, manifest)


def ensure_dataset(synthetic_config: Any, with_flow: bool = False, show_progress: bool = True,
                   spec: Spec | None = None) -> dict[str, Any]:
  """{'train', 'test', 'class_names'} under expanduser(cache_dir)/independent-<hash>, built once.

  Only `seed` and `cache_dir` are read from config.data.synthetic: the rest of
  this dataset is fixed (Spec), so no recipe can tune it.
  """
  spec = spec or dataclasses.replace(DEFAULT_SPEC, seed=int(synthetic_config['seed']))
  root = os.path.expanduser(str(synthetic_config['cache_dir']))
  final_dir = os.path.join(root, f'{NAME}-{spec_hash(spec, with_flow)}')
  return synthetic.ensure_directory(
      final_dir, lambda tmp: write_dataset(tmp, spec, with_flow, show_progress),
      synthetic.load_complete)


def main(argv: list[str]) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog='python -m brave_jax.data.synthetic_independent',
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--output_dir', required=True)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--with_flow', action='store_true')
  args = p.parse_args(argv)
  log.configure_cli()
  dataset = write_dataset(args.output_dir, dataclasses.replace(DEFAULT_SPEC, seed=args.seed),
                          args.with_flow)
  _LOG.info(json.dumps({k: dataset[k] for k in ('train', 'test')}, indent=1))


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  main(sys.argv[1:])
