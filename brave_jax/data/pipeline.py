"""The per-host tf.data pipelines for training and evaluation, yielding numpy batches.

Training: this host's shards -> an index of their records (reader.index_shards)
-> slot g = step * per_host_batch + j -> the record at position g mod N of
epoch g // N's seeded permutation -> read by offset, CRCs checked -> per
example: parse only the needed features, sample narrow/broad windows, decode
only the sampled frames into their crops, augment, spectrogram -> batch ->
[local_devices, per_device, ...] -> prefetch. With config.data.augment_on
'device' the RGB views leave as crops plus their draws (batch['draws']) and
the training step augments them (augment_device.augment_batch); the broad
audio view leaves as its waveform and the pretraining step makes its log-mel.

Determinism and resume. Everything a batch holds is a pure function of
(seed, process layout, shards, step): the permutation of each epoch is
`index_shuffle` seeded by (seed + process_index, epoch), and an example's
augmentation seed is keyed on its slot g, never on where the run started. So
a run resumed at step s reads, crops and augments exactly what an
uninterrupted run did at step s, and (the model step being deterministic on
CPU) ends with equal parameters (tests/test_resume_data.py kills a real run).
None of this holds if the shard files, the process count or data.* change
between the runs; a data source other than these TFRecord shards (e.g. TFDS)
is exact only if it, too, makes the batch a pure function of the step.

Every builder (training, evaluation, fine-tuning, audio evaluation, TFDS) runs
the same chain, `_batches`: a stream of slots -> each slot's example, made in
parallel -> bad records handled -> batches -> (devices) -> prefetch. Each
builder only supplies its slots, its per-example function and how bad records
are handled (`bad_records`: the budget, its warnings and the iterators).
"""
from __future__ import annotations

import collections
import functools
import os
import threading
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from brave_jax import config_base
from brave_jax import log
from brave_jax.data import augment
from brave_jax.data import augment_device
from brave_jax.data import bad_records
from brave_jax.data import decode
from brave_jax.data import dmvr_format
from brave_jax.data import eval_clips
from brave_jax.data import frame_spans
from brave_jax.data import reader
from brave_jax.data import resize_device
from brave_jax.data import sampling
from brave_jax.data import spectrogram
from brave_jax.data import tfds_reader
from brave_jax.data import tfrecord

_LOG = log.get_logger(__name__)

_NEVER = 1 << 62  # End of the endless training slot range.
Source = reader.ShardSpec | tfds_reader.TfdsSplit  # Labelled clips for evaluation, fine-tuning.
_DEFAULT_PARALLELISM = max(4, 2 * (os.cpu_count() or 1))  # Examples in flight (AUTOTUNE: -1).


def _seed_ints(*parts: int) -> tuple[int, int]:
  """Two well-mixed 31-bit ints from any integers (a stateless seed pair / shuffle seeds)."""
  state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
  return int(state[0] & 0x7FFFFFFF), int(state[1] & 0x7FFFFFFF)


def _parallel(config: ml_collections.ConfigDict) -> int:
  n = config.data.num_parallel_calls
  return tf.data.AUTOTUNE if n is None or n < 0 else int(n)


def _records_in_flight(config: ml_collections.ConfigDict) -> int:
  """A bound on the examples one parallel map works on at once (AUTOTUNE: up to the cores),
  with room for slots that fail between their reader's two ops."""
  n = config.data.num_parallel_calls
  return 2 * (int(n) if n is not None and n > 0 else (os.cpu_count() or 8)) + 16


def limit_tf_op_threads(threads: int) -> None:
  """Caps the threads of each TF op (config.data.tf_intra_op_threads; 0 leaves TF's default).

  TF allows this only before its runtime starts; later calls that would change
  it log a warning and leave the running setting.
  """
  if threads <= 0 or tf.config.threading.get_intra_op_parallelism_threads() == threads:
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:
    _LOG.warning('TensorFlow is already running; data.tf_intra_op_threads=%d not applied '
                 '(TF op threads stay at %d).', threads,
                 tf.config.threading.get_intra_op_parallelism_threads())


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  # Every heavy map sets its own parallelism; letting tf.data parallelise the rest would also
  # give each slot's one-element dataset its own parallel map (V/V CPU per clip 194-224 ms with,
  # 143-158 without, bench/input_pipeline.py, same session).
  options.experimental_optimization.map_parallelization = False
  return ds.with_options(options)


# ---------------------------------------------------------------------------
# Shapes.

def audio_num_samples(config: ml_collections.ConfigDict) -> int:
  """Waveform samples covering the broad window."""
  d = config.data
  return sampling.num_audio_samples(d.broad.num_frames, d.broad.frame_step, d.video_fps,
                                    d.audio_sample_rate)


def audio_num_frames(config: ml_collections.ConfigDict) -> int:
  """Spectrogram frames F of the broad window (pad_end STFT: ceil(samples / step))."""
  return spectrogram.num_spectrogram_frames(audio_num_samples(config),
                                            config.data.audio.frame_step)


def batch_shapes(config: ml_collections.ConfigDict,
                 broad_modalities: Sequence[str] | None = None) -> dict[str, Any]:
  """Per-example shapes of a training batch (no [D, B] axes), for models, tests and benches.

  `broad_modalities` (default config.data.broad_modalities): the broad views to
  shape, e.g. a checkpoint's when they are not the config's.
  """
  d = config.data
  narrow = (d.narrow.num_frames, d.narrow.image_size, d.narrow.image_size, 3)
  broad_rgb = (d.broad.num_frames, d.broad.image_size, d.broad.image_size, 3)
  broad: dict[str, tuple[int, ...]] = {}
  for m in d.broad_modalities if broad_modalities is None else broad_modalities:
    if m in ('video', 'rc'):
      broad[m] = broad_rgb
    elif m == 'flow':
      broad[m] = broad_rgb[:-1] + (2,)
    elif m == 'audio':
      broad[m] = (audio_num_frames(config), d.audio.num_mel_bins)
    else:
      raise ValueError(f'config.data.broad_modalities: unknown modality {m!r}')
  return {'narrow': {'video': narrow}, 'broad': broad, 'label': ()}


# ---------------------------------------------------------------------------
# Per-example processing.

def _require_frames(frames: tf.Tensor, what: str) -> tf.Tensor:
  """The frame count, raising (-> skipped record) when the record has none."""
  n = tf.shape(frames)[0]
  check = tf.debugging.assert_positive(n, message=f'record has no {what} frames')
  with tf.control_dependencies([check]):
    return tf.identity(n)


def _shipped_frames_dtype(config: ml_collections.ConfigDict) -> str | None:
  """None when the views are augmented here (config.data.augment_on 'host'); with 'device', the
  dtype their frames are shipped in (config.data.shipped_frames_dtype)."""
  return config.data.shipped_frames_dtype if config_base.augments_on_device(config) else None


def _rgb_view(jpegs_T: tf.Tensor, size: int, aug: ml_collections.ConfigDict, seed: tf.Tensor, *,
              blur: bool, random_conv: bool, jpeg_decode: str = 'full',
              ship: str | None = None, resize_buffer: int | None = None,
              crop_pixels: CropPixels | None = None
              ) -> tuple[tf.Tensor, dict[str, tf.Tensor] | None]:
  """One random crop for all frames, decoded as `jpeg_decode` says ('full' and 'full_frame': the
  published full decode's pixels, cropped and resized; 'reduced_scale': libjpeg's scaled decode;
  data/decode.py), then the published view chain (`augment.augment_clip`): (view, None).

  With `ship` (a dtype, augment_on='device'): the cropped frames in [0, 255] as that dtype and
  the chain's draws from the same seed, (frames, draws), for `augment_device` to apply in the
  training step; the crop is the same either way. With `resize_buffer` too (the narrow view's
  data.narrow.resize_on='device'): the crop before its resize, flattened into a uint8 buffer of
  that many pixels, and the resize's tables among the draws (data/resize_device.py).
  `crop_pixels` (window -> uint8 crop before the resize) replaces the decode when the frames
  were already decoded for another view (`_shared_full_decode`).
  """
  if crop_pixels is None:
    crop_pixels = functools.partial(decode.decode_train_crop_pixels, jpegs_T, size=size,
                                    jpeg_decode=jpeg_decode)
  _, s_aug = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  window = _view_window(jpegs_T, aug, seed)
  shape = [jpegs_T.shape[0], size, size, 3]
  draws = (augment_device.draw_view(aug, s_aug, random_conv=random_conv) if ship is not None
           else None)
  if draws is not None and resize_buffer is not None:
    crop = crop_pixels(window)
    draws.update(resize_device.resize_tables(tf.shape(crop)[1:3], size))
    return resize_device.flat_crop(crop, resize_buffer, 'the narrow view\'s crop'), draws
  frames = tf.image.resize(crop_pixels(window), [size, size], method='bilinear')
  if draws is not None:
    return tf.ensure_shape(augment_device.shipped_frames(frames, ship), shape), draws
  x = augment.augment_clip(frames, aug, s_aug, blur=blur, random_conv=random_conv)
  return tf.ensure_shape(x, shape), None


CropPixels = Callable[[tf.Tensor], tf.Tensor]  # window [y, x, h, w] -> uint8 [T, h, w, 3].


def _view_window(jpegs_T: tf.Tensor, aug: ml_collections.ConfigDict, seed: tf.Tensor) -> tf.Tensor:
  """The random crop window `_rgb_view` draws from `seed` (for frames `jpegs_T`)."""
  s_crop, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  return decode.random_crop_window(decode.jpeg_shape(jpegs_T[0]), aug.crop_area_range,
                                   aug.crop_aspect_range, s_crop)


def _stitched_crop(parts: list[tuple[list[int], tf.Tensor, tf.Tensor]], num_frames: int,
                   window: tf.Tensor) -> tf.Tensor:
  """uint8 [num_frames, h, w, 3]: `window` cut from each (positions, frames, origin) part."""
  stitched = tf.dynamic_stitch([tf.constant(pos, tf.int32) for pos, _, _ in parts],
                               [decode.cut(frames, origin, window) for _, frames, origin in parts])
  return tf.ensure_shape(stitched, [num_frames, None, None, 3])


def _shared_full_decode(narrow_jpegs: tf.Tensor, broad_jpegs: tf.Tensor, shared: dict[int, int],
                        narrow_window: tf.Tensor, broad_window: tf.Tensor,
                        jpeg_decode: str) -> tuple[CropPixels, CropPixels]:
  """Crop makers for the narrow and the broad RGB view that decode each frame once.

  `shared` ({k: j}, `sampling.frames_shared_at_narrow_start`) names the narrow frames that
  are broad frames too. Those are decoded once over both views' windows, the other frames
  over their own view's (`decode.decode_for_windows`, the full decode's pixels either way),
  and each view's crop is stitched from its frames in order. The same op on the same bytes
  gives the same pixels, so the views are bit for bit those of separate decodes
  (tests/test_data_pipeline_shared_decode.py); at full size V/V decodes 72 frames, not 80.
  """
  ks = sorted(shared)
  js = [shared[k] for k in ks]
  narrow_own = [k for k in range(narrow_jpegs.shape[0]) if k not in shared]
  shared_js = set(js)
  broad_own = [j for j in range(broad_jpegs.shape[0]) if j not in shared_js]

  def decoded(jpegs, positions, windows):  # (frames, origin) of those frames.
    return decode.decode_for_windows(tf.gather(jpegs, positions), windows, jpeg_decode)

  both = decoded(broad_jpegs, js, [narrow_window, broad_window])
  narrow_parts = [(ks, *both)]
  broad_parts = [(js, *both)]
  if narrow_own:
    narrow_parts.append((narrow_own, *decoded(narrow_jpegs, narrow_own, [narrow_window])))
  if broad_own:
    broad_parts.append((broad_own, *decoded(broad_jpegs, broad_own, [broad_window])))
  return (functools.partial(_stitched_crop, narrow_parts, narrow_jpegs.shape[0]),
          functools.partial(_stitched_crop, broad_parts, broad_jpegs.shape[0]))


def _flow_view(jpegs_T: tf.Tensor, size: int, aug: ml_collections.ConfigDict,
               seed: tf.Tensor, jpeg_decode: str = 'full') -> tf.Tensor:
  """Cropped, resized, maybe flipped flow in [-1, 1]: the geometry of an RGB view, no colour.

  The vectors follow the geometry: the resize scales x by size / crop width and
  y by size / crop height, and a flip negates the horizontal component.
  """
  s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  window = decode.random_crop_window(decode.jpeg_shape(jpegs_T[0]), aug.crop_area_range,
                                     aug.crop_aspect_range, s_crop)
  frames = decode.decode_train_crop(jpegs_T, window, size, jpeg_decode, decode.FLOW_DCT_METHOD)
  flow = decode.scale_flow_to_view(decode.flow_to_unit(frames), window, size)
  flow, flipped = augment.random_flip(flow, aug.flip_prob, s_flip)
  sign = tf.where(flipped, tf.constant([-1.0, 1.0]), tf.constant([1.0, 1.0]))
  return tf.ensure_shape(flow * sign, [jpegs_T.shape[0], size, size, 2])


def frames_decoded_once(config: ml_collections.ConfigDict) -> dict[int, int]:
  """{narrow k: broad j}: the frames the narrow and the one broad RGB view share, which the
  training pipeline decodes once (`_shared_full_decode`); {} where nothing is shared: the
  reduced-scale decode, a broad window that starts elsewhere, or not exactly one broad RGB view."""
  d = config.data
  if (d.jpeg_decode not in ('full', 'full_frame') or d.broad_start != 'at_narrow'
      or sum(m in ('video', 'rc') for m in d.broad_modalities) != 1):
    return {}
  return sampling.frames_shared_at_narrow_start(
      d.narrow.num_frames, d.narrow.frame_step, d.broad.num_frames, d.broad.frame_step)


def _make_train_example_fn(config: ml_collections.ConfigDict, base_seed: tf.Tensor):
  """Per record (a reader.FramesOnDemand: only the sampled frames are copied out of it):
  the published sampler's windows (`sampling.train_windows`), the narrow RGB view,
  and each broad view: RGB through the same chain (randomly convolved for 'rc' and V/V), flow
  with the geometry only (ours; the published code has no flow), audio as the log-mel of the
  broad window's waveform, or with augment_on='device' the waveform itself (float32
  [audio_num_samples]; the pretraining step makes the log-mel, which saves the host its STFT)."""
  d = config.data
  modalities = tuple(d.broad_modalities)
  num_samples = audio_num_samples(config)
  ship = _shipped_frames_dtype(config)
  narrow_buffer = (d.narrow.crop_buffer_pixels if config_base.resizes_narrow_on_device(config)
                   else None)
  ship_waveform = augment_device.ships_broad_audio_waveform(config)
  shared_frames = frames_decoded_once(config)

  def fn(index: tf.Tensor, record: reader.FramesOnDemand) -> dict[str, Any]:
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2 + len(modalities)))
    ex = reader.parse_example(record.rest, video=False, audio='audio' in modalities)
    n = _require_frames(record.spans[dmvr_format.IMAGE_KEY], 'image/encoded')
    win = sampling.train_windows(
        n, narrow_frames=d.narrow.num_frames, narrow_step=d.narrow.frame_step,
        broad_frames=d.broad.num_frames, broad_step=d.broad.frame_step,
        broad_start=d.broad_start, seed=seeds[0])
    wanted = [record.frames(dmvr_format.IMAGE_KEY, win['narrow']),
              record.frames(dmvr_format.IMAGE_KEY, win['broad'])]
    if 'flow' in modalities:  # The flow list may be a frame shorter: it loops.
      n_flow = _require_frames(record.spans[dmvr_format.FLOW_KEY], 'flow/encoded')
      wanted.append(record.frames(dmvr_format.FLOW_KEY, tf.math.floormod(win['broad'], n_flow)))
    sizes = [w.shape[0] if w.shape[0] is not None else tf.shape(w)[0] for w in wanted]
    narrow_jpegs, broad_jpegs, *flow_jpegs = tf.split(record.take(tf.concat(wanted, 0)), sizes)
    narrow_crop = broad_crop = None
    if shared_frames:  # One broad RGB view ('video' or 'rc'): its seed draws its window.
      broad_rgb_seed = [s for m, s in zip(modalities, seeds[2:]) if m in ('video', 'rc')][0]
      narrow_crop, broad_crop = _shared_full_decode(
          narrow_jpegs, broad_jpegs, shared_frames, _view_window(narrow_jpegs, d.augment, seeds[1]),
          _view_window(broad_jpegs, d.augment, broad_rgb_seed), d.jpeg_decode)
    narrow, narrow_draws = _rgb_view(narrow_jpegs, d.narrow.image_size,
                                     d.augment, seeds[1], blur=True, random_conv=False,
                                     jpeg_decode=d.jpeg_decode, ship=ship,
                                     resize_buffer=narrow_buffer, crop_pixels=narrow_crop)
    broad, broad_draws = {}, {}
    for m, s in zip(modalities, seeds[2:]):
      if m in ('video', 'rc'):
        rc = m == 'rc' or bool(d.random_convolve_broad_video)
        broad[m], broad_draws[m] = _rgb_view(broad_jpegs,
                                             d.broad.image_size, d.augment, s, blur=True,
                                             random_conv=rc, jpeg_decode=d.jpeg_decode, ship=ship,
                                             crop_pixels=broad_crop)
      elif m == 'flow':
        broad[m] = _flow_view(flow_jpegs[0], d.broad.image_size, d.augment, s, d.jpeg_decode)
      elif m == 'audio':
        wave = sampling.broad_audio_window(ex['audio'], win['broad_start'], num_samples, n,
                                           win['looped_frames'])
        if ship_waveform:  # The step makes the log-mel (augment_device.log_mel_of_broad_audio).
          broad[m] = tf.ensure_shape(wave, [num_samples])
        else:
          broad[m] = tf.ensure_shape(spectrogram.from_config(wave, d),
                                     [audio_num_frames(config), d.audio.num_mel_bins])
    out = {'narrow': {'video': narrow}, 'broad': broad, 'label': ex['label'],
           bad_records.INDEX: index}
    if ship is not None:  # Mirrors the views it augments (augment_device.DRAWS).
      out[augment_device.DRAWS] = {'narrow': {'video': narrow_draws}, 'broad': broad_draws}
    return out
  return fn


# ---------------------------------------------------------------------------
# The chain every builder shares.

class _FailureReasons:
  """Why records failed inside the readers' ops, by entry, for the bad-record warnings
  (the ops raise, so `ignore_errors` drops the slot, and the message would be lost)."""

  def __init__(self, max_kept: int = 10_000):
    self.by_entry: dict[int, str] = {}
    self._max_kept = max_kept
    self._lock = threading.Lock()

  def noted(self, entry: int, read: Callable[[], Any]) -> Any:
    """read(), noting the message of a RecordError or FrameListError it raises."""
    try:
      return read()
    except tfrecord.RecordError as e:
      self._note(entry, str(e))
      raise
    except frame_spans.FrameListError as e:  # The monitor names the record before this.
      self._note(entry, 'bytes do not parse as a tf.train.SequenceExample with one encoded '
                 f'frame per step: {e}')
      raise

  def _note(self, entry: int, message: str) -> None:
    with self._lock:
      if len(self.by_entry) < self._max_kept:
        self.by_entry[entry] = message


def _record_reader(index: reader.ShardIndex) -> tuple[Callable[[tf.Tensor], tf.Tensor],
                                                      dict[int, str]]:
  """A graph function entry -> serialized record (read by offset, CRCs checked).

  Read errors raise inside the op (so `ignore_errors` drops the slot) and leave
  their message in the returned dict, keyed by entry, for the warnings.
  """
  rd = index.reader()
  reasons = _FailureReasons()

  def read_py(entry: np.ndarray) -> bytes:
    return reasons.noted(int(entry), lambda: index.read(rd, int(entry)))

  def read(entry: tf.Tensor) -> tf.Tensor:
    serialized = tf.numpy_function(read_py, [entry], tf.string, stateful=False)
    return tf.ensure_shape(serialized, [])
  return read, reasons.by_entry


class _HeldRecords:
  """Records read for frames still to be cut out, by slot, between the two ops of
  `_frames_on_demand_reader`. Bounded: a slot whose record was dropped (its example failed
  between the ops, or more were in flight than the bound) is read again."""

  def __init__(self, max_held: int):
    self._held: collections.OrderedDict[int, memoryview | bytes] = collections.OrderedDict()
    self._max_held = max_held
    self._lock = threading.Lock()

  def put(self, slot: int, record: memoryview | bytes) -> None:
    with self._lock:
      self._held[slot] = record
      while len(self._held) > self._max_held:
        self._held.popitem(last=False)

  def pop(self, slot: int) -> memoryview | bytes | None:
    with self._lock:
      return self._held.pop(slot, None)


def _frames_on_demand_reader(index: reader.ShardIndex, keys: Sequence[str], max_held: int
                             ) -> tuple[Callable[[tf.Tensor, tf.Tensor], reader.FramesOnDemand],
                                        dict[int, str]]:
  """Like `_record_reader`, for the training sampler: (slot, entry) -> reader.FramesOnDemand.

  The record, a view of its shard's memory map where the shard is local, is checked (CRCs)
  and split (`frame_spans`); TensorFlow gets it without its frame lists, and the frames
  the sampler picks are cut out of the view held here. Neither the whole record nor every
  frame is copied: the V/V read stage fell from 28 to 11 CPU ms per clip (bench/README.md)."""
  rd = index.reader()
  reasons = _FailureReasons()
  held = _HeldRecords(max_held)

  def split_py(slot: np.ndarray, entry: np.ndarray) -> list[Any]:
    record = reasons.noted(int(entry), lambda: index.view(rd, int(entry)))
    rest, spans = reasons.noted(int(entry), lambda: frame_spans.split_record(record, keys))
    held.put(int(slot), record)
    return [rest] + [spans[k] for k in keys]

  def take_py(slot: np.ndarray, entry: np.ndarray, spans: np.ndarray) -> np.ndarray:
    record = held.pop(int(slot))
    if record is None:  # Evicted: read it again.
      record = reasons.noted(int(entry), lambda: index.view(rd, int(entry)))
    return frame_spans.frames_at(record, spans)

  def read(slot: tf.Tensor, entry: tf.Tensor) -> reader.FramesOnDemand:
    out = tf.numpy_function(split_py, [slot, entry], [tf.string] + [tf.int64] * len(keys),
                            stateful=True)
    spans = {k: tf.ensure_shape(s, [None, 2]) for k, s in zip(keys, out[1:])}

    def take(spans_K2: tf.Tensor) -> tf.Tensor:
      frames = tf.numpy_function(take_py, [slot, entry, spans_K2], tf.string, stateful=True)
      return tf.ensure_shape(frames, [None])
    return reader.FramesOnDemand(rest=tf.ensure_shape(out[0], []), spans=spans, take=take)
  return read, reasons.by_entry


def _read_with_budget(config: ml_collections.ConfigDict, index: reader.ShardIndex, what: str,
                      needs: dict[str, str], frame_keys: Sequence[str] = ()
                      ) -> tuple[Callable[..., Any], bad_records.BadRecordMonitor]:
  """The record reader of an indexed shard set and the budget its failures count against.

  With `frame_keys` the reader is `_frames_on_demand_reader`'s, called as read(slot, entry)."""
  if frame_keys:
    read, reasons = _frames_on_demand_reader(index, frame_keys, max_held=_records_in_flight(config))
  else:
    read, reasons = _record_reader(index)
  return read, bad_records.budget_monitor(config, index, what, reasons, needs)


def _slot_to_entry(num_records: int, shuffle_seed: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
  """Slot g -> index entry: position g mod N in epoch g // N's permutation (a pure function)."""
  n = tf.constant(num_records, tf.int64)

  def entry(slot: tf.Tensor) -> tf.Tensor:
    epoch_seed = tf.random.experimental.stateless_fold_in(shuffle_seed, slot // n)
    return tf.random.experimental.index_shuffle(slot % n, epoch_seed, n - 1)
  return entry


def _to_devices(num_local_devices: int, per_device: int) -> Callable[[dict[str, Any]], Any]:
  """[per_host, ...] -> [local_devices, per_device, ...] per feature; bookkeeping keys stay flat."""
  def to_devices(batch):
    def reshape(x):
      return tf.reshape(x, tf.concat([[num_local_devices, per_device], tf.shape(x)[1:]], 0))
    out = tf.nest.map_structure(
        reshape, {k: v for k, v in batch.items() if k not in bad_records.PRIVATE})
    out.update({k: batch[k] for k in bad_records.PRIVATE if k in batch})
    return out
  return to_devices


def _batches(config: ml_collections.ConfigDict, slots: tf.data.Dataset,
             example: Callable[..., dict[str, Any]], *, batch_size: int,
             entry_of: Callable[[tf.Tensor], tf.Tensor] | None = None, log_bad: bool = False,
             unbatch: bool = False, devices: tuple[int, int] | None = None,
             prefetch: int = 2) -> tf.data.Dataset:
  """slots -> examples (in parallel, in order) -> bad records handled -> batches -> prefetch.

  With `entry_of` (the endless shard streams) a slot whose record fails yields a
  flagged placeholder and its row is refilled from the batch's good rows
  (`bad_records.fill_bad_rows`); without it the failing slot is dropped
  (`log_bad`: tf.data logs it, for TFDS streams, which have no record to
  name), and `unbatch` flattens examples that give several rows (test crops,
  audio windows). `devices` (local devices, per device) shapes each batch for
  pmap, dropping a last partial batch.
  """
  parallel = _parallel(config)
  if entry_of is not None:
    cycle = _DEFAULT_PARALLELISM if parallel == tf.data.AUTOTUNE else parallel
    ds = slots.interleave(bad_records.example_or_placeholder(example, entry_of), block_length=1,
                          cycle_length=cycle, num_parallel_calls=parallel, deterministic=True)
  else:
    ds = slots.map(example, num_parallel_calls=parallel, deterministic=True)
    ds = ds.ignore_errors(log_warning=log_bad)  # Shard streams: DataIterator names the record.
    if unbatch:
      ds = ds.unbatch()
  ds = ds.batch(batch_size, drop_remainder=devices is not None)
  if entry_of is not None:
    ds = ds.map(bad_records.fill_bad_rows)
  if devices is not None:
    ds = ds.map(_to_devices(*devices))
  return _options(ds.prefetch(prefetch))


def _endless_shard_batches(config: ml_collections.ConfigDict, index: reader.ShardIndex, *,
                           what: str, needs: dict[str, str],
                           example_fn: Callable[[tf.Tensor, tf.Tensor], dict[str, Any]],
                           shuffle_seed: tf.Tensor, per_host: int, per_device: int,
                           num_local_devices: int, start_step: int,
                           frame_keys: Sequence[str] = ()) -> bad_records.DataIterator:
  """Training and fine-tuning from shards: slot g reads the record `_slot_to_entry` picks.

  With `frame_keys`, example_fn gets a reader.FramesOnDemand instead of the serialized record."""
  read, monitor = _read_with_budget(config, index, what, needs, frame_keys)
  entry_of = _slot_to_entry(len(index), shuffle_seed)

  def example(slot):
    entry = entry_of(slot)
    record = read(slot, entry) if frame_keys else read(entry)
    return dict(example_fn(slot, record), **{bad_records.ENTRY: entry})

  first_slot = start_step * per_host
  ds = _batches(config, tf.data.Dataset.range(first_slot, _NEVER), example, batch_size=per_host,
                entry_of=entry_of, devices=(num_local_devices, per_device),
                prefetch=config.data.prefetch)
  return bad_records.DataIterator(ds, monitor, first_slot=first_slot)


def _finite_shard_iterator(ds: tf.data.Dataset, monitor: bad_records.BadRecordMonitor,
                           num_records: int, passes: int = 1) -> bad_records.DataIterator:
  """Evaluation streams: slot m is record m mod N; missing slots were dropped as bad."""
  return bad_records.DataIterator(ds, monitor, total_slots=num_records * passes,
                                  entry_of_slot=lambda slot: slot % num_records)


def per_host_and_device(batch_size: int, process_count: int, num_local_devices: int,
                        field: str) -> tuple[int, int]:
  """(per-host, per-device) shares of a global batch; ValueError naming `field` if uneven.

  The one place the data pipelines check that a batch splits over processes and devices
  (config_base.uneven_batch: the rule config validation and the plan apply too).
  """
  uneven = config_base.uneven_batch(batch_size, process_count, num_local_devices)
  if uneven:
    raise ValueError(f'{field}={batch_size} {uneven}')
  per_host = batch_size // process_count
  return per_host, per_host // num_local_devices


def _local_device_count(num_local_devices: int | None) -> int:
  """`num_local_devices`, else JAX's local device count (JAX imported only when needed)."""
  if num_local_devices is None:
    import jax  # pylint: disable=g-import-not-at-top
    num_local_devices = jax.local_device_count()
  return num_local_devices


# ---------------------------------------------------------------------------
# Training.

def warn_if_smaller_than_batch(num_records: int, per_host_batch: int,
                               files: list[str]) -> bool:
  """Warns (True) when this host's training set holds fewer clips than one batch.

  Training still runs, but every batch then repeats clips (the epoch permutation
  wraps within a batch), so a loss that falls says little; usually a sign of a
  conversion that kept fewer videos than expected.
  """
  if num_records >= per_host_batch:
    return False
  _LOG.warning(
      'the training set has %d clip(s) (%d shard(s), first %s), fewer than one batch of %d per '
      'host: every batch repeats clips, about %.1f times each. Convert more videos or lower '
      'config.training.batch_size.', num_records, len(files), files[0] if files else None,
      per_host_batch, per_host_batch / max(num_records, 1))
  return True


def make_train_dataset(config: ml_collections.ConfigDict, shards: reader.ShardSpec, *,
                       process_index: int = 0, process_count: int = 1,
                       num_local_devices: int | None = None, seed: int | None = None,
                       start_step: int = 0) -> bad_records.DataIterator:
  """Endless iterator of this host's training batches, shaped [local_devices, per_device, ...].

  The batch for step s is a pure function of (seed, process layout, shards, s)
  (module docstring), so `make_train_dataset(..., start_step=s)` continues an
  interrupted run exactly. Shards are resolved, split and indexed before any
  graph is built, so a wrong path, a non-TFRecord file or too few shards for
  the hosts fails immediately, naming the path.
  """
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  num_local_devices = _local_device_count(num_local_devices)
  per_host, per_device = per_host_and_device(config.training.batch_size, process_count,
                                             num_local_devices, 'config.training.batch_size')
  files = reader.split_for_process(reader.list_shards(shards), process_index, process_count)
  index = reader.index_shards(files)
  warn_if_smaller_than_batch(len(index), per_host, files)
  modalities = config.data.broad_modalities
  reader.check_features(index, flow='flow' in modalities, audio='audio' in modalities)
  host_seed = (config.seed if seed is None else seed) + process_index
  return _endless_shard_batches(
      config, index, what='training', needs=bad_records.needed_features(modalities),
      example_fn=_make_train_example_fn(config, tf.constant(_seed_ints(host_seed, 2), tf.int64)),
      shuffle_seed=tf.constant(_seed_ints(host_seed, 1), tf.int64), per_host=per_host,
      per_device=per_device, num_local_devices=num_local_devices, start_step=start_step,
      frame_keys=reader.frame_keys(flow='flow' in modalities))


# ---------------------------------------------------------------------------
# Evaluation.

def _parsed_with_frames(record: Any, parse: Callable[..., Any], audio: bool
                       ) -> tuple[dict[str, tf.Tensor], tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
  """(parsed features, frame count, positions -> encoded RGB frames) of one record.

  A reader.FramesOnDemand (shards, read by `_frames_on_demand_reader`) gives up only the
  frames asked for; anything else (a serialized record, a TFDS element) is parsed whole by
  `parse`. The frames are the same either way."""
  if isinstance(record, reader.FramesOnDemand):
    ex = reader.parse_example(record.rest, video=False, audio=audio)
    n = _require_frames(record.spans[dmvr_format.IMAGE_KEY], 'image/encoded')
    return ex, n, lambda idx: tf.ensure_shape(  # take's output has no static length.
        record.take(record.frames(dmvr_format.IMAGE_KEY, idx)), idx.shape)
  ex = parse(record, video=True, audio=audio)
  n = _require_frames(ex['video'], 'image/encoded')
  return ex, n, lambda idx: tf.gather(ex['video'], idx)


def _make_eval_train_fn(config: ml_collections.ConfigDict, clips: eval_clips.EvalClips,
                        base_seed: tf.Tensor, include_audio: bool,
                        parse: Callable[..., Any] = reader.parse_example,
                        ship: str | None = None):
  """One augmented clip per record, as the published linear protocol: random window of the
  looped video, random crop, then the view chain without blur (scale, flip, colour, grey).
  With `ship` (fine-tuning with augment_on='device') the chain is left to the training step:
  the clip's frames as that dtype plus out[augment_device.DRAWS]['video']."""
  d = config.data
  num_samples = audio_num_samples(config)

  def fn(index, item):
    video_index, record = item
    seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    s_win, s_view = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ex, n, frames_at = _parsed_with_frames(record, parse, include_audio)
    start, idx = sampling.random_window(n, clips.num_frames, clips.frame_step, s_win)
    video, draws = _rgb_view(frames_at(idx), clips.image_size, d.augment, s_view,
                             blur=False, random_conv=False, jpeg_decode=d.jpeg_decode, ship=ship)
    out = {'video': video, 'label': ex['label'], 'video_index': tf.cast(video_index, tf.int32),
           bad_records.INDEX: index}
    if ship is not None:
      out[augment_device.DRAWS] = {'video': draws}
    if include_audio:
      wave = sampling.audio_window(ex['audio'], start, num_samples, video_fps=d.video_fps,
                                   audio_sample_rate=d.audio_sample_rate)
      out['audio'] = spectrogram.from_config(wave, d)
    return out
  return fn


def _make_eval_test_fn(config: ml_collections.ConfigDict, clips: eval_clips.EvalClips,
                       include_audio: bool, parse: Callable[..., Any] = reader.parse_example):
  """N temporal x M spatial deterministic crops of one record, rows ordered (window, crop):
  the published test crops (windows at int(linspace) starts, short side resized, spatial
  crops on a diagonal)."""
  d = config.data
  nt, ns, t, size = (clips.num_temporal_crops, clips.num_spatial_crops, clips.num_frames,
                     clips.image_size)
  num_samples = audio_num_samples(config)

  def fn(index, serialized):
    ex = parse(serialized, video=True, audio=include_audio)
    n = _require_frames(ex['video'], 'image/encoded')
    starts, idx_NxT = sampling.evenly_spaced_windows(n, t, clips.frame_step, nt)
    unique, position = tf.unique(tf.reshape(idx_NxT, [-1]))  # Decode each frame once.
    frames = decode.decode_resize_short_side(tf.gather(ex['video'], unique),
                                             clips.resize_short_side)
    frames = tf.gather(frames, position)  # [N*T, H', W', 3]
    crops = decode.spatial_crops(frames, size, ns)  # [M, N*T, S, S, 3]
    crops = tf.reshape(crops, [ns, nt, t, size, size, 3])
    crops = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]), [nt * ns, t, size, size, 3])
    rows = nt * ns
    out = {'video': augment.to_unit_range(crops),
           'label': tf.fill([rows], ex['label']),
           'video_index': tf.fill([rows], tf.cast(index, tf.int32)),
           bad_records.INDEX: index}
    if include_audio:
      waves = tf.map_fn(
          lambda s: sampling.audio_window(ex['audio'], s, num_samples, video_fps=d.video_fps,
                                          audio_sample_rate=d.audio_sample_rate), starts,
          fn_output_signature=tf.TensorSpec([num_samples], tf.float32))
      specs = spectrogram.from_config(waves, d)  # [N, F, M]
      out['audio'] = tf.repeat(specs, ns, axis=0)
    return out
  return fn


def make_eval_dataset(config: ml_collections.ConfigDict, shards: Source, *,
                      mode: str, batch_size: int | None = None, include_audio: bool = False,
                      seed: int | None = None, clips: eval_clips.EvalClips | None = None
                      ) -> bad_records.DataIterator | bad_records.TfdsIterator:
  """Finite iterator of flat eval batches {'video' [N,T,H,W,3], 'label', 'video_index'[, 'audio']}.

  `clips` (default: config.eval's, `EvalClips.from_config`) says which clips:
  mode 'train': clips.train_passes augmented passes (one random clip per
  video per pass). mode 'test': clips.num_temporal_crops x
  num_spatial_crops deterministic crops per video after a short-side resize,
  the crops of one video adjacent (ordered window-major). No shuffling; a
  video's video_index is its position in the sorted shard order, counting
  skipped records, so results are reproducible and comparable across runs.
  The audio of a clip covers the broad training window from the clip start,
  so audio features match what the audio backbone was trained on. `shards`
  may also be a `tfds_reader.TfdsSplit`: a TFDS dataset read as it is.
  """
  if mode not in ('train', 'test'):
    raise ValueError(f"make_eval_dataset: mode must be 'train' or 'test', got {mode!r}")
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  batch_size = batch_size or config.eval.batch_size
  clips = clips or eval_clips.EvalClips.from_config(config)
  if tfds_reader.is_tfds(shards):
    return _tfds_eval_dataset(config, clips, shards, mode=mode, batch_size=batch_size,
                              include_audio=include_audio, seed=seed)
  index = reader.index_shards(reader.list_shards(shards))
  reader.check_features(index, video=True, audio=include_audio,
                        what=f'evaluation ({mode} split)')  # Not every record, one by one.
  num_records = len(index)
  # A train pass takes one window of each record: only its frames are copied out.
  frame_keys = reader.frame_keys(flow=False) if mode == 'train' else ()
  read, monitor = _read_with_budget(config, index, f'eval {mode}',
                                    bad_records.needed_features(['audio'] if include_audio else []),
                                    frame_keys)
  if mode == 'train':
    seed = config.seed if seed is None else seed
    train_fn = _make_eval_train_fn(config, clips, tf.constant(_seed_ints(seed, 3), tf.int64),
                                   include_audio)

    def train_example(stream_index, entry):
      record = read(stream_index, entry)
      return dict(train_fn(stream_index, (entry, record)), **{bad_records.ENTRY: entry})
    passes = clips.train_passes
    slots = tf.data.Dataset.range(num_records).repeat(passes).enumerate()
    ds = _batches(config, slots, train_example, batch_size=batch_size)
    return _finite_shard_iterator(ds, monitor, num_records, passes)
  test_fn = _make_eval_test_fn(config, clips, include_audio)
  rows = clips.test_rows

  def test_example(entry):
    out = dict(test_fn(entry, read(entry)))
    out[bad_records.INDEX] = tf.fill([rows], entry)
    out[bad_records.ENTRY] = tf.fill([rows], entry)
    return out
  ds = _batches(config, tf.data.Dataset.range(num_records), test_example, batch_size=batch_size,
                unbatch=True)
  return _finite_shard_iterator(ds, monitor, num_records)


# ---------------------------------------------------------------------------
# TFDS datasets (evaluation and fine-tuning): TFDS's own reader, not the shard index.


def _check_tfds_audio_rate(config: ml_collections.ConfigDict, source: Source) -> None:
  """A TFDS dataset's audio must be at the rate the spectrogram expects (no resampler in TF)."""
  if not tfds_reader.is_tfds(source):
    return
  rate = tfds_reader.audio_sample_rate(source)
  if rate and int(rate) != int(config.data.audio_sample_rate):
    raise tfds_reader.TfdsError(
        f'{source}: audio is {rate} Hz, config.data.audio_sample_rate is '
        f'{config.data.audio_sample_rate}; set --config.data.audio_sample_rate={rate} (the '
        'log-mel window then covers the same seconds) or convert the audio with '
        'brave_jax.data.convert --audio_only, which resamples')


def _tfds_eval_dataset(config: ml_collections.ConfigDict, clips: eval_clips.EvalClips,
                       source: tfds_reader.TfdsSplit, *, mode: str, batch_size: int,
                       include_audio: bool, seed: int | None) -> bad_records.TfdsIterator:
  """make_eval_dataset for a TFDS split: the same per-example functions on TFDS's elements."""
  if include_audio:
    _check_tfds_audio_rate(config, source)
  records = tfds_reader.records(source, audio=include_audio)
  total = tfds_reader.num_examples(source)
  if mode == 'train':
    passes = clips.train_passes
    seed = config.seed if seed is None else seed
    train_fn = _make_eval_train_fn(config, clips, tf.constant(_seed_ints(seed, 3), tf.int64),
                                   include_audio, tfds_reader.parse)
    ds = _batches(config, records.enumerate().repeat(passes).enumerate(), train_fn,
                  batch_size=batch_size, log_bad=True)
    return bad_records.TfdsIterator(ds, total * passes)
  test_fn = _make_eval_test_fn(config, clips, include_audio, tfds_reader.parse)
  rows = clips.test_rows

  def test_example(index, element):
    out = dict(test_fn(index, element))
    out[bad_records.INDEX] = tf.fill([rows], index)
    return out
  ds = _batches(config, records.enumerate(), test_example, batch_size=batch_size, log_bad=True,
                unbatch=True)
  return bad_records.TfdsIterator(ds, total)


# ---------------------------------------------------------------------------
# Fine-tuning.

def _finetune_example_fn(config: ml_collections.ConfigDict, clips: eval_clips.EvalClips,
                         example_seed: tf.Tensor, parse: Callable[..., Any]):
  """(slot, record) -> {'video', 'label'}: the linear protocol's train clip; unlabelled raises.
  With augment_on='device' also the clip's draws (augment_device.DRAWS), for the step."""
  clip_fn = _make_eval_train_fn(config, clips, example_seed, False, parse,
                                _shipped_frames_dtype(config))

  def fn(slot, record):
    out = clip_fn(slot, (slot, record))
    check = tf.debugging.assert_non_negative(
        out['label'], message='record has no clip/label/index; fine-tuning needs labels')
    with tf.control_dependencies([check]):
      label = tf.identity(out['label'])
    shipped = {'video': out['video'], 'label': label, bad_records.INDEX: slot}
    if augment_device.DRAWS in out:
      shipped[augment_device.DRAWS] = out[augment_device.DRAWS]
    return shipped
  return fn


def make_finetune_dataset(config: ml_collections.ConfigDict, source: Source, *,
                          batch_size: int, process_index: int = 0, process_count: int = 1,
                          num_local_devices: int | None = None, seed: int | None = None,
                          start_step: int = 0, clips: eval_clips.EvalClips | None = None
                          ) -> bad_records.DataIterator | bad_records.TfdsIterator:
  """Endless labelled training clips, [local_devices, per_device, ...] {'video', 'label'}.

  Each clip is made as the linear protocol's train clips are
  (`_make_eval_train_fn`: a random window of `clips` (default config.eval's),
  random crop, flip, colour jitter, greyscale), so fine-tuning and the linear
  probe see the same augmentation. From DMVR shards the stream is make_train_dataset's
  (each host its own shards, slot -> seeded per-epoch permutation, bad records
  replaced and budgeted), so a resumed fine-tuning run reads exactly what an
  uninterrupted one did; a record without a label counts as bad. From TFDS:
  TFDS's shuffled reader, not exact on resume.
  """
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  clips = clips or eval_clips.EvalClips.from_config(config)
  num_local_devices = _local_device_count(num_local_devices)
  per_host, per_device = per_host_and_device(batch_size, process_count, num_local_devices,
                                             'config.finetune.batch_size')
  host_seed = (config.seed if seed is None else seed) + process_index
  example_seed = tf.constant(_seed_ints(host_seed, 12), tf.int64)
  if tfds_reader.is_tfds(source):
    ds = tfds_reader.records(source, process_index=process_index, process_count=process_count,
                             shuffle_files=True, seed=_seed_ints(host_seed, start_step, 13)[0])
    ds = ds.shuffle(_TFDS_SHUFFLE_BUFFER, seed=_seed_ints(host_seed, start_step, 14)[0])
    ds = _batches(config, ds.repeat().enumerate(start_step * per_host),
                  _finetune_example_fn(config, clips, example_seed, tfds_reader.parse),
                  batch_size=per_host, log_bad=True, devices=(num_local_devices, per_device),
                  prefetch=config.data.prefetch)
    return bad_records.TfdsIterator(ds)
  files = reader.split_for_process(reader.list_shards(source), process_index, process_count)
  return _endless_shard_batches(
      config, reader.index_shards(files), what='fine-tuning', needs={},
      example_fn=_finetune_example_fn(config, clips, example_seed, reader.parse_example),
      shuffle_seed=tf.constant(_seed_ints(host_seed, 11), tf.int64), per_host=per_host,
      per_device=per_device, num_local_devices=num_local_devices, start_step=start_step,
      frame_keys=reader.frame_keys(flow=False))


_TFDS_SHUFFLE_BUFFER = 256  # Examples TFDS fine-tuning shuffles over (besides its file order).


# ---------------------------------------------------------------------------
# Audio evaluation.

def make_audio_eval_dataset(config: ml_collections.ConfigDict, source: Source, *,
                            batch_size: int, num_windows: int = 1,
                            num_classes: int | None = None
                            ) -> bad_records.DataIterator | bad_records.TfdsIterator:
  """Finite iterator of log-mel windows of every record, in record order (audio-only records too).

  Each record gives `num_windows` windows of the model's broad audio window
  (`audio_num_samples`: 64 x 4 frames at 25 fps = 10.24 s at full size),
  evenly spaced over the waveform; a clip shorter than the window is looped
  (repeated from its start, as the published pipeline loops short videos and
  their audio). Rows: {'audio' [F, M], 'label' (first label), 'video_index'
  (record position), 'clip_id', 'num_samples' (the clip's own length, so
  callers can report how many were looped)} plus, with `num_classes`,
  'labels' as a multi-hot [num_classes] vector of every clip/label/index
  value (AudioSet style). Records without audio are skipped and counted.
  """
  if num_windows < 1:
    raise ValueError(f'make_audio_eval_dataset: num_windows must be >= 1, got {num_windows}')
  limit_tf_op_threads(config.data.tf_intra_op_threads)
  _check_tfds_audio_rate(config, source)
  d = config.data
  window = audio_num_samples(config)
  is_tfds = tfds_reader.is_tfds(source)
  parse = tfds_reader.parse if is_tfds else reader.parse_example

  def windows(index, record):
    ex = parse(record, video=False, audio=True, all_labels=True, clip_id=True)
    wave = ex['audio']
    length = tf.size(wave, out_type=tf.int32)
    last = tf.cast(tf.maximum(length - window, 0), tf.float32)
    starts = tf.cast(tf.round(tf.linspace(0.0, last, num_windows)), tf.int32)
    # audio_window counts its start in video frames; with fps = rate = 1 it is in samples.
    waves = tf.map_fn(lambda s: sampling.audio_window(wave, s, window, video_fps=1,
                                                      audio_sample_rate=1),
                      starts, fn_output_signature=tf.TensorSpec([window], tf.float32))
    specs = tf.ensure_shape(spectrogram.from_config(waves, d),
                            [num_windows, audio_num_frames(config), d.audio.num_mel_bins])
    out = {'audio': specs,
           'label': tf.fill([num_windows], ex['label']),
           'video_index': tf.fill([num_windows], tf.cast(index, tf.int32)),
           'clip_id': tf.fill([num_windows], ex['clip_id']),
           'num_samples': tf.fill([num_windows], length),
           bad_records.INDEX: tf.fill([num_windows], tf.cast(index, tf.int64))}
    if num_classes:
      labels_L = ex['labels']
      check = tf.debugging.assert_less(
          labels_L, num_classes, message=f'a clip/label/index value is >= {num_classes} classes')
      with tf.control_dependencies([check]):
        multi_hot = tf.reduce_max(tf.one_hot(labels_L, num_classes, dtype=tf.float32), axis=0)
      multi_hot = tf.reshape(tf.cond(tf.size(labels_L) > 0, lambda: multi_hot,
                                     lambda: tf.zeros([num_classes])), [num_classes])
      out['labels'] = tf.tile(multi_hot[None], [num_windows, 1])
    return out

  if is_tfds:
    ds = _batches(config, tfds_reader.records(source, audio=True).enumerate(), windows,
                  batch_size=batch_size, log_bad=True, unbatch=True)
    return bad_records.TfdsIterator(ds, tfds_reader.num_examples(source))
  index = reader.index_shards(reader.list_shards(source))
  read, monitor = _read_with_budget(config, index, 'audio eval',
                                    bad_records.needed_features(['audio']))

  def example(entry):
    return dict(windows(entry, read(entry)), **{bad_records.ENTRY: tf.fill([num_windows], entry)})
  ds = _batches(config, tf.data.Dataset.range(len(index)), example, batch_size=batch_size,
                unbatch=True)
  return _finite_shard_iterator(ds, monitor, len(index))
