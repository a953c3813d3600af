"""The embedded default dataset: small labelled audio-visual videos, made on first use.

Lets `python -m brave_jax.main --config=...:demo` run with no download, and
still show what BraVe learns. Each class is (motion pattern, sound);
everything a randomly initialised network reads easily (global colour,
brightness, layout, texture, the object's shape) is a per-video nuisance, so a
linear probe on random features stays near chance while one on BraVe features,
which must predict the class-determined sound from the narrow clip, does not.

  motion  horizontal / vertical / diagonal oscillation, circle, figure 8, bounce,
          pulse, blink, shake, static  (flip-invariant: mirror pairs share a class)
  sound   class pitch (with harmonics) beeping at a class rhythm
  nuisance object shape (disk or square), object and background colour,
          background gratings and pan, position, amplitude, period, phase, spin,
          pixel noise, audio loudness, noise and hum.

Written as DMVR shards (dmvr_format) and cached under
`expanduser(cache_dir)/<hash of the config>`; a build goes to a temporary
directory that is renamed when complete, so an interrupted build is never used.

CLI: python -m brave_jax.data.synthetic --output_dir=/tmp/synth [--num_classes=10]
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tqdm

from brave_jax import files
from brave_jax import log
from brave_jax.data import dmvr_format
from brave_jax.data import flow as flow_lib

_LOG = log.get_logger(__name__)

GENERATOR_VERSION = 4  # Bump when the generated content changes, so old caches are not reused.
FPS = 25.0  # Matches config.data.video_fps.
AUDIO_RATE = 48000  # Matches config.data.audio_sample_rate.
JPEG_QUALITY = 90
MANIFEST = 'dataset.json'  # Written last: its presence marks a complete dataset directory.
# Flow as the converter makes it (convert --flow), not the generator's true motion, so the
# flow view trains on the same estimates as on real data. Farneback: ~1250 frames/CPU-s at
# 64x80; TV-L1 would take ~40 CPU-min for the demo set (11 frames/CPU-s).
FLOW_METHOD = 'farneback'
GRATING_TINT = 0.04  # Std of the background gratings' colour amplitude (texture nuisance).
HUM_LEVEL = 0.05  # Max amplitude of a per-video hum tone (audio nuisance, below the class tone).

# Classes are motions: what a small video net learns from the sound and a random one cannot
# read linearly (its pooled features mostly keep colour and layout). At 32 px a width-0.25
# TSM net barely told shapes apart, so the shape is a per-video nuisance drawn from these
# (mirror-symmetric, so a horizontal flip never changes what is drawn).
NUISANCE_SHAPES = ('disk', 'square')
ANY_SHAPE = 'any'  # class_factors' shape: drawn per video from NUISANCE_SHAPES.
# Flip-invariant motions (a mirror pair, e.g. left/right drift, is one class with a random
# direction), each visibly different within the 16-frame narrow window.
MOTIONS = ('horizontal', 'vertical', 'diagonal', 'circular', 'pulsing', 'blinking', 'static',
           'shaking', 'figure8', 'bouncing')
MAX_CLASSES = len(MOTIONS)
CONFIG_FIELDS = ('num_classes', 'train_videos_per_class', 'test_videos_per_class', 'seconds',
                 'height', 'width', 'seed')
SPLITS = ('train', 'test')


# ----------------------------------------------------------------------------- classes

def class_factors(num_classes: int) -> list[tuple[str, str]]:
  """(shape, motion) per class: the motion names the class, the shape is a per-video nuisance."""
  if not 1 <= num_classes <= MAX_CLASSES:
    raise ValueError(f'config.data.synthetic.num_classes must be in [1, {MAX_CLASSES}], '
                     f'got {num_classes}')
  return [(ANY_SHAPE, MOTIONS[c]) for c in range(num_classes)]


def class_names(num_classes: int) -> list[str]:
  """Names that sort in label order, so label index == position in sorted(class names)."""
  return [f'{c:02d}_{motion}' for c, (_, motion) in enumerate(class_factors(num_classes))]


def class_sound(label: int) -> tuple[float, float, float]:
  """(pitch Hz, beeps per second, duty cycle): distinct per class, pitch and rhythm decorrelated."""
  pitches = 400.0 * 2.0 ** (np.arange(MAX_CLASSES) * (math.log2(4000 / 400) / (MAX_CLASSES - 1)))
  # Spread neighbouring classes far apart in pitch (classes differing only by motion sound different).
  pitch = float(pitches[(label * 13) % MAX_CLASSES])
  rates = (1.5, 2.5, 3.5, 4.5, 6.0)
  duties = (0.25, 0.5, 0.75)
  return pitch, rates[label % len(rates)], duties[(label // len(rates)) % len(duties)]


# ----------------------------------------------------------------------------- shapes

def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Approximate signed distance (unit-radius scale, <0 inside) of a shape centred at 0."""
  r = np.sqrt(u * u + v * v)
  if shape == 'disk':
    return r - 1.0
  if shape == 'square':
    return np.maximum(np.abs(u), np.abs(v)) - 0.8
  raise ValueError(f'unknown shape {shape!r}; known: {NUISANCE_SHAPES}')


def _shape_areas() -> dict[str, float]:
  grid = np.linspace(-1.5, 1.5, 301)
  u, v = np.meshgrid(grid, grid)
  cell = (grid[1] - grid[0]) ** 2
  return {s: float((_shape_sdf(s, u, v) < 0).sum() * cell) for s in NUISANCE_SHAPES}


_AREAS = _shape_areas()
# Scales every shape to the disk's area, so the object's pixel count says nothing about the class.
_SIZE_FACTOR = {s: math.sqrt(_AREAS['disk'] / a) for s, a in _AREAS.items()}


def _soft_mask(shape: str, dx: np.ndarray, dy: np.ndarray, angle: np.ndarray,
               radius_px: np.ndarray) -> np.ndarray:
  """Anti-aliased coverage in [0, 1] of a rotated, scaled shape; offsets in pixels from its centre."""
  cos, sin = np.cos(angle), np.sin(angle)
  k = _SIZE_FACTOR[shape]
  scale = radius_px * k
  u = (dx * cos + dy * sin) / scale
  v = (-dx * sin + dy * cos) / scale
  return np.clip(0.5 - _shape_sdf(shape, u, v) * scale, 0.0, 1.0)


# ----------------------------------------------------------------------------- one video

def _random_colour(rng: np.random.Generator, size: int = 1) -> np.ndarray:
  """Saturated-ish RGB colours in [0, 1], uniform hue: colour is a nuisance, never a class cue."""
  hue = rng.uniform(0, 1, size)
  sat = rng.uniform(0.3, 1.0, size)
  val = rng.uniform(0.3, 1.0, size)
  k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6) % 6
  rgb = val[:, None] * (1 - sat[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))
  return rgb


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
  """An object colour far enough from the background colour to be visible."""
  candidates = _random_colour(rng, 16)
  far = np.linalg.norm(candidates - background, axis=1) > 0.45
  return candidates[int(np.argmax(far))] if far.any() else 1.0 - background


def _trajectory(rng: np.random.Generator, motion: str, t_T: np.ndarray, height: int, width: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Object centre (x, y) in pixels, scale multiplier and opacity per frame for a motion."""
  short = min(height, width)
  # ~One period inside the 0.64 s narrow clip, so each clip shows the motion's shape.
  period = rng.uniform(0.6, 0.9)
  phase = rng.uniform(0, 2 * math.pi)
  w = 2 * math.pi * t_T / period + phase
  amp_x = rng.uniform(0.16, 0.22) * width
  amp_y = rng.uniform(0.16, 0.22) * height
  cx = width / 2 + rng.uniform(-0.06, 0.06) * width
  cy = height / 2 + rng.uniform(-0.06, 0.06) * height
  drift = rng.uniform(-0.03, 0.03, 2) * short * t_T[:, None]  # Slow wander of the centre.
  ones = np.ones_like(t_T)
  x, y, scale, opacity = cx * ones, cy * ones, ones, ones
  if motion == 'horizontal':
    x = cx + amp_x * np.sin(w)
  elif motion == 'vertical':
    y = cy + amp_y * np.sin(w)
  elif motion == 'diagonal':  # Either diagonal (a flip maps one onto the other).
    sign = rng.choice([-1.0, 1.0])
    x, y = cx + 0.8 * amp_x * np.sin(w), cy + sign * 0.8 * amp_y * np.sin(w)
  elif motion == 'circular':  # Either direction (a flip reverses it).
    sign = rng.choice([-1.0, 1.0])
    x, y = cx + 0.8 * amp_x * np.cos(w), cy + sign * 0.8 * amp_y * np.sin(w)
  elif motion == 'pulsing':
    scale = 1.0 + 0.45 * np.sin(w)
  elif motion == 'blinking':  # In place, on/off about 3 times a second.
    opacity = (np.sin(w * 2.0) > -0.2).astype(np.float64)
  elif motion == 'static':
    pass
  elif motion == 'shaking':  # Fast small random jitter on both axes.
    x = cx + rng.normal(0, 0.05 * short, t_T.shape)
    y = cy + rng.normal(0, 0.05 * short, t_T.shape)
  elif motion == 'figure8':  # Lissajous 1:2; its mirror image is itself, phase-shifted.
    x, y = cx + amp_x * np.sin(w), cy + 0.7 * amp_y * np.sin(2 * w)
  elif motion == 'bouncing':  # A ball on a floor: fast at the bottom, slow at the top.
    y = cy + amp_y * (1.0 - 2.0 * np.abs(np.sin(w / 2)))
  else:
    raise ValueError(f'unknown motion {motion!r}; known: {MOTIONS}')
  return x + drift[:, 0], y + drift[:, 1], scale, opacity


def render_video(rng: np.random.Generator, shape: str, motion: str, num_frames: int, height: int,
                 width: int) -> np.ndarray:
  """uint8 frames [T, H, W, 3] of one clip."""
  t_T = np.arange(num_frames) / FPS
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  short = min(height, width)

  # Background: random colour + two drifting gratings of random orientation, frequency and tint.
  bg_colour = _random_colour(rng)[0]
  pan = rng.uniform(-0.08, 0.08, 2) * short  # Slow camera-like pan, px/s.
  bx_T, by_T = pan[0] * t_T, pan[1] * t_T
  bg_TxHxWx3 = np.broadcast_to(bg_colour, (num_frames, height, width, 3)).astype(np.float32)
  for _ in range(2):
    theta = rng.uniform(0, math.pi)
    freq = rng.uniform(0.5, 3.0) / short  # Cycles per pixel.
    tint = rng.normal(0, GRATING_TINT, 3)
    gx = (xx[None] - bx_T[:, None, None]) * math.cos(theta)
    gy = (yy[None] - by_T[:, None, None]) * math.sin(theta)
    wave = np.sin(2 * math.pi * freq * (gx + gy) + rng.uniform(0, 2 * math.pi))
    bg_TxHxWx3 = bg_TxHxWx3 + wave[..., None] * tint
  frames = bg_TxHxWx3

  # No distractor blob: with one, a tiny CPU model spent its few hundred steps telling
  # blobs apart instead of classes.

  # The class object.
  colour = _object_colour(rng, bg_colour)
  if shape == ANY_SHAPE:
    shape = NUISANCE_SHAPES[rng.integers(len(NUISANCE_SHAPES))]
  x_T, y_T, pulse_T, opacity_T = _trajectory(rng, motion, t_T, height, width)
  radius = rng.uniform(0.17, 0.21) * short
  spin = rng.uniform(-1.5, 1.5)  # rad/s
  angle_T = rng.uniform(0, 2 * math.pi) + spin * t_T
  radius_T = radius * pulse_T
  alpha = _soft_mask(shape, xx[None] - x_T[:, None, None], yy[None] - y_T[:, None, None],
                     angle_T[:, None, None], radius_T[:, None, None])[..., None]
  alpha = (alpha * opacity_T[:, None, None, None]).astype(np.float32)
  frames = frames * (1 - alpha) + alpha * colour

  # Global gain and sensor noise.
  frames = frames * rng.uniform(0.75, 1.15) + rng.normal(0, rng.uniform(0.0, 0.01),
                                                        frames.shape).astype(np.float32)
  return np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)


def render_audio(rng: np.random.Generator, label: int, seconds: float) -> np.ndarray:
  """float32 mono PCM in [-1, 1]: class pitch and rhythm, random loudness, noise and hum."""
  n = int(round(seconds * AUDIO_RATE))
  t = np.arange(n, dtype=np.float64) / AUDIO_RATE
  pitch, rate, duty = class_sound(label)
  pitch *= rng.uniform(0.97, 1.03)
  rate *= rng.uniform(0.93, 1.07)
  harmonics = rng.uniform(0.2, 0.6, 2)
  tone = np.sin(2 * math.pi * pitch * t + rng.uniform(0, 2 * math.pi))
  for h, weight in zip((2, 3), harmonics):
    tone += weight * np.sin(2 * math.pi * h * pitch * t + rng.uniform(0, 2 * math.pi))
  tone /= 1.0 + harmonics.sum()
  cycle = (t * rate + rng.uniform(0, 1)) % 1.0
  edge = 0.02 * rate  # ~20 ms attack and release.
  envelope = np.clip(cycle / edge, 0, 1) * np.clip((duty - cycle) / edge, 0, 1)
  hum_freq = rng.uniform(60, 8000)
  hum = rng.uniform(0, HUM_LEVEL) * np.sin(2 * math.pi * hum_freq * t)
  noise = rng.normal(0, rng.uniform(0.005, 0.08), n)
  wave = rng.uniform(0.25, 0.7) * tone * envelope + hum + noise
  return np.clip(wave, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- dataset

def _config_values(synthetic_config: Any) -> dict[str, Any]:
  try:
    values = {f: synthetic_config[f] for f in CONFIG_FIELDS}
  except (KeyError, AttributeError) as e:
    raise ValueError(f'config.data.synthetic is missing field {e}; it needs {CONFIG_FIELDS} '
                     '(see brave_jax/config_base.py)') from e
  for f in ('num_classes', 'train_videos_per_class', 'test_videos_per_class', 'height', 'width'):
    if not isinstance(values[f], int) or values[f] < 1:
      raise ValueError(f'config.data.synthetic.{f} must be a positive integer, got {values[f]!r}')
  if values['seconds'] * FPS < 2:
    raise ValueError(f'config.data.synthetic.seconds={values["seconds"]} gives fewer than 2 frames')
  class_factors(values['num_classes'])
  values['seconds'] = float(values['seconds'])
  return values


def config_hash(synthetic_config: Any, with_flow: bool = False) -> str:
  """Cache key: every field that changes the content, plus the generator version."""
  key = dict(_config_values(synthetic_config), with_flow=bool(with_flow),
             version=GENERATOR_VERSION, fps=FPS, audio_rate=AUDIO_RATE)
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _split_examples(values: Mapping[str, Any], split: str, with_flow: bool,
                    progress: tqdm.tqdm | None) -> Iterator[bytes]:
  """Serialised clips of one split, classes interleaved so every shard holds every class."""
  names = class_names(values['num_classes'])
  factors = class_factors(values['num_classes'])
  per_class = values[f'{split}_videos_per_class']
  num_frames = int(round(values['seconds'] * FPS))
  for i in range(per_class):
    for label, (shape, motion) in enumerate(factors):
      # One generator per video: content is independent of generation order and of other splits.
      rng = np.random.default_rng([values['seed'], SPLITS.index(split), label, i])
      frames = render_video(rng, shape, motion, num_frames, values['height'], values['width'])
      flow = flow_lib.compute_flow(frames, FLOW_METHOD) if with_flow else None
      clip = dmvr_format.Clip(
          frames_TxHxWx3=frames, waveform=render_audio(rng, label, values['seconds']),
          label_index=label, label_text=names[label], video_id=f'synthetic_{split}_{label:02d}_{i:04d}',
          fps=FPS, audio_rate=AUDIO_RATE, flow_TxHxWx2=flow,
          flow_method=FLOW_METHOD if with_flow else None)
      yield dmvr_format.encode_clip(clip, jpeg_quality=JPEG_QUALITY)
      if progress is not None:
        progress.update(1)


def num_shards(num_examples: int) -> int:
  """Shards for a generated split: one per 16 examples, between 1 and 8."""
  return max(1, min(8, num_examples // 16))


def write_dataset(synthetic_config: Any, output_dir: str, with_flow: bool = False,
                  show_progress: bool = True) -> dict[str, Any]:
  """Generates both splits into `output_dir` (not atomic: `ensure_dataset` adds that)."""
  values = _config_values(synthetic_config)
  names = class_names(values['num_classes'])
  os.makedirs(output_dir, exist_ok=True)
  total = values['num_classes'] * (values['train_videos_per_class'] +
                                   values['test_videos_per_class'])
  result: dict[str, Any] = {}
  with tqdm.tqdm(total=total, desc='synthetic dataset', unit='video',
                 disable=not show_progress, mininterval=1.0) as progress:
    for split in SPLITS:
      n = values['num_classes'] * values[f'{split}_videos_per_class']
      paths = dmvr_format.write_shards(_split_examples(values, split, with_flow, progress),
                                       output_dir, split, num_shards(n))
      result[split] = [os.path.basename(p) for p in paths]
  manifest = dict(result, class_names=names, config=values, with_flow=with_flow,
                  version=GENERATOR_VERSION, fps=FPS, audio_rate=AUDIO_RATE)
  files.write_json(os.path.join(output_dir, MANIFEST), manifest, indent=1)
  return resolve_manifest(output_dir, manifest)


def resolve_manifest(directory: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
  """{'train', 'test', 'class_names'} of a manifest (both generators write this layout)."""
  return {'train': [os.path.join(directory, p) for p in manifest['train']],
          'test': [os.path.join(directory, p) for p in manifest['test']],
          'class_names': list(manifest['class_names'])}


def load_complete(directory: str) -> dict[str, Any] | None:
  """The dataset in `directory` if its manifest and every shard exist, else None."""
  try:
    with open(os.path.join(directory, MANIFEST)) as f:
      dataset = resolve_manifest(directory, json.load(f))
  except (OSError, ValueError, KeyError):
    return None
  if all(os.path.isfile(p) for p in dataset['train'] + dataset['test']):
    return dataset
  return None


def ensure_directory(final_dir: str, write: Callable[[str], Any],
                     load: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
  """`load(final_dir)`, after building it with `write(tmp_dir)` + an atomic rename if needed."""
  dataset = load(final_dir)
  if dataset is not None:
    return dataset
  root = os.path.dirname(final_dir)
  os.makedirs(root, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix=f'.tmp-{os.path.basename(final_dir)}-', dir=root)
  try:
    write(tmp_dir)
    if os.path.isdir(final_dir) and load(final_dir) is None:
      shutil.rmtree(final_dir, ignore_errors=True)  # A broken leftover (e.g. copied by hand).
    try:
      os.rename(tmp_dir, final_dir)
    except OSError:
      if load(final_dir) is None:  # Not a lost race with another process: a real error.
        raise
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  dataset = load(final_dir)
  if dataset is None:
    raise RuntimeError(f'synthetic dataset in {final_dir} is incomplete after generation; '
                       'delete that directory and retry')
  return dataset


GENERATORS = ('embedded', 'independent')  # config.data.synthetic.generator values.


def generator_name(synthetic_config: Any) -> str:
  """config.data.synthetic.generator ('embedded' when the field is absent, as in old configs)."""
  try:
    name = synthetic_config['generator']
  except (KeyError, AttributeError):
    return 'embedded'
  if name not in GENERATORS:
    raise ValueError(f'config.data.synthetic.generator must be one of {GENERATORS}, got {name!r}')
  return name


def ensure_dataset(synthetic_config: Any, with_flow: bool = False,
                   show_progress: bool = True) -> dict[str, Any]:
  """{'train': [shards], 'test': [shards], 'class_names': [...]}, generated once and cached.

  The cache directory is `expanduser(cache_dir)/<config_hash>`. Generation
  writes into a temporary sibling that is renamed into place when complete,
  so an interrupted or concurrent build never leaves a half dataset in use.
  """
  if generator_name(synthetic_config) == 'independent':
    from brave_jax.data import synthetic_independent  # pylint: disable=g-import-not-at-top
    return synthetic_independent.ensure_dataset(synthetic_config, with_flow, show_progress)
  root = os.path.expanduser(str(synthetic_config['cache_dir']))
  final_dir = os.path.join(root, config_hash(synthetic_config, with_flow))
  return ensure_directory(final_dir,
                          lambda tmp: write_dataset(synthetic_config, tmp, with_flow, show_progress),
                          load_complete)


# ----------------------------------------------------------------------------- audio split

AUDIO_SPLIT_SEED = 2  # Seeds the audio clips apart from the video splits (0 train, 1 test).
AUDIO_META = 'meta.csv'  # ESC-50's layout: filename,fold,target,category.


def audio_clip_name(fold: int, label: int, index: int) -> str:
  """ESC-50-like file name {fold}-{clip}-{take}-{target}.wav (no file is written; it is the clip/id)."""
  return f'{fold}-{label:02d}{index:03d}-A-{label}.wav'


def add_background(rng: np.random.Generator, wave: np.ndarray,
                   snr_db: tuple[float, float]) -> np.ndarray:
  """Gaussian background noise at an SNR drawn from `snr_db` (dB, against the clip's power)."""
  if not snr_db:
    return wave
  snr = rng.uniform(*snr_db)
  power = float(np.mean(np.square(wave, dtype=np.float64)))
  noisy = wave + rng.normal(0.0, math.sqrt(power / 10 ** (snr / 10)), wave.shape)
  return (noisy / max(1.0, float(np.abs(noisy).max()))).astype(np.float32)


def write_audio_dataset(synthetic_config: Any, output_dir: str, *, num_folds: int = 5,
                        clips_per_fold: int = 1, seconds: float = 1.0,
                        snr_db: tuple[float, float] | tuple[()] = (0.0, 10.0),
                        show_progress: bool = True) -> dict[str, Any]:
  """Waveform-only records of the classes' sounds in ESC-50's shape: folds, a metadata CSV.

  Each clip is a fresh draw of `render_audio` (class pitch and rhythm; random
  loudness, noise and hum), from seeds no video of the train or test split
  uses, so an audio backbone is tested on sounds it has not heard; then
  background noise at an SNR in `snr_db` (() for none) is added.
  """
  values = _config_values(synthetic_config)
  names = class_names(values['num_classes'])
  os.makedirs(output_dir, exist_ok=True)
  rows, examples = [], []
  total = num_folds * clips_per_fold * values['num_classes']
  with tqdm.tqdm(total=total, desc='synthetic audio', unit='clip', disable=not show_progress,
                 mininterval=1.0) as progress:
    for fold in range(1, num_folds + 1):
      for i in range(clips_per_fold):
        for label in range(values['num_classes']):
          rng = np.random.default_rng([values['seed'], AUDIO_SPLIT_SEED, fold, label, i])
          name = audio_clip_name(fold, label, i)
          wave = add_background(rng, render_audio(rng, label, seconds), tuple(snr_db))
          examples.append(dmvr_format.encode_clip(dmvr_format.Clip(
              waveform=wave, label_index=label,
              label_text=names[label], video_id=name, audio_rate=AUDIO_RATE)))
          rows.append(f'{name},{fold},{label},{names[label]}')
          progress.update(1)
  paths = dmvr_format.write_shards(examples, output_dir, 'audio', num_shards(len(examples)))
  files.write_atomic(os.path.join(output_dir, AUDIO_META),
                     'filename,fold,target,category\n' + '\n'.join(rows) + '\n')
  manifest = dict(audio=[os.path.basename(p) for p in paths], class_names=names,
                  config=values, num_folds=num_folds, clips_per_fold=clips_per_fold,
                  seconds=seconds, snr_db=list(snr_db), version=GENERATOR_VERSION,
                  audio_rate=AUDIO_RATE)
  files.write_json(os.path.join(output_dir, MANIFEST), manifest, indent=1)
  return _load_audio(output_dir)


def _load_audio(directory: str) -> dict[str, Any] | None:
  try:
    with open(os.path.join(directory, MANIFEST)) as f:
      manifest = json.load(f)
    dataset = {'audio': [os.path.join(directory, p) for p in manifest['audio']],
               'folds_csv': os.path.join(directory, AUDIO_META),
               'class_names': list(manifest['class_names'])}
  except (OSError, ValueError, KeyError):
    return None
  if all(os.path.isfile(p) for p in dataset['audio'] + [dataset['folds_csv']]):
    return dataset
  return None


def ensure_audio_dataset(synthetic_config: Any, *, num_folds: int = 5, clips_per_fold: int = 1,
                         seconds: float = 1.0,
                         snr_db: tuple[float, float] | tuple[()] = (0.0, 10.0),
                         show_progress: bool = True) -> dict[str, Any]:
  """{'audio': [shards], 'folds_csv': path, 'class_names': [...]}: the embedded ESC-style split, cached.

  Defaults (config.audio_eval.synthetic): 10 classes x 5 folds x 1 clip of 1 s
  at 0-10 dB SNR, so each fold's classifier learns from 4 clips per class
  (bench/README.md, "Evaluation protocols on the embedded dataset": with 8 clean clips
  per fold any features separate the tones). ESC-50 itself: 50 classes x 5 folds x 8 clips of 5 s.
  """
  key = dict(_config_values(synthetic_config), kind='audio', num_folds=num_folds,
             clips_per_fold=clips_per_fold, seconds=float(seconds), version=GENERATOR_VERSION,
             audio_rate=AUDIO_RATE)
  if snr_db:  # Absent for clean clips, so their cache key stays that of the first version.
    key['snr_db'] = [float(x) for x in snr_db]
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  final_dir = os.path.join(os.path.expanduser(str(synthetic_config['cache_dir'])), f'audio-{digest}')
  return ensure_directory(final_dir,
                          lambda tmp: write_audio_dataset(
                              synthetic_config, tmp, num_folds=num_folds,
                              clips_per_fold=clips_per_fold, seconds=seconds,
                              snr_db=tuple(snr_db), show_progress=show_progress),
                          _load_audio)


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str]) -> None:
  del argv
  log.configure_cli()
  import ml_collections  # pylint: disable=g-import-not-at-top
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(config_base.base_config().data.synthetic.to_dict())
  for field in CONFIG_FIELDS:
    value = getattr(FLAGS, field)
    if value is not None:
      cfg[field] = value
  dataset = write_dataset(cfg, FLAGS.output_dir, with_flow=FLAGS.with_flow)
  _LOG.info(json.dumps(dataset, indent=1))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  flags.DEFINE_string('output_dir', None, 'Directory to write the shards and dataset.json into.',
                      required=True)
  flags.DEFINE_integer('num_classes', None, f'Classes (1..{MAX_CLASSES}); default from config_base.')
  flags.DEFINE_integer('train_videos_per_class', None, 'Train videos per class.')
  flags.DEFINE_integer('test_videos_per_class', None, 'Test videos per class.')
  flags.DEFINE_float('seconds', None, 'Length of each video (s).')
  flags.DEFINE_integer('height', None, 'Frame height (px).')
  flags.DEFINE_integer('width', None, 'Frame width (px).')
  flags.DEFINE_integer('seed', None, 'The dataset is a pure function of this seed and the sizes.')
  flags.DEFINE_bool('with_flow', False, 'Also write flow/encoded, extracted with FLOW_METHOD.')
  FLAGS = flags.FLAGS
  app.run(main)
