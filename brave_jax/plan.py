"""Plans a Cloud TPU run before renting it: compiles the real training step for a TPU topology.

  python -m brave_jax.plan --config=configs/brave_rgb_audio.py --topology=v5e:2x2 \
      [--batch_per_chip=8 | --find_max_batch] [--config.model.remat=True] [--json=plan.json]

No TPU is needed: libtpu (`pip install -e .[tpu-plan]`) compiles ahead of time for
a topology description (jax.experimental.topologies). The step is the one training
runs (train/step.py `make_pmapped_update`, pmapped over every chip of the slice,
state donated), so the TPU compiler's buffer assignment and cost analysis say, per
chip: the memory the step needs against the chip's HBM, the FLOPs of a step, and
from the chip's published peak the step time and clips/s at a stated utilisation;
`--find_max_batch` bisects the largest batch per chip that compiles within HBM and names
the fastest batch it compiled (the compiler recomputes to fit, so larger can be slower).
The host CPU cores needed to feed that rate come from the input pipeline's CPU time
per clip (bench/input_pipeline.py's `cpu_ms_per_clip`).

Why compile rather than estimate: the CPU compiler's memory figures for the same
step were about 2x the TPU compiler's (bench/README.md, "TPU plan"). The price: a
full-size compile takes about 10 minutes of a 2-core machine (much longer on a busy
one), so --find_max_batch guesses each next batch from a linear memory model and
needs about three compiles when the model holds.

Devices are chips: v4 and v5p chips hold two TensorCores, which JAX on a real v4/v5p
VM drives as one device per chip (megacore), so the plan compiles v4 with
`chip_config_name='megacore'` (v5p's default already is one device per chip) and
every figure is per chip. Results (the analysis numbers, not the executable) are
cached under ~/.cache/brave_jax/plans by a hash of config, topology, batch and the
jax/jaxlib/libtpu versions, so asking again is instant.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import re
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from brave_jax import config_base
from brave_jax import errors
from brave_jax import log

_LOG = log.get_logger(__name__)

GIB = 1024**3
PLAN_FORMAT = 1  # Bump when the cached analysis changes meaning.
DEFAULT_UTILISATION = 0.40
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'brave_jax', 'plans')


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  """Published per-chip figures of one TPU generation (Google Cloud TPU docs)."""
  name: str  # Generation as in topology names: 'v5e'.
  hbm_gib: float  # HBM per chip, as the docs state it (they write GB or GiB interchangeably).
  bf16_tflops: float  # Peak dense bf16 TFLOP/s per chip.
  f32_tflops: float | None  # Published f32 peak; None where the docs give none.
  tensorcores: int  # TensorCores per chip.
  chips_per_host: int  # Chips one TPU VM host drives in a multi-host slice.
  dims: int  # Topology dimensions: 'v4:2x2x1' has 3, 'v5e:2x2' has 2.
  chip_config_name: str | None  # Passed to get_topology_desc so that devices are chips.
  source: str


# Sources: Google Cloud TPU documentation, the "System architecture" / chip-specification
# tables of the pages named in `source` (cloud.google.com/tpu/docs/<page>). None of them
# publishes an f32 peak: the MXUs multiply bf16. With JAX's default precision a float32
# convolution or matmul on TPU runs as one bf16 pass with f32 accumulation (JAX docs,
# "Matmul precision"), so an f32 config's step runs at the bf16 peak; precision='highest'
# (six bf16 passes) would be about 1/6 of it. The f32 column below is that bound, labelled.
CHIPS: dict[str, ChipSpec] = {
    'v4': ChipSpec('v4', 32, 275, None, 2, 4, 3, 'megacore',
                   'Cloud TPU docs, "TPU v4" page: 275 TFLOP/s bf16, 32 GiB HBM2 per chip, '
                   '2 TensorCores per chip, 4 chips per host'),
    'v5e': ChipSpec('v5e', 16, 197, None, 1, 8, 2, None,
                    'Cloud TPU docs, "TPU v5e" page: 197 TFLOP/s bf16, 16 GB HBM2 per chip, '
                    '1 TensorCore per chip, 8 chips per host'),
    'v5p': ChipSpec('v5p', 95, 459, None, 2, 4, 3, None,
                    'Cloud TPU docs, "TPU v5p" page: 459 TFLOP/s bf16, 95 GB HBM2e per chip, '
                    '2 TensorCores per chip (one JAX device), 4 chips per host'),
    'v6e': ChipSpec('v6e', 32, 918, None, 1, 8, 2, None,
                    'Cloud TPU docs, "TPU v6e" page: 918 TFLOP/s bf16, 32 GB HBM per chip, '
                    '1 TensorCore per chip, 8 chips per host'),
}
F32_HIGHEST_PASSES = 6  # bf16 passes of an f32 matmul at precision='highest' on TPU.

TOPOLOGY_EXAMPLES = 'v4:2x2x1, v4:2x2x2, v5e:2x2, v5e:4x8, v5p:2x2x1, v5p:4x4x4, v6e:2x2'

# CPU milliseconds the input pipeline spends per training clip, measured end to end by
# bench/pipeline_stages.py (`cpu_ms_per_clip`) on bench/make_bench_shards.py's shards: config
# file name -> (ms, where it was measured). Configs without a figure need
# --pipeline_cpu_ms_per_clip.
PIPELINE_CPU_MS_PER_CLIP: dict[str, tuple[float, str]] = {
    # Medians of 3 rounds, each round running ours and the published re-statement in turn.
    'brave_rgb_audio': (28.1, 'bench/results/input_pipeline/pipeline_stages_vv-va_frame_spans'
                        '_idle.txt: V/A full size, default pipeline, 2-core VM idle, load 1.4-2.0'),
    'brave_rgb_rgb': (81.4, 'bench/results/input_pipeline/pipeline_stages_vv-va_frame_spans'
                      '_idle.txt: V/V full size, default pipeline, 2-core VM idle, load 1.8-2.9'),
    'brave_rgb_flow': (89.0, 'bench/results/input_pipeline/pipeline_stages_vf-vfa_frame_spans'
                       '_idle.txt: V/F full size, default pipeline, 2-core VM idle, load 1.5-2.1'),
    'brave_rgb_flow_audio': (94.3, 'bench/results/input_pipeline/pipeline_stages_vf-vfa_frame_'
                             'spans_idle.txt: V/FA full size, default pipeline, 2-core VM idle, '
                             'load 1.4-2.6'),
}


class PlanError(errors.UsageError):
  """The plan cannot be made as asked (no libtpu, unknown topology, bad batch)."""


@dataclasses.dataclass(frozen=True)
class Topology:
  """A parsed topology name: 'v5e:2x2' -> generation 'v5e', shape (2, 2), 4 chips."""
  name: str
  chip: ChipSpec
  shape: tuple[int, ...]

  @property
  def chips(self) -> int:
    return math.prod(self.shape)


def parse_topology(name: str) -> Topology:
  """Checks a topology name ('v5e:2x2', 'v4:2x2x1') against the chip table; PlanError if wrong."""
  accepted = (f'accepted: <generation>:<chips per dimension>, generation one of '
              f'{", ".join(CHIPS)} (v4/v5p take 3 dimensions, v5e/v6e 2), e.g. {TOPOLOGY_EXAMPLES}')
  match = re.fullmatch(r'(v[0-9a-z]+):([0-9]+(?:x[0-9]+)*)', name.strip())
  if not match:
    raise PlanError(f'--topology={name!r} is not a TPU topology name; {accepted}')
  generation, dims = match.group(1), tuple(int(d) for d in match.group(2).split('x'))
  if generation not in CHIPS:
    raise PlanError(f'--topology={name!r}: unknown TPU generation {generation!r}; {accepted}')
  chip = CHIPS[generation]
  if len(dims) != chip.dims or min(dims) < 1:
    raise PlanError(f'--topology={name!r}: {generation} topologies have {chip.dims} positive '
                    f'dimensions, got {match.group(2)!r}; {accepted}')
  return Topology(name.strip(), chip, dims)


# ---------------------------------------------------------------------------
# Arithmetic on the compiled step's numbers (pure, no libtpu).

def peak_bytes(memory: Mapping[str, int]) -> int:
  """Per-chip peak of a compiled step: arguments + outputs - donated (aliased) + temporaries.

  Generated code is listed beside it: XLA reports it separately and it is small.
  """
  return (int(memory['argument']) + int(memory['output']) - int(memory['alias'])
          + int(memory['temp']))


def throughput(flops_per_chip_step: float, batch_per_chip: int, tflops: float,
               utilisation: float = 1.0) -> dict[str, float]:
  """Step time and clips/s per chip if the chip ran at `utilisation` of `tflops` peak."""
  if flops_per_chip_step <= 0 or tflops <= 0 or not 0 < utilisation <= 1:
    raise ValueError(f'need positive FLOPs and peak and a utilisation in (0, 1], got '
                     f'{flops_per_chip_step}, {tflops}, {utilisation}')
  step_s = flops_per_chip_step / (tflops * 1e12 * utilisation)
  return {'step_s': step_s, 'clips_per_s': batch_per_chip / step_s}


def host_cores(clips_per_s: float, cpu_ms_per_clip: float) -> float:
  """CPU cores the input pipeline needs to produce `clips_per_s` at `cpu_ms_per_clip` each."""
  return clips_per_s * cpu_ms_per_clip / 1000.0


def pipeline_cost(config_spec: str, override_ms: float | None) -> tuple[float | None, str]:
  """(CPU ms per clip, its source) for a config: the flag if given, else the measured table."""
  if override_ms is not None:
    if override_ms <= 0:
      raise PlanError(f'--pipeline_cpu_ms_per_clip must be positive, got {override_ms}')
    return float(override_ms), '--pipeline_cpu_ms_per_clip'
  name = os.path.splitext(os.path.basename(config_spec.partition(':')[0]))[0]
  if config_spec.partition(':')[2]:  # tiny/demo variants decode other sizes: no figure.
    return None, f'not measured for {config_spec}'
  if name in PIPELINE_CPU_MS_PER_CLIP:
    ms, where = PIPELINE_CPU_MS_PER_CLIP[name]
    return ms, where
  return None, (f'not measured for {name}: run bench/input_pipeline.py on this config and pass '
                'its cpu_ms_per_clip as --pipeline_cpu_ms_per_clip')


def largest_fitting(fits: Callable[[int], bool], start: int, limit: int = 1024,
                    guess: Callable[[int, int | None], int | None] | None = None,
                    max_guesses: int = 2) -> tuple[int, list[int]]:
  """Largest batch b in [1, limit] with fits(b), assuming fits is monotone; few calls of fits.

  Each call is a compile (minutes at full size), so the next batch tried is `guess(lo, hi)`
  where it is given (e.g. a linear memory model through the largest batch that fitted),
  clamped strictly between the largest batch known to fit (lo, 0 if none) and the smallest
  known not to (hi, None if none); otherwise doubling until something fails, then bisection.
  The guess is used for at most `max_guesses` compiles: with an accurate one the search
  takes three compiles (start, the guess, the guess + 1); a wrong one costs two extra.
  Returns (the batch, 0 if not even 1 fits; the batches tried in order).
  """
  if not 1 <= start <= limit:
    raise ValueError(f'start batch {start} must be in [1, limit={limit}]')
  tried: list[int] = []
  lo, hi = 0, None
  b = start
  guesses_left = max_guesses
  while True:
    tried.append(b)
    if fits(b):
      lo = b
    else:
      hi = b
    ceiling = limit + 1 if hi is None else hi  # Exclusive bound on what is left to try.
    if ceiling - lo <= 1:
      return lo, tried
    default = min(2 * lo, limit) if hi is None else (lo + hi) // 2
    if lo == 0:
      default = max(1, hi // 2)
    proposal = guess(lo, hi) if guess is not None and guesses_left > 0 else None
    if proposal is None:
      b = default
    else:  # A guess lands on the answer or beside it; a wrong one must not walk step by step.
      guesses_left -= 1
      b = min(max(int(proposal), lo + 1), ceiling - 1)


def _taps(size: int, kernel: int, stride: int, count_padding: bool) -> tuple[int, int]:
  """(kernel taps summed over output positions, output size) along one 'SAME'-padded axis."""
  out = -(-size // stride)
  if count_padding:
    return out * kernel, out
  pad_lo = max((out - 1) * stride + kernel - size, 0) // 2
  inside = sum(1 for o in range(out) for j in range(kernel) if 0 <= o * stride + j - pad_lo < size)
  return inside, out


def resnet50_conv_flops(height: int, width: int, in_channels: int,
                        count_padding: bool = True) -> tuple[float, float]:
  """(all convolutions, the stem alone) of one forward pass of the bottleneck ResNet-50 (v2).

  A hand count to check the compiler's figure against: 2 FLOPs per multiply-add of each
  convolution with 'SAME' padding (output side = ceil(input / stride)), the layout of
  models/tsm_resnet.py and models/resnet_v2.py (7x7/2 stem, 3x3/2 max pool, units of
  3/4/6/3 bottleneck blocks of inner width 64/128/256/512 and strides 1/2/2/2, projection
  shortcut on each unit's first block). count_padding=False counts only the kernel taps
  that land inside the input (the zero border multiplies nothing): a lower bound.
  Batch norm, ReLU and the temporal shift are elementwise and left out.
  """
  def conv(h: int, w: int, k: int, s: int, cin: int, cout: int) -> tuple[float, int, int]:
    taps_h, ho = _taps(h, k, s, count_padding)
    taps_w, wo = _taps(w, k, s, count_padding)
    return 2.0 * taps_h * taps_w * cin * cout, ho, wo

  stem, h, w = conv(height, width, 7, 2, in_channels, 64)
  h, w = -(-h // 2), -(-w // 2)  # Max pool.
  total, cin = stem, 64
  for inner, blocks, stride in zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)):
    cout = 4 * inner
    for i in range(blocks):
      s = stride if i == 0 else 1
      if i == 0:
        total += conv(h, w, 1, s, cin, cout)[0]  # Projection shortcut.
      reduce_flops = conv(h, w, 1, 1, cin, inner)[0]
      spatial, ho, wo = conv(h, w, 3, s, inner, inner)
      total += reduce_flops + spatial + conv(ho, wo, 1, 1, inner, cout)[0]
      h, w, cin = ho, wo, cout
  return total, stem


def training_flops(forward: float, stem: float) -> float:
  """FLOPs of forward + backward: the backward pass costs two forwards (gradients of inputs and
  of weights), except that no gradient flows into the input images, so the stem's is skipped."""
  return 3.0 * forward - stem


def hand_count_flops_per_clip(config: ml_collections.ConfigDict,
                              count_padding: bool = True) -> float | None:
  """Forward + backward FLOPs of the backbones' convolutions for one training clip, by hand.

  Every view's backbone: the narrow video (frames x ResNet-50 at its size), each broad
  video-like view likewise, audio one ResNet-50 over the log-mel spectrogram as a
  1-channel image. Heads (two 4096-wide MLPs on 2048-d features: ~0.1 GFLOP), batch
  norm and the optimizer are left out. None unless every backbone is a ResNet-50 x1.
  """
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  m = config.model
  backbones = [m.narrow_backbone] + [m.audio_backbone if v == 'audio' else m.broad_video_backbone
                                     for v in config.data.broad_modalities]
  if any(b.depth != 50 or b.width_multiplier != 1 for b in backbones):
    return None
  shapes = pipeline.batch_shapes(config)
  views = [shapes['narrow']['video']] + list(shapes['broad'].values())
  total = 0.0
  for shape in views:
    if len(shape) == 2:  # Spectrogram [frames, mel bins]: one 1-channel image.
      total += training_flops(*resnet50_conv_flops(shape[0], shape[1], 1, count_padding))
    else:  # Video [T, H, W, C]: T images.
      total += shape[0] * training_flops(*resnet50_conv_flops(shape[1], shape[2], shape[3],
                                                              count_padding))
  return total


# ---------------------------------------------------------------------------
# Cache.

def versions() -> dict[str, str]:
  """jax, jaxlib and libtpu versions: a compiled plan is only valid for the compiler that made it."""
  out = {}
  for package in ('jax', 'jaxlib', 'libtpu'):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = 'none'
  return out


def cache_key(config: ml_collections.ConfigDict, topology: str, batch_per_chip: int,
              chip_config_name: str | None, version_info: Mapping[str, str]) -> str:
  """Hash of everything the compiled step depends on: model/data config, topology, batch, versions.

  The whole resolved config goes in (not a hand-picked subset), so no field that
  changes the step can be forgotten; the global batch is replaced by the per-chip one.
  """
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.training.batch_size = 0  # The per-chip batch below is what the step sees.
  text = json.dumps({'config': json.loads(c.to_json_best_effort(sort_keys=True)),
                     'topology': topology, 'chip_config_name': chip_config_name,
                     'batch_per_chip': int(batch_per_chip), 'versions': dict(version_info),
                     'format': PLAN_FORMAT}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_path(cache_dir: str, key: str) -> str:
  return os.path.join(os.path.expanduser(cache_dir), f'{key}.json')


def read_cache(cache_dir: str | None, key: str) -> dict[str, Any] | None:
  """The cached analysis for `key`, or None (no cache dir, missing or unreadable entry)."""
  if not cache_dir:
    return None
  try:
    with open(cache_path(cache_dir, key)) as f:
      entry = json.load(f)
  except (OSError, ValueError):
    return None
  return entry if isinstance(entry, dict) and entry.get('key') == key else None


def write_cache(cache_dir: str | None, key: str, entry: Mapping[str, Any]) -> None:
  """Stores one analysis atomically (a reader never sees half an entry)."""
  if not cache_dir:
    return
  from brave_jax import files  # pylint: disable=g-import-not-at-top
  path = cache_path(cache_dir, key)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.write_atomic(path, json.dumps({**entry, 'key': key}, indent=1, sort_keys=True))


# ---------------------------------------------------------------------------
# Compiling (needs libtpu for TPU topologies).

def require_libtpu() -> str:
  """libtpu's version; PlanError with the install command when it is not installed."""
  try:
    return importlib.metadata.version('libtpu')
  except importlib.metadata.PackageNotFoundError:
    raise PlanError('libtpu is not installed, so TPU steps cannot be compiled here: pip install '
                    "-e '.[tpu-plan]' (jax[tpu]==0.10.2, libtpu 0.0.42) in a separate "
                    'virtualenv') from None


def topology_devices(topology: Topology) -> list[Any]:
  """The topology's devices, one per chip (megacore on v4); PlanError naming the accepted forms."""
  require_libtpu()
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')  # Only compiling: no chip is opened.
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if topology.chip.chip_config_name:
    kwargs['chip_config_name'] = topology.chip.chip_config_name
  try:
    desc = topologies.get_topology_desc(topology_name=topology.name, platform='tpu', **kwargs)
  except Exception as error:  # pylint: disable=broad-except
    raise PlanError(f'--topology={topology.name!r}: libtpu refused it ({errors.first_line(error)});'
                    f' accepted forms, e.g. {TOPOLOGY_EXAMPLES}') from None
  devices = list(desc.devices)
  if len(devices) != topology.chips:
    raise PlanError(f'--topology={topology.name!r}: libtpu gave {len(devices)} devices for '
                    f'{topology.chips} chips; this plan counts per chip and cannot use it')
  return devices


def _abstract_inputs(config: ml_collections.ConfigDict, model: Any, optimizer: Any,
                     num_devices: int, batch_per_device: int):
  """(TrainState, batch) as ShapeDtypeStructs with the leading [devices] axis; nothing allocated."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  batch = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct((batch_per_device,) + tuple(s),
                                     jnp.float32 if s else jnp.int32),
      pipeline.batch_shapes(config), is_leaf=lambda x: isinstance(x, tuple))

  def init(rng, one_device_batch):
    params, state = model.init(rng, one_device_batch)
    return step_lib.TrainState(jnp.zeros([], jnp.int32), params, state, optimizer.init(params), rng)

  shapes = jax.eval_shape(init, jax.random.PRNGKey(0), batch)
  add = lambda s: jax.ShapeDtypeStruct((num_devices,) + tuple(s.shape), s.dtype)
  return jax.tree.map(add, shapes), jax.tree.map(add, batch)


def _is_out_of_memory(error: BaseException) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'Ran out of memory' in text or 'out of memory' in text


class _Ticker:
  """Prints 'still compiling (N s)' every `every` seconds while a compile runs."""

  def __init__(self, label: str, every: float):
    self._label, self._every = label, every
    self._stop = threading.Event()
    self._start = time.perf_counter()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self) -> None:
    while not self._stop.wait(self._every):
      _LOG.info(f'  ... still compiling {self._label} ({time.perf_counter() - self._start:.0f} s)')

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self._start


def compile_step(config: ml_collections.ConfigDict, devices: Sequence[Any],
                 batch_per_device: int, compiler_options: Mapping[str, str] | None = None
                 ) -> dict[str, Any]:
  """Compiles the training update for `devices` at `batch_per_device`; its memory and FLOPs.

  The same pmapped update train/loop.py runs (state donated, pmean over every device).
  Returns {'fits': False, 'error': ...} when the compiler runs out of device memory.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
  from brave_jax.train import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.training.batch_size = batch_per_device * len(devices)
  model = brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name='i')
  optimizer = optimizer_lib.make_optimizer(config)
  update = step_lib.make_pmapped_update(model, optimizer, 'i', list(devices),
                                        optimizer_lib.make_schedule(config))
  state, batch = _abstract_inputs(config, model, optimizer, len(devices), batch_per_device)
  try:
    compiled = update.pmapped.lower(state, batch).compile(
        compiler_options=dict(compiler_options) if compiler_options else None)
  except Exception as error:  # pylint: disable=broad-except
    if _is_out_of_memory(error):
      return {'fits': False, 'error': errors.first_line(error, limit=400)}
    raise
  stats = compiled.memory_analysis()
  memory = {k: int(getattr(stats, f'{k}_size_in_bytes'))
            for k in ('argument', 'output', 'alias', 'temp', 'generated_code')}
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  num_params = sum(int(math.prod(x.shape[1:])) for x in jax.tree.leaves(state.params))
  return {'fits': True, 'memory': memory, 'peak_bytes': peak_bytes(memory),
          'flops_per_device_step': float(cost['flops']),
          'bytes_accessed_per_device_step': float(cost.get('bytes accessed', 0.0)),
          'num_params': num_params}


# ---------------------------------------------------------------------------
# The plan: compile (or read the cache), then the per-chip report.

CompileFn = Callable[[ml_collections.ConfigDict, int], dict[str, Any]]


def analyse(config: ml_collections.ConfigDict, topology: Topology, batch_per_chip: int,
            compile_fn: CompileFn, *, cache_dir: str | None,
            version_info: Mapping[str, str]) -> dict[str, Any]:
  """The compiled step's numbers at one batch per chip: from the cache, or compiled and cached.

  compile_fn(config, batch_per_chip) does the compiling (compile_step on the topology's
  devices in the CLI; a fake in tests). Progress lines are logged (INFO).
  """
  if batch_per_chip < 1:
    raise PlanError(f'--batch_per_chip must be at least 1, got {batch_per_chip}')
  key = cache_key(config, topology.name, batch_per_chip, topology.chip.chip_config_name,
                  version_info)
  cached = read_cache(cache_dir, key)
  if cached is not None:
    _LOG.info(f'{topology.name} at batch {batch_per_chip} per chip: from the cache '
              f'({cache_path(cache_dir, key)}; compiled in {cached.get("compile_s", 0):.0f} s)')
    return cached
  label = f'for {topology.name} at batch {batch_per_chip} per chip'
  _LOG.info(f'compiling {label} ...')
  with _Ticker(label, 60.0) as ticker:
    result = dict(compile_fn(config, batch_per_chip))
  result.update(batch_per_chip=batch_per_chip, compile_s=round(ticker.elapsed, 1),
                load_average=round(os.getloadavg()[0], 2), versions=dict(version_info))
  verdict = (f'peak {result["peak_bytes"] / GIB:.2f} GiB' if result['fits'] else
             'out of device memory')
  _LOG.info(f'compiled {label} in {ticker.elapsed:.0f} s: {verdict}')
  write_cache(cache_dir, key, result)
  return result


def fits_chip(result: Mapping[str, Any], chip: ChipSpec) -> bool:
  """Compiled without running out of memory, and the peak is within the chip's HBM."""
  return bool(result['fits']) and result['peak_bytes'] <= chip.hbm_gib * GIB


def linear_guess(results: Mapping[int, Mapping[str, Any]], chip: ChipSpec
                 ) -> Callable[[int, int | None], int | None]:
  """Next batch to compile: where a line through the largest fitting batch reaches the HBM.

  Model: peak(b) = fixed + b * temp(lo) / lo, with fixed the peak less the temporaries
  (state, batch, outputs). Temporaries hold the activations, which grow with the batch.
  """
  def guess(lo: int, hi: int | None) -> int | None:
    if lo == 0 or lo not in results or not results[lo]['fits']:
      return None
    r = results[lo]
    per_clip = r['memory']['temp'] / lo
    if per_clip <= 0:
      return None
    fixed = r['peak_bytes'] - r['memory']['temp']
    return int((chip.hbm_gib * GIB - fixed) // per_clip)
  return guess


def find_max_batch(config: ml_collections.ConfigDict, topology: Topology, start: int,
                   limit: int, analyse_fn: Callable[[int], dict[str, Any]]
                   ) -> tuple[int, dict[int, dict[str, Any]]]:
  """Largest batch per chip that fits the chip's HBM, and every compile's result by batch."""
  del config
  results: dict[int, dict[str, Any]] = {}

  def fits(b: int) -> bool:
    results[b] = analyse_fn(b)
    return fits_chip(results[b], topology.chip)

  best, _ = largest_fitting(fits, start, limit, linear_guess(results, topology.chip))
  return best, results


def report(config: ml_collections.ConfigDict, config_spec: str, topology: Topology,
           result: Mapping[str, Any], *, utilisation: float,
           cpu_ms_per_clip: float | None, cpu_source: str,
           max_batch: int | None = None, tried: Mapping[int, Any] | None = None
           ) -> dict[str, Any]:
  """The plan as a JSON-able dict: per-chip memory, FLOPs, throughput and host cores."""
  chip = topology.chip
  b = int(result['batch_per_chip'])
  out: dict[str, Any] = {
      'config': config_spec, 'topology': topology.name, 'chips': topology.chips,
      'devices_are': 'chips' + (' (megacore: 2 TensorCores as one device)'
                                if chip.tensorcores == 2 else ''),
      'chip': dataclasses.asdict(chip),
      'compute_dtype': str(config.model.compute_dtype), 'remat': bool(config.model.remat),
      'batch_per_chip': b, 'global_batch': b * topology.chips,
      'utilisation': utilisation, 'compile_s': result.get('compile_s'),
      'versions': result.get('versions'),
      'fits': fits_chip(result, chip),
  }
  if not result['fits']:
    out['error'] = result.get('error')
  else:
    mem = result['memory']
    out['memory_gib'] = {k: mem[k] / GIB for k in mem}
    out['memory_gib']['peak'] = result['peak_bytes'] / GIB
    out['memory_gib']['hbm'] = float(chip.hbm_gib)
    flops = float(result['flops_per_device_step'])
    out['num_params'] = result.get('num_params')
    out['gflop_per_step'] = flops / 1e9
    out['gflop_per_clip'] = flops / b / 1e9
    hand = hand_count_flops_per_clip(config)
    out['hand_count_gflop_per_clip'] = None if hand is None else hand / 1e9
    inside = hand_count_flops_per_clip(config, count_padding=False)
    out['hand_count_no_padding_gflop_per_clip'] = None if inside is None else inside / 1e9
    rates = {'bf16_peak': chip.bf16_tflops,
             f'bf16_{int(round(utilisation * 100))}pct': chip.bf16_tflops * utilisation,
             'f32_highest_peak': chip.bf16_tflops / F32_HIGHEST_PASSES}
    out['throughput_per_chip'] = {}
    for name, tflops in rates.items():
      t = throughput(flops, b, tflops)
      out['throughput_per_chip'][name] = {'tflops': tflops, **t}
    at_util = out['throughput_per_chip'][f'bf16_{int(round(utilisation * 100))}pct']
    out['clips_per_s_slice_at_utilisation'] = at_util['clips_per_s'] * topology.chips
    out['pipeline_cpu_ms_per_clip'] = cpu_ms_per_clip
    out['pipeline_cpu_source'] = cpu_source
    if cpu_ms_per_clip is not None:
      per_chip = host_cores(at_util['clips_per_s'], cpu_ms_per_clip)
      out['host_cores_per_chip'] = per_chip
      out['host_cores_per_host'] = per_chip * min(chip.chips_per_host, topology.chips)
  if max_batch is not None:
    out['max_batch_per_chip'] = max_batch
    out['max_batch_compiles'] = {
        str(k): _tried_entry(k, v, chip, utilisation) for k, v in sorted((tried or {}).items())}
    fitting = {int(k): v for k, v in out['max_batch_compiles'].items() if v['fits']}
    if fitting:
      # Under memory pressure the TPU compiler recomputes activations, so FLOPs per clip rise
      # with the batch (V/A on v5e: 497 G at 8, 577 G at 24) and the largest batch that fits
      # need not be the fastest per chip (bench/README.md, "TPU plan").
      out['fastest_batch_per_chip'] = max(fitting, key=lambda b: (fitting[b]['clips_per_s'], b))
  return out


def _tried_entry(batch: int, result: Mapping[str, Any], chip: ChipSpec,
                 utilisation: float) -> dict[str, Any]:
  """One --find_max_batch compile as the plan reports it: fit, peak, FLOPs and clips/s."""
  if not result['fits']:
    return {'fits': False, 'compile_s': result.get('compile_s')}
  flops = float(result['flops_per_device_step'])
  rate = throughput(flops, batch, chip.bf16_tflops * utilisation)
  return {'peak_gib': result['peak_bytes'] / GIB, 'fits': fits_chip(result, chip),
          'gflop_per_clip': flops / batch / 1e9, 'clips_per_s': rate['clips_per_s'],
          'compile_s': result.get('compile_s')}


def format_report(plan: Mapping[str, Any]) -> str:
  """The plan as the few lines a person reads before renting the slice."""
  chip = plan['chip']
  lines = [f'Plan: {plan["config"]} on {plan["topology"]} ({plan["chips"]} chips; devices are '
           f'{plan["devices_are"]}), compute {plan["compute_dtype"]}, remat {plan["remat"]}, '
           f'batch {plan["batch_per_chip"]} per chip = {plan["global_batch"]} global']
  if 'memory_gib' not in plan:
    lines.append(f'  does NOT fit: the TPU compiler ran out of memory ({plan.get("error")})')
  else:
    m = plan['memory_gib']
    lines.append(f'  memory per chip: peak {m["peak"]:.2f} GiB of {m["hbm"]:g} GiB HBM '
                 f'({"fits" if plan["fits"] else "does NOT fit"}) = arguments {m["argument"]:.2f}'
                 f' + outputs {m["output"]:.2f} - aliased (donated state) {m["alias"]:.2f} + '
                 f'temporaries {m["temp"]:.2f}; generated code {m["generated_code"]:.3f}')
    lines.append(f'  FLOPs per chip: {plan["gflop_per_step"]:.0f} G per step, '
                 f'{plan["gflop_per_clip"]:.1f} G per clip (XLA cost analysis: forward, '
                 'backward and optimizer update)'
                 + (f'; hand count of the backbone convolutions: '
                    f'{plan["hand_count_no_padding_gflop_per_clip"]:.1f}-'
                    f'{plan["hand_count_gflop_per_clip"]:.1f} G per clip (without-with the zero '
                    'border)' if plan.get('hand_count_gflop_per_clip') else ''))
    for name, t in plan['throughput_per_chip'].items():
      lines.append(f'  at {name.replace("_", " ")} ({t["tflops"]:.1f} TFLOP/s): '
                   f'{t["step_s"] * 1e3:.0f} ms/step, {t["clips_per_s"]:.1f} clips/s per chip')
    lines.append(f'  (f32 configs use JAX\'s default matmul precision: one bf16 pass on TPU, so '
                 f'the bf16 rows apply; "f32 highest" is 1/{F32_HIGHEST_PASSES} of it. '
                 f'Slice at {plan["utilisation"]:.0%}: '
                 f'{plan["clips_per_s_slice_at_utilisation"]:.0f} clips/s)')
    if plan.get('host_cores_per_chip') is not None:
      lines.append(f'  host CPU to feed it: {plan["host_cores_per_chip"]:.1f} cores per chip, '
                   f'{plan["host_cores_per_host"]:.0f} per host of '
                   f'{min(chip["chips_per_host"], plan["chips"])} chips, at '
                   f'{plan["pipeline_cpu_ms_per_clip"]:g} CPU ms per clip '
                   f'({plan["pipeline_cpu_source"]})')
    else:
      lines.append(f'  host CPU: {plan["pipeline_cpu_source"]}')
  if 'max_batch_per_chip' in plan:
    tried = ', '.join(f'{k}: {"fits" if v["fits"] else "no"}'
                      + (f' ({v["peak_gib"]:.2f} GiB)' if 'peak_gib' in v else '')
                      for k, v in plan['max_batch_compiles'].items())
    lines.append(f'  largest batch per chip that fits: {plan["max_batch_per_chip"]} '
                 f'(compiled {tried})')
    if 'fastest_batch_per_chip' in plan:
      rates = ', '.join(f'{k}: {v["clips_per_s"]:.1f} ({v["gflop_per_clip"]:.1f} GFLOP/clip)'
                        for k, v in plan['max_batch_compiles'].items() if v['fits'])
      lines.append(f'  fastest of those per chip at {plan["utilisation"]:.0%} of bf16 peak: '
                   f'batch {plan["fastest_batch_per_chip"]} (clips/s by batch: {rates}; the '
                   'compiler recomputes activations to fit larger batches)')
  lines.append(f'  chip figures: {chip["source"]}')
  return '\n'.join(lines)


# ---------------------------------------------------------------------------
# Command line (flags are defined only when run as a program, so importing this module
# beside brave_jax.main in one process defines no second --config).

def run(config: ml_collections.ConfigDict, config_spec: str, topology_name: str, *,
        batch_per_chip: int | None, find_max: bool, max_batch_limit: int,
        utilisation: float, cpu_ms_override: float | None, cache_dir: str | None,
        compile_fn: CompileFn | None = None,
        version_info: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Makes the plan (compiling as needed) and returns its dict; see the module docstring."""
  topology = parse_topology(topology_name)
  if not 0 < utilisation <= 1:
    raise PlanError(f'--utilisation must be in (0, 1], got {utilisation}')
  cpu_ms, cpu_source = pipeline_cost(config_spec, cpu_ms_override)
  if batch_per_chip is None:
    global_batch = int(config.training.batch_size)
    if config_base.uneven_batch(global_batch, 1, topology.chips):
      raise PlanError(f'config.training.batch_size={global_batch} does not split over the '
                      f'{topology.chips} chips of {topology.name}: pass --batch_per_chip')
    batch_per_chip = global_batch // topology.chips
    _LOG.info(f'batch per chip {batch_per_chip}: the config\'s global batch {global_batch} over '
              f'{topology.chips} chips (--batch_per_chip to change it)')
  if compile_fn is None:
    devices = topology_devices(topology)

    def compile_fn(c, b):  # pylint: disable=function-redefined
      return compile_step(c, devices, b)
  version_info = dict(version_info or versions())

  def analyse_at(b: int) -> dict[str, Any]:
    return analyse(config, topology, b, compile_fn, cache_dir=cache_dir,
                   version_info=version_info)

  kwargs = dict(utilisation=utilisation, cpu_ms_per_clip=cpu_ms, cpu_source=cpu_source)
  if not find_max:
    return report(config, config_spec, topology, analyse_at(batch_per_chip), **kwargs)
  best, results = find_max_batch(config, topology, min(batch_per_chip, max_batch_limit),
                                 max_batch_limit, analyse_at)
  shown = results[best] if best else results[min(results)]
  return report(config, config_spec, topology, shown, max_batch=best, tried=results, **kwargs)


def _main_with_flags() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from brave_jax import cli  # pylint: disable=g-import-not-at-top

  cli.define_config_flag()
  parsed = cli.ParsedConfig()
  topology = flags.DEFINE_string('topology', None, f'Cloud TPU topology, e.g. {TOPOLOGY_EXAMPLES}.')
  batch = flags.DEFINE_integer('batch_per_chip', None, 'Clips per chip (default: the config\'s '
                               'training.batch_size over the chips).')
  find_max = flags.DEFINE_bool('find_max_batch', False, 'Bisect the largest batch per chip that '
                               'fits HBM (a few compiles; starts from --batch_per_chip).')
  limit = flags.DEFINE_integer('max_batch_limit', 1024, 'Largest batch per chip --find_max_batch '
                               'tries.')
  utilisation = flags.DEFINE_float('utilisation', DEFAULT_UTILISATION, 'Fraction of the bf16 peak '
                                   'the step is assumed to reach (MFU) for the stated clips/s.')
  cpu_ms = flags.DEFINE_float('pipeline_cpu_ms_per_clip', None, 'Input pipeline CPU ms per clip '
                              '(bench/input_pipeline.py cpu_ms_per_clip); default: the measured '
                              'figure for this config, if any.')
  json_path = flags.DEFINE_string('json', None, 'Also write the plan here as JSON.')
  cache_dir = flags.DEFINE_string('cache_dir', DEFAULT_CACHE_DIR, 'Compiled plans\' numbers; '
                                  '"" disables the cache.')

  def main(argv: Sequence[str]) -> None:
    log.configure_cli()
    if len(argv) > 1:
      raise PlanError(f'unexpected arguments {list(argv[1:])}; flags look like --topology=v5e:2x2')
    if not topology.value:
      raise PlanError(f'--topology is required, e.g. {TOPOLOGY_EXAMPLES}')
    plan = run(parsed.config, parsed.spec, topology.value, batch_per_chip=batch.value,
               find_max=find_max.value, max_batch_limit=limit.value,
               utilisation=utilisation.value, cpu_ms_override=cpu_ms.value,
               cache_dir=cache_dir.value or None)
    _LOG.info(format_report(plan))
    if json_path.value:
      from brave_jax import files  # pylint: disable=g-import-not-at-top
      files.write_atomic(json_path.value, json.dumps(plan, indent=2, sort_keys=True))
      _LOG.info(f'plan written to {json_path.value}')

  app.run(lambda argv: errors.run_cli(lambda: main(argv)),
          flags_parser=cli.absl_flags_parser(parsed))


if __name__ == '__main__':
  _main_with_flags()
