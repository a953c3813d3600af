"""Our training input pipeline against the published one, back to back on the same shards.

  python bench/pipeline_stages.py --seconds=20     # V/A, V/V, V/F, V/FA at full size
  python bench/pipeline_stages.py --seconds=2 --stage_clips=1 --views=va   # a smoke test
  python bench/pipeline_stages.py --views=vv --rounds=5 --no_stages \
      --pipelines=ours_device,published   # the ratio as the median of 5 alternating rounds

For each view setup (configs/brave_rgb_audio.py, brave_rgb_rgb.py,
brave_rgb_flow.py, brave_rgb_flow_audio.py at full size) it runs, one after
the other, each in a fresh process so no TF thread setting leaks:
- 'ours_host': brave_jax.data.pipeline.make_train_dataset with
  config.data.augment_on='host' (the whole view chain on the host);
- 'ours_device': the same with config.data.augment_on='device' (the full-size
  configs' default: the host decodes and crops and draws, ships the narrow
  crop unresized (data.narrow.resize_on='device'), the model step resizes and
  augments on the accelerator, which this bench does not count);
- 'ours_device_full_frame': that, with data.jpeg_decode='full_frame' (the same
  pixels, each frame decoded whole, as the published code does, rather than
  through a window a little wider than the crop);
- 'ours_device_host_resize': the same with the narrow view resized on the host
  and shipped as float32 (the default before data.narrow.resize_on);
- 'ours_device_uint8': that, shipping uint8 pixels
  (config.data.shipped_frames_dtype='uint8': 4x fewer bytes, each pixel
  rounded to the nearest level; float32 is exact);
- 'ours_device_reduced_scale': the default with data.jpeg_decode='reduced_scale'
  (libjpeg's 1/2-1/8 scaled decode of large crops: cheaper, not the published
  pixels; docs/fidelity.md);
- 'published': bench/published_pipeline.py, our op-for-op re-statement of
  the published tf.data chain (a yardstick; its docstring says where it may
  differ from the real one).
Each reports clips/s over --seconds after the first batch, CPU ms per clip
(the process's CPU time over the timed clips, all threads) and bytes per clip
of the batches it yields, with the 1-minute load average before and after.
With --rounds=N every pipeline runs once per round, in turn, and the tables
add medians: the same pipeline moved 10-20 % between runs on this project's
VM, so one run of each can make the ratio look better or worse than it is.

Then a stage table, host CPU ms per clip, for ours and the published chain:
each stage's function run on the previous stage's outputs, already in memory
(--stage_clips records, several random draws each, after warm-up draws that
compile every branch), in a process limited to one TF thread per op and one
op at a time, so a stage's CPU time is its own. Stages: read (the record's
bytes and parsing the needed features), sample (the sampler's windows,
gathering their JPEGs and the broad audio), decode+crop+resize (every view),
augment (every view), spectrogram, batch (tf.data batching of finished
examples into numpy) and transfer (jax.device_put of a batch; on a CPU-only
host a host copy, not a PCIe/ICI transfer). Run in isolation, the stages'
sum leaves out tf.data's own scheduling, which the end-to-end CPU ms include.
Our stages are those of the host chain; the 'host' sum beside them leaves out
what the config's default (augment_on='device') moves into the training step:
the augmentation and, with a broad audio view, the log-mel.

Shards: bench/make_bench_shards.py, 256x340 JPEG frames at 25 fps, 12 s, 48
kHz audio, written once under --shards_dir (plain/ for V/A and V/V, flow/
with a stored flow stream for V/F and V/FA). Results: JSON and a PNG bar chart
under --out (bench/results/input_pipeline/). The comparison means something
only on an idle machine: every figure is printed beside the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
_BENCH = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_BENCH)
sys.path.insert(0, _ROOT)
sys.path.insert(0, _BENCH)

VIEWS = {  # Name -> (config file, shard set).
    'va': ('configs/brave_rgb_audio.py', 'plain'),
    'vv': ('configs/brave_rgb_rgb.py', 'plain'),
    'vf': ('configs/brave_rgb_flow.py', 'flow'),
    'vfa': ('configs/brave_rgb_flow_audio.py', 'flow'),
}
OURS = {  # Our end-to-end runs: name -> (data.augment_on, data.shipped_frames_dtype,
        #                                data.narrow.resize_on, data.jpeg_decode).
    'ours_host': ('host', 'float32', 'host', 'full'),
    'ours_device': ('device', 'float32', 'device', 'full'),
    'ours_device_full_frame': ('device', 'float32', 'device', 'full_frame'),
    'ours_device_host_resize': ('device', 'float32', 'host', 'full'),
    'ours_device_uint8': ('device', 'uint8', 'host', 'full'),
    'ours_device_reduced_scale': ('device', 'float32', 'device', 'reduced_scale'),
}
PIPELINES = (*OURS, 'published')  # Every end-to-end run, in the order a round runs them.
STAGES = ('read', 'sample', 'decode_crop_resize', 'augment', 'spectrogram', 'batch', 'transfer')
_WARMUP_DRAWS = 8  # Draws per stage before timing: every tf.cond branch compiled.


def load_average() -> str:
  """`uptime`'s load averages (1, 5, 15 min)."""
  return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def _config(view: str, batch: int, pipeline_name: str):
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  config = config_base.load(os.path.join(_ROOT, VIEWS[view][0]))
  config.training.batch_size = batch
  if pipeline_name in OURS:  # 'ours' (the stage table) is the config's own default.
    (config.data.augment_on, config.data.shipped_frames_dtype,
     config.data.narrow.resize_on, config.data.jpeg_decode) = OURS[pipeline_name]
  return config


def _nbytes(tree: Any) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(tree, dict):
    return sum(_nbytes(v) for k, v in tree.items() if not str(k).startswith('_'))
  return int(np.asarray(tree).nbytes)


# ---------------------------------------------------------------------------
# Worker: end-to-end throughput of one pipeline.

def throughput(view: str, pipeline_name: str, shards: str, batch: int,
               seconds: float) -> dict[str, Any]:
  """clips/s, CPU ms per clip and bytes per clip of one pipeline after its first batch."""
  config = _config(view, batch, pipeline_name)
  if pipeline_name == 'published':
    import published_pipeline  # pylint: disable=g-import-not-at-top
    it = published_pipeline.make_dataset(config, shards, batch).as_numpy_iterator()
  else:
    from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    it = pipeline.make_train_dataset(config, shards, num_local_devices=1)
  load_before = load_average()
  t0 = time.perf_counter()
  first = next(it)
  first_s = time.perf_counter() - t0
  start, cpu_start, clips = time.perf_counter(), time.process_time(), 0
  while time.perf_counter() - start < seconds or clips == 0:
    next(it)
    clips += batch
  elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  return {'view': view, 'pipeline': pipeline_name, 'clips': clips, 'seconds': elapsed,
          'first_batch_s': first_s, 'clips_per_s': clips / elapsed,
          'cpu_ms_per_clip': 1000 * cpu / clips, 'bytes_per_clip': _nbytes(first) // batch,
          'load_before': load_before, 'load_after': load_average()}


# ---------------------------------------------------------------------------
# Worker: the stage table.

def _timed(fn, inputs: list[tuple], draws: int) -> float:
  """CPU ms per call of fn(*inputs[i], seed) over `draws` seeds per input, after warm-up."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seed = lambda k: tf.constant([k, 17], tf.int64)
  for k in range(_WARMUP_DRAWS):
    fn(*inputs[k % len(inputs)], seed(1000 + k))
  calls, cpu = 0, time.process_time()
  for k in range(draws):
    for args in inputs:
      out = fn(*args, seed(k))
      tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, 'numpy') else t, out)
      calls += 1
  return 1000 * (time.process_time() - cpu) / calls


def _stage_functions(config, pipeline_name: str):
  """{stage: tf.function} for the per-example stages of one pipeline (read is timed apart)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  from brave_jax.data import augment, decode, dmvr_format, pipeline, reader, resize_device, sampling, spectrogram  # pylint: disable=g-import-not-at-top,multiple-imports
  import published_pipeline  # pylint: disable=g-import-not-at-top
  d = config.data
  modalities = tuple(d.broad_modalities)
  num_samples = pipeline.audio_num_samples(config)
  sizes = {'narrow': d.narrow.image_size, 'broad_video': d.broad.image_size,
           'flow': d.broad.image_size}
  views = ['narrow'] + [k for m, k in (('video', 'broad_video'), ('rc', 'broad_video'),
                                       ('flow', 'flow')) if m in modalities]
  rc = {'narrow': False, 'broad_video': 'rc' in modalities or bool(d.random_convolve_broad_video)}
  published = pipeline_name == 'published'
  narrow_on_device = not published and config_base.resizes_narrow_on_device(config)

  @tf.function
  def sample(ex, seed):
    if published:
      return published_pipeline.sample(ex, config, seed)
    # The frames the windows pick, cut out of the record (the pipeline cuts the same spans
    # in Python, from the record its read op held).
    image, flow = ex['spans'][dmvr_format.IMAGE_KEY], ex['spans'].get(dmvr_format.FLOW_KEY)
    cut = reader.frames_cut_from(ex['record'])
    n = tf.shape(image)[0]
    win = sampling.train_windows(
        n, narrow_frames=d.narrow.num_frames, narrow_step=d.narrow.frame_step,
        broad_frames=d.broad.num_frames, broad_step=d.broad.frame_step,
        broad_start=d.broad_start, seed=seed)
    out = {'narrow': cut(tf.gather(image, win['narrow'])),
           'broad_video': cut(tf.gather(image, win['broad']))}
    if flow is not None:
      out['flow'] = cut(tf.gather(flow, tf.math.floormod(win['broad'], tf.shape(flow)[0])))
    if 'audio' in ex:
      out['audio'] = sampling.broad_audio_window(ex['audio'], win['broad_start'], num_samples,
                                                 n, win['looped_frames'])
    return out

  # Frames both RGB views use, decoded once, as the training pipeline does.
  shared = {} if published else pipeline.frames_decoded_once(config)

  @tf.function
  def decode_crop_resize(sampled, seed):
    out = {}
    seeds = dict(zip(views, tf.unstack(tf.random.experimental.stateless_split(seed, 3))))
    windows = {v: decode.random_crop_window(decode.jpeg_shape(sampled[v][0]),
                                            d.augment.crop_area_range,
                                            d.augment.crop_aspect_range, seeds[v])
               for v in views if not published}
    crop_fns = {}
    if shared and 'broad_video' in views:
      crop_fns['narrow'], crop_fns['broad_video'] = pipeline._shared_full_decode(  # pylint: disable=protected-access
          sampled['narrow'], sampled['broad_video'], shared, windows['narrow'],
          windows['broad_video'], d.jpeg_decode)
    for v in views:
      if published:
        out[v] = published_pipeline.crop_resize(
            published_pipeline.decode_frames(sampled[v]), sizes[v], d.augment, seeds[v])[0]
      else:
        window = windows[v]
        if v in crop_fns:
          crop = crop_fns[v](window)
        elif v != 'flow':
          crop = decode.decode_train_crop_pixels(sampled[v], window, sizes[v], d.jpeg_decode)
        if v == 'narrow' and narrow_on_device:  # Shipped unresized: the step resizes it.
          out[v] = resize_device.flat_crop(crop, d.narrow.crop_buffer_pixels)
          out['narrow_crop_hw'] = tf.shape(crop)[1:3]
          continue
        if v != 'flow':
          out[v] = tf.image.resize(crop, [sizes[v]] * 2, method='bilinear')
          continue
        out[v] = decode.decode_train_crop(sampled[v], window, sizes[v], d.jpeg_decode,
                                          decode.FLOW_DCT_METHOD)
    return out

  def unflattened_resize(frames):
    """The narrow view a flat crop resizes to, by tf.image.resize: timed with the augment
    stage, since with data.narrow.resize_on='device' the resize moved to the device with it."""
    h, w = tf.unstack(frames['narrow_crop_hw'])
    flat = frames['narrow'][:, :h * w]
    crop = tf.reshape(flat, [d.narrow.num_frames, h, w, 3])
    return tf.image.resize(crop, [sizes['narrow']] * 2, method='bilinear')

  @tf.function
  def augment_views(frames, seed):
    out = {}
    for v, s in zip(views, tf.unstack(tf.random.experimental.stateless_split(seed, 3))):
      if v == 'flow':
        window = tf.constant([10, 10, 200, 250])  # The vector scaling's cost does not depend on it.
        if published:
          out[v] = published_pipeline.flow_view(frames[v], window, sizes[v], d.augment, s)
        else:
          flow = decode.scale_flow_to_view(decode.flow_to_unit(frames[v]), window, sizes[v])
          flow, flipped = augment.random_flip(flow, d.augment.flip_prob, s)
          out[v] = flow * tf.where(flipped, tf.constant([-1.0, 1.0]), tf.constant([1.0, 1.0]))
      elif published:
        out[v] = published_pipeline.augment_rgb(frames[v], d.augment, s, blur=True,
                                                random_conv=rc[v])
      else:
        x = unflattened_resize(frames) if v == 'narrow' and narrow_on_device else frames[v]
        out[v] = augment.augment_clip(x, d.augment, s, blur=True, random_conv=rc[v])
    return out

  @tf.function
  def log_mel(sampled, seed):
    del seed
    if published:
      return published_pipeline.log_mel(sampled['audio'], config)
    return spectrogram.from_config(sampled['audio'], d)

  return {'sample': sample, 'decode_crop_resize': decode_crop_resize, 'augment': augment_views,
          'spectrogram': log_mel if 'audio' in modalities else None}


def _read_stage(config, pipeline_name: str, files: list[str], num_clips: int):
  """(CPU ms per clip of reading + parsing, the parsed examples).

  Ours reads as its pipeline does: the record split, only what is not a frame parsed, the
  frames cut out later by the sample stage."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
  import published_pipeline  # pylint: disable=g-import-not-at-top
  modalities = tuple(config.data.broad_modalities)
  if pipeline_name == 'published':
    parse = tf.function(lambda s: published_pipeline.parse(s, modalities))
    records = tf.data.TFRecordDataset(files).take(num_clips).map(parse)
    next(iter(records))  # Trace.
    cpu = time.process_time()
    examples = list(records)
    for ex in examples:
      ex['video'].numpy()
    return 1000 * (time.process_time() - cpu) / len(examples), examples
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  index = reader.index_shards(files)
  keys = reader.frame_keys(flow='flow' in modalities)
  # The pipeline's own read op (record read, checked and split; the record without its
  # frame lists parsed), in a tf.data map as the pipeline runs it. max_held=0 drops the
  # held record at once: the sample stage cuts its frames from a copy read untimed below.
  read, _ = pipeline._frames_on_demand_reader(index, keys, max_held=0)  # pylint: disable=protected-access

  def read_parse(entry):
    parts = read(entry, entry)
    ex = reader.parse_example(parts.rest, video=False, audio='audio' in modalities)
    return dict(ex, spans=parts.spans)
  records = tf.data.Dataset.range(num_clips).map(read_parse)
  next(iter(records))  # Trace.
  cpu = time.process_time()
  examples = list(records)
  elapsed = time.process_time() - cpu
  rd = index.reader()
  for i, ex in enumerate(examples):
    ex['record'] = tf.constant(index.read(rd, i))
  return 1000 * elapsed / len(examples), examples


def _stages_on_device(config) -> tuple[str, ...]:
  """The stages the config's own pipeline leaves to the training step (data.augment_on)."""
  from brave_jax.data import augment_device  # pylint: disable=g-import-not-at-top
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  if not config_base.augments_on_device(config):
    return ()
  return ('augment',) + (('spectrogram',) if augment_device.ships_broad_audio_waveform(config)
                         else ())


def stages(view: str, pipeline_name: str, shards: str, batch: int, num_clips: int,
           draws: int) -> dict[str, Any]:
  """Host CPU ms per clip of every stage of one pipeline, one TF thread, inputs in memory."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
  config = _config(view, batch, pipeline_name)
  load_before = load_average()
  files = reader.list_shards(shards)
  ms: dict[str, float | None] = {}
  ms['read'], examples = _read_stage(config, pipeline_name, files, num_clips)
  fns = _stage_functions(config, pipeline_name)
  sampled = [fns['sample'](ex, tf.constant([i, 3], tf.int64)) for i, ex in enumerate(examples)]
  ms['sample'] = _timed(fns['sample'], [(ex,) for ex in examples], draws)
  frames = [fns['decode_crop_resize'](s, tf.constant([i, 5], tf.int64))
            for i, s in enumerate(sampled)]
  ms['decode_crop_resize'] = _timed(fns['decode_crop_resize'], [(s,) for s in sampled], draws)
  ms['augment'] = _timed(fns['augment'], [(f,) for f in frames], draws)
  ms['spectrogram'] = (_timed(fns['spectrogram'], [(s,) for s in sampled], draws)
                       if fns['spectrogram'] else None)
  example = fns['augment'](frames[0], tf.constant([0, 7], tf.int64))
  if 'audio' in sampled[0]:
    example['audio'] = fns['spectrogram'](sampled[0], tf.constant([0, 7], tf.int64))
  example = tf.nest.map_structure(tf.convert_to_tensor, example)
  ds = tf.data.Dataset.from_tensors(example).repeat().batch(batch)
  it = ds.as_numpy_iterator()
  next(it)
  cpu, reps = time.process_time(), max(4, 2 * draws)
  for _ in range(reps):
    host_batch = next(it)
  ms['batch'] = 1000 * (time.process_time() - cpu) / (reps * batch)
  jax.block_until_ready(jax.device_put(host_batch))
  cpu = time.process_time()
  for _ in range(reps):
    jax.block_until_ready(jax.device_put(host_batch))
  ms['transfer'] = 1000 * (time.process_time() - cpu) / (reps * batch)
  on_device = _stages_on_device(config) if pipeline_name == 'ours' else ()
  return {'view': view, 'pipeline': pipeline_name, 'cpu_ms_per_clip': ms,
          'stage_sum_ms': float(np.sum([v for v in ms.values() if v is not None])),
          'on_device': list(on_device),
          'host_sum_ms': float(np.sum([v for k, v in ms.items()
                                       if v is not None and k not in on_device])),
          'bytes_per_clip': _nbytes(host_batch) // batch, 'jpeg_decode': config.data.jpeg_decode,
          'device': str(jax.devices()[0]), 'clips': num_clips, 'draws': draws,
          'load_before': load_before, 'load_after': load_average()}


# ---------------------------------------------------------------------------
# The driver.

def _run_worker(args: argparse.Namespace, **kw) -> dict[str, Any] | None:
  """Runs one measurement in a fresh process; its last stdout line is the JSON result."""
  cmd = [sys.executable, os.path.abspath(__file__)] + [f'--{k}={v}' for k, v in kw.items()]
  cmd += [f'--batch={args.batch}', f'--seconds={args.seconds}',
          f'--stage_clips={args.stage_clips}', f'--stage_draws={args.stage_draws}']
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                        env=dict(os.environ, PYTHONPATH=_ROOT + os.pathsep +
                                 os.environ.get('PYTHONPATH', '')))
  if proc.returncode != 0:
    print(f'  FAILED ({" ".join(cmd[2:])}):\n{proc.stderr[-3000:]}', flush=True)
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _shards(args: argparse.Namespace, kind: str) -> str:
  """The bench shard set `kind` ('plain' or 'flow'), written first if missing."""
  import make_bench_shards  # pylint: disable=g-import-not-at-top
  out = os.path.join(args.shards_dir, kind)
  if not (os.path.isdir(out) and any(f.startswith('bench-') for f in os.listdir(out))):
    print(f'writing {kind} bench shards to {out} ...', flush=True)
    make_bench_shards.make_bench_shards(out, args.clips, min(8, args.clips), flow=kind == 'flow')
    print(flush=True)
  return os.path.join(out, 'bench-*')


def _published_run(runs: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any] | None:
  """The published pipeline's run of `run`'s view and round, which its ratio is taken against."""
  return next((p for p in runs if p['view'] == run['view'] and p['pipeline'] == 'published'
               and p.get('round', 0) == run.get('round', 0)), None)


def medians(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
  """(view, pipeline) -> median clips/s and CPU ms per clip over its rounds, and the median
  over rounds of its clips/s against the published pipeline's in the same round."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = {}
  for key in dict.fromkeys((r['view'], r['pipeline']) for r in runs):
    mine = [r for r in runs if (r['view'], r['pipeline']) == key]
    ratios = [r['clips_per_s'] / p['clips_per_s'] for r in mine
              for p in [_published_run(runs, r)] if p is not None]
    out[key] = {'clips_per_s': float(np.median([r['clips_per_s'] for r in mine])),
                'cpu_ms_per_clip': float(np.median([r['cpu_ms_per_clip'] for r in mine])),
                'rounds': len(mine),
                'ratio_to_published': float(np.median(ratios)) if ratios else None,
                'ratios_by_round': ratios}
  return out


def _plot(results: dict[str, Any], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_tp, ax_st) = plt.subplots(1, 2, figsize=(13, 4.5))
  med = medians(results['throughput'])
  views = list(dict.fromkeys(v for v, _ in med))
  names = list(dict.fromkeys(n for _, n in med))
  width = 0.8 / max(len(names), 1)
  for j, name in enumerate(names):
    ys = [med[(v, name)]['cpu_ms_per_clip'] if (v, name) in med else 0 for v in views]
    ax_tp.bar([i + j * width for i in range(len(views))], ys, width, label=name)
  ax_tp.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(views))], views)
  ax_tp.set_ylabel('host CPU ms per clip (end to end'
                   + (f", median of {results['rounds']} rounds)" if results.get('rounds', 1) > 1
                      else ')'))
  ax_tp.legend()
  bars = results['stages']
  labels = [f"{r['view']}\n{r['pipeline']}" for r in bars]
  bottom = [0.0] * len(bars)
  for stage in STAGES:
    ys = [r['cpu_ms_per_clip'].get(stage) or 0.0 for r in bars]
    ax_st.bar(range(len(bars)), ys, bottom=bottom, label=stage)
    bottom = [b + y for b, y in zip(bottom, ys)]
  ax_st.set_xticks(range(len(bars)), labels, fontsize=7)
  ax_st.set_ylabel('host CPU ms per clip, one thread')
  ax_st.legend(fontsize=7)
  fig.suptitle(f"input pipeline, full size, batch {results['batch']}; load "
               f"{results['load_start']} -> {results['load_end']}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _print_tables(results: dict[str, Any]) -> None:
  runs = results['throughput']
  print('\nend to end (clips/s, CPU ms/clip, MB/clip, load before -> after):')
  for r in runs:
    pub = _published_run(runs, r)
    ratio = (f" ours/published clips/s {r['clips_per_s'] / pub['clips_per_s']:.2f}x, CPU "
             f"{r['cpu_ms_per_clip'] / pub['cpu_ms_per_clip']:.2f}x"
             if pub and r is not pub else '')
    print(f"  {r['view']:4s} {r['pipeline']:17s} {r['clips_per_s']:7.1f} clips/s "
          f"{r['cpu_ms_per_clip']:8.1f} ms {r['bytes_per_clip'] / 2**20:7.2f} MB  "
          f"[load {r['load_before']} -> {r['load_after']}]{ratio}"
          + (f" (round {r['round']})" if results.get('rounds', 1) > 1 else ''))
  if results.get('rounds', 1) > 1:
    print(f"\nmedians over {results['rounds']} rounds (each round runs every pipeline once, in "
          'turn; ratio: median over rounds of clips/s against that round\'s published run):')
    for (view, name), m in medians(runs).items():
      ratio = m['ratio_to_published']
      print(f"  {view:4s} {name:17s} {m['clips_per_s']:7.1f} clips/s {m['cpu_ms_per_clip']:8.1f} ms"
            + (f"  {ratio:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in m['ratios_by_round'])})"
               if ratio is not None and name != 'published' else ''))
  print('\nstages, host CPU ms per clip, one TF thread (' + ', '.join(STAGES) + '):')
  for r in results['stages']:
    cells = ' '.join(f"{(r['cpu_ms_per_clip'].get(s) or 0):8.1f}" for s in STAGES)
    moved = (f"  host {r['host_sum_ms']:7.1f} (without {'+'.join(r['on_device'])}: on the device)"
             if r.get('on_device') else '')
    print(f"  {r['view']:4s} {r['pipeline']:10s} {cells}  sum {r['stage_sum_ms']:8.1f}{moved}  "
          f"{r['bytes_per_clip'] / 2**20:6.2f} MB/clip  [load {r['load_before']} -> "
          f"{r['load_after']}]")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--views', default='va,vv,vf,vfa', help=f'comma list of {sorted(VIEWS)}')
  parser.add_argument('--shards_dir', default='/tmp/brave_bench_shards_stages')
  parser.add_argument('--clips', type=int, default=32, help='clips per bench shard set')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--seconds', type=float, default=20.0, help='timed seconds per pipeline')
  parser.add_argument('--stage_clips', type=int, default=4, help='records the stages run on')
  parser.add_argument('--stage_draws', type=int, default=3, help='random draws per record')
  parser.add_argument('--no_stages', action='store_true', help='end-to-end figures only')
  parser.add_argument('--rounds', type=int, default=1, help='end-to-end rounds: each runs every '
                      'pipeline once, in turn; tables give medians (this VM moves 10-20 %% '
                      'between runs)')
  parser.add_argument('--pipelines', default=','.join(PIPELINES),
                      help='comma list of end-to-end pipelines to run')
  parser.add_argument('--out', default=os.path.join(_BENCH, 'results', 'input_pipeline'))
  parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
  parser.add_argument('--view', default='', help=argparse.SUPPRESS)
  parser.add_argument('--pipeline', default='', help=argparse.SUPPRESS)
  parser.add_argument('--shards', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.worker == 'throughput':
    print(json.dumps(throughput(args.view, args.pipeline, args.shards, args.batch, args.seconds)))
    return
  if args.worker == 'stages':
    print(json.dumps(stages(args.view, args.pipeline, args.shards, args.batch, args.stage_clips,
                            args.stage_draws)))
    return

  views = [v for v in args.views.split(',') if v]
  unknown = set(views) - set(VIEWS)
  if unknown:
    parser.error(f'--views: unknown {sorted(unknown)}; choose from {sorted(VIEWS)}')
  pipelines = [p for p in args.pipelines.split(',') if p]
  unknown = set(pipelines) - set(PIPELINES)
  if unknown:
    parser.error(f'--pipelines: unknown {sorted(unknown)}; choose from {sorted(PIPELINES)}')
  results: dict[str, Any] = {
      'batch': args.batch, 'seconds': args.seconds, 'rounds': args.rounds,
      'cpu_count': os.cpu_count(),
      'load_start': load_average(), 'throughput': [], 'stages': []}
  print(f'load average at start: {results["load_start"]}', flush=True)
  shards = {v: _shards(args, VIEWS[v][1]) for v in views}
  for v in views:
    for round_ in range(args.rounds):
      for name in pipelines:
        r = _run_worker(args, worker='throughput', view=v, pipeline=name, shards=shards[v])
        if r:
          results['throughput'].append(dict(r, round=round_))
          print(f"{v:4s} {name:17s} {r['clips_per_s']:7.1f} clips/s, "
                f"{r['cpu_ms_per_clip']:7.1f} CPU ms/clip, {r['bytes_per_clip'] / 2**20:.2f} "
                f"MB/clip [load {r['load_before']} -> {r['load_after']}] (round {round_})",
                flush=True)
    if not args.no_stages:
      for name in ('ours', 'published'):
        r = _run_worker(args, worker='stages', view=v, pipeline=name, shards=shards[v])
        if r:
          results['stages'].append(r)
          print(f"{v:4s} {name:12s} stages (CPU ms/clip): "
                + ', '.join(f'{k} {x:.1f}' for k, x in r['cpu_ms_per_clip'].items()
                            if x is not None) + f" [load {r['load_before']} -> "
                f"{r['load_after']}]", flush=True)
  results['load_end'] = load_average()
  _print_tables(results)
  os.makedirs(args.out, exist_ok=True)
  # One file per set of views, so runs split over --views do not overwrite each other.
  stem = os.path.join(args.out, 'pipeline_stages' + (
      '' if views == list(VIEWS) else '_' + '-'.join(views)))
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  _plot(results, stem + '.png')
  print(f'\nwrote {stem}.json and .png')


if __name__ == '__main__':
  main()
