"""The DMVR on-disk format: feature keys, one-example encoding, and sharded writing.

One writer serves the converter, the embedded synthetic dataset and the test
fixtures, so every shard in the project has exactly the layout the published
DMVR readers expect (docs/design.md).
"""
from __future__ import annotations

import dataclasses
import io
import os
import re
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
import tensorflow as tf

from brave_jax import log

_LOG = log.get_logger(__name__)

IMAGE_KEY = 'image/encoded'  # Feature list: one JPEG per frame.
FLOW_KEY = 'flow/encoded'  # Feature list: one 3-channel JPEG per frame (x, y, 0).
WAVEFORM_KEY = 'WAVEFORM/feature/floats'  # Feature list of one float list: mono PCM in [-1, 1].
LABEL_INDEX_KEY = 'clip/label/index'  # Context int64 list.
LABEL_TEXT_KEY = 'clip/label/text'  # Context bytes list.
VIDEO_ID_KEY = 'clip/id'  # Context bytes: where the clip came from (file name).
FPS_KEY = 'clip/fps'  # Context float: frame rate the frames were resampled to (ours; optional).
AUDIO_RATE_KEY = 'clip/audio_rate'  # Context float: waveform sample rate (ours; optional).
FLOW_METHOD_KEY = 'flow/method'  # Context bytes: the flow algorithm (ours; optional).
# A record cut from a longer video (convert --clip_seconds; ours, optional):
CLIP_SOURCE_KEY = 'clip/source'  # Context bytes: the source video's id (clip/id of the whole video).
CLIP_START_KEY = 'clip/start_seconds'  # Context float: where the record's frame 0 is in the source.

FLOW_CLIP_PX = 20.0  # Flow is clipped to +-20 px before quantisation (DMVR/BraVe convention).


def shard_name(prefix: str, index: int, num_shards: int) -> str:
  """`prefix-00003-of-00016`: the name pattern DMVR readers glob for."""
  return f'{prefix}-{index:05d}-of-{num_shards:05d}'


def encode_jpeg(image_HxWxC: np.ndarray, quality: int = 95) -> bytes:
  """JPEG bytes of one uint8 frame (TF's encoder, so reads decode it bit-exactly)."""
  if image_HxWxC.dtype != np.uint8:
    raise ValueError(f'frames must be uint8, got {image_HxWxC.dtype}')
  return tf.io.encode_jpeg(image_HxWxC, quality=quality, chroma_downsampling=False).numpy()


def flow_to_uint8(flow_HxWx2: np.ndarray) -> np.ndarray:
  """Quantises flow (pixels) to the stored 3-channel image: (v/20 + 1) * 127.5, channel 2 zero."""
  clipped = np.clip(flow_HxWx2.astype(np.float32), -FLOW_CLIP_PX, FLOW_CLIP_PX)
  q = np.round((clipped / FLOW_CLIP_PX + 1.0) * 127.5)
  image = np.zeros(flow_HxWx2.shape[:2] + (3,), np.uint8)
  image[..., :2] = np.clip(q, 0, 255).astype(np.uint8)
  return image


def encode_flow_jpeg(flow_HxWx2: np.ndarray, quality: int = 95) -> bytes:
  """DMVR flow JPEG (x, y, 0 at (v/20 + 1) * 127.5) stored in RGB colour space, not YCbCr.

  The usual YCbCr transform mixes the x, y and zero channels and rounds each
  mix to 8 bits, so smooth flow came back up to ~5 levels (0.8 px) off; in RGB
  space each channel is coded alone and reads back within one level (0.16 px)
  with an accurate DCT. Any JPEG decoder honours the Adobe marker this sets.
  """
  buffer = io.BytesIO()
  Image.fromarray(flow_to_uint8(flow_HxWx2)).save(
      buffer, 'JPEG', quality=quality, subsampling=0, keep_rgb=True)
  return buffer.getvalue()


@dataclasses.dataclass
class Clip:
  """One video's content, ready to be written as one SequenceExample."""
  frames_TxHxWx3: np.ndarray | None = None  # uint8 RGB frames.
  encoded_frames: Sequence[bytes] | None = None  # Or frames already JPEG-encoded.
  waveform: np.ndarray | None = None  # float32 mono PCM in [-1, 1]; None = no audio.
  label_index: int | Sequence[int] | None = None  # Several for multi-label data (AudioSet).
  label_text: str | Sequence[str] | None = None
  video_id: str = ''
  fps: float | None = None
  audio_rate: float | None = None
  flow_TxHxWx2: np.ndarray | None = None  # Optical flow in pixels (x, y).
  encoded_flow: Sequence[bytes] | None = None
  flow_method: str | None = None
  source: str | None = None  # The longer video this clip was cut from (clip/source).
  start_seconds: float | None = None  # Time of frame 0 in that video (clip/start_seconds).


def _add_jpeg_sequence(seq: tf.train.SequenceExample, key: str, encoded: Sequence[bytes] | None,
                       arrays: np.ndarray | None, encode) -> None:
  """Appends one JPEG per frame under `key`, encoding the arrays unless bytes were given."""
  if encoded is None and arrays is not None:
    encoded = [encode(a) for a in arrays]
  if encoded is not None:
    feature_list = seq.feature_lists.feature_list[key]
    for jpeg in encoded:
      feature_list.feature.add().bytes_list.value.append(jpeg)


def encode_clip(clip: Clip, jpeg_quality: int = 95) -> bytes:
  """Serialised tf.train.SequenceExample with the DMVR keys for one clip."""
  seq = tf.train.SequenceExample()
  ctx = seq.context.feature
  if clip.label_index is not None:
    ctx[LABEL_INDEX_KEY].int64_list.value.extend(
        int(i) for i in np.atleast_1d(np.asarray(clip.label_index, np.int64)))
  if clip.label_text is not None:
    texts = [clip.label_text] if isinstance(clip.label_text, str) else clip.label_text
    ctx[LABEL_TEXT_KEY].bytes_list.value.extend(t.encode() for t in texts)
  if clip.video_id:
    ctx[VIDEO_ID_KEY].bytes_list.value.append(clip.video_id.encode())
  if clip.fps is not None:
    ctx[FPS_KEY].float_list.value.append(float(clip.fps))
  if clip.audio_rate is not None:
    ctx[AUDIO_RATE_KEY].float_list.value.append(float(clip.audio_rate))
  if clip.flow_method is not None:
    ctx[FLOW_METHOD_KEY].bytes_list.value.append(clip.flow_method.encode())
  if clip.source is not None:
    ctx[CLIP_SOURCE_KEY].bytes_list.value.append(clip.source.encode())
  if clip.start_seconds is not None:
    ctx[CLIP_START_KEY].float_list.value.append(float(clip.start_seconds))

  _add_jpeg_sequence(seq, IMAGE_KEY, clip.encoded_frames, clip.frames_TxHxWx3,
                     lambda f: encode_jpeg(f, jpeg_quality))
  _add_jpeg_sequence(seq, FLOW_KEY, clip.encoded_flow, clip.flow_TxHxWx2,
                     lambda f: encode_flow_jpeg(f, jpeg_quality))

  if clip.waveform is not None:
    waveform = np.asarray(clip.waveform, np.float32).reshape(-1)
    if waveform.size and (not np.all(np.isfinite(waveform)) or np.abs(waveform).max() > 1.0 + 1e-6):
      raise ValueError(f'clip {clip.video_id!r}: waveform must be finite float PCM in [-1, 1]')
    seq.feature_lists.feature_list[WAVEFORM_KEY].feature.add().float_list.value.extend(
        waveform.tolist())
  return seq.SerializeToString()


class NothingToWriteError(ValueError):
  """write_shards got no examples; it wrote (and replaced, and removed) nothing."""


def stale_shards(output_dir: str, prefix: str, num_shards: int) -> list[str]:
  """Existing `prefix-NNNNN-of-MMMMM` files in output_dir with M != num_shards, sorted."""
  if not os.path.isdir(output_dir):
    return []
  pattern = re.compile(re.escape(prefix) + r'-\d{5}-of-(\d{5})$')
  return sorted(os.path.join(output_dir, name) for name in os.listdir(output_dir)
                if (m := pattern.match(name)) and int(m.group(1)) != num_shards)


def _fsync(path: str) -> None:
  with open(path, 'rb') as f:
    os.fsync(f.fileno())


def write_shards(serialized_examples: Iterable[bytes], output_dir: str, prefix: str,
                 num_shards: int) -> list[str]:
  """Writes examples round-robin into `num_shards` TFRecord files, atomically; returns their paths.

  Nothing already in output_dir is touched until the new set is complete: the
  shards are written under hidden temporary names, synced, then renamed over
  any old ones. Only then are shards of the same prefix with another total
  (`prefix-*-of-M`, M != num_shards: an earlier conversion with another
  --num_shards) deleted, since a `prefix-*` glob would read them too. On any
  error, or when there is no example at all (NothingToWriteError), the
  temporaries are removed and the existing files stay as they were.
  """
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}')
  os.makedirs(output_dir, exist_ok=True)
  names = [shard_name(prefix, i, num_shards) for i in range(num_shards)]
  paths = [os.path.join(output_dir, n) for n in names]
  tmp_paths = [os.path.join(output_dir, f'.{n}.{os.getpid()}.tmp') for n in names]
  count = 0
  try:
    writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
    try:
      for count, example in enumerate(serialized_examples, 1):
        writers[(count - 1) % num_shards].write(example)
    finally:
      for w in writers:
        w.close()
    if not count:
      raise NothingToWriteError(f'no examples to write as {prefix!r} shards; nothing in '
                                f'{output_dir!r} was written or replaced')
    for tmp in tmp_paths:
      _fsync(tmp)
    for tmp, final in zip(tmp_paths, paths):
      os.replace(tmp, final)
  finally:
    for tmp in tmp_paths:
      if os.path.exists(tmp):
        os.remove(tmp)
  stale = stale_shards(output_dir, prefix, num_shards)
  for path in stale:
    os.remove(path)
  if stale:
    _LOG.warning('removed %d stale shard(s) of an earlier %r set with another total, e.g. %s',
                 len(stale), prefix, stale[0])
  return paths
