"""TFDS video datasets read as they are, by name: `--tfds=ucf101/ucf101_1_256 --tfds_data_dir=D`.

TFDS's `Video` feature stores one encoded image per frame, as DMVR's
`image/encoded` does. Reading it with TFDS's decoding skipped gives the
per-example functions of data/pipeline.py exactly what `reader.parse_example`
gives them for a DMVR record: encoded frames [T], an int32 label, and (where
the dataset has an `audio` feature) the waveform as float PCM in [-1, 1]. So
every protocol reads TFDS datasets with no conversion step and the same
sampling, cropping and augmentation code. Frames stored as PNG (TFDS's
default for `Video`) are re-encoded as JPEG on the fly, since the crop
decoders are JPEG's; UCF101's TFDS build stores JPEG already.

A prepared dataset is all that is needed: `tfds.builder(name, data_dir=...)`
rebuilds the reader from the files TFDS wrote, even when the builder's code
is not importable here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

VIDEO_KEY = 'video'  # TFDS feature names read (the conventions of TFDS's video datasets).
LABEL_KEY = 'label'
AUDIO_KEY = 'audio'
REENCODE_JPEG_QUALITY = 95  # For datasets whose frames are not JPEG.


class TfdsError(ValueError):
  """The named TFDS dataset is missing, unprepared, or lacks a feature the protocol needs."""


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """One split of a prepared TFDS dataset, usable wherever shards are (a `pipeline` source)."""
  name: str  # 'ucf101/ucf101_1_256' (dataset/config[:version]).
  split: str  # 'train', 'test', 'train[:10%]', ...
  data_dir: str | None = None  # Where `tfds build` / download_and_prepare wrote it.

  def __str__(self) -> str:
    where = f' in {self.data_dir}' if self.data_dir else ''
    return f'tfds:{self.name}[{self.split}]{where}'


def is_tfds(source: Any) -> bool:
  """True for a TfdsSplit (pipeline functions also accept DMVR shard specs)."""
  return isinstance(source, TfdsSplit)


def builder(source: TfdsSplit) -> tfds.core.DatasetBuilder:
  """The dataset's builder, with a message naming the dataset and directory when it is missing."""
  try:
    b = tfds.builder(source.name, data_dir=source.data_dir)
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises several unrelated types.
    raise TfdsError(
        f'--tfds={source.name}: TFDS cannot find this dataset in --tfds_data_dir='
        f'{source.data_dir or "(TFDS default, ~/tensorflow_datasets)"} ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}); prepare it first, e.g. '
        f'`tfds build {source.name.split("/")[0]} --data_dir=DIR`, and pass that DIR') from e
  splits = b.info.splits
  base_split = source.split.split('[')[0]
  if not splits or base_split not in splits:
    raise TfdsError(f'{source}: no split {base_split!r} (prepared splits: '
                    f'{sorted(splits) if splits else "none; run download_and_prepare"})')
  return b


def _features(source: TfdsSplit) -> Any:
  return builder(source).info.features


def check_features(source: TfdsSplit, *, audio: bool = False, flow: bool = False) -> None:
  """Fails before anything compiles when the dataset lacks a feature the run reads."""
  features = _features(source)
  if flow:
    raise TfdsError(f'{source}: TFDS video datasets carry no optical flow; drop "flow" from '
                    'config.data.broad_modalities or convert with `brave_jax.data.convert --flow`')
  if VIDEO_KEY not in features or not isinstance(features[VIDEO_KEY], tfds.features.Video):
    raise TfdsError(f'{source}: needs a tfds.features.Video feature named {VIDEO_KEY!r}; it has '
                    f'{sorted(features.keys())}')
  if audio and AUDIO_KEY not in features:
    raise TfdsError(f'{source}: the run needs audio, but the dataset has no {AUDIO_KEY!r} '
                    f'feature (features: {sorted(features.keys())})')


def class_names(source: TfdsSplit) -> list[str] | None:
  """The label feature's class names (ClassLabel), or None when it has none."""
  features = _features(source)
  feature = features[LABEL_KEY] if LABEL_KEY in features else None
  feature = getattr(feature, 'feature', feature)  # Sequence(ClassLabel) for multi-label data.
  names = getattr(feature, 'names', None)
  return list(names) if names else None


def audio_sample_rate(source: TfdsSplit) -> int | None:
  """Sample rate the dataset's audio feature declares (None when unknown or absent)."""
  features = _features(source)
  if AUDIO_KEY not in features:
    return None
  return getattr(features[AUDIO_KEY], 'sample_rate', None)


def num_examples(source: TfdsSplit) -> int:
  """Examples in the split (TFDS's own count, slices like 'train[:10%]' included)."""
  b = builder(source)
  return int(b.info.splits[source.split].num_examples)


def _to_jpeg(frames_T: tf.Tensor) -> tf.Tensor:
  def one(encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.io.encode_jpeg(image, quality=REENCODE_JPEG_QUALITY, chroma_downsampling=False)
  return tf.map_fn(one, frames_T, fn_output_signature=tf.TensorSpec([], tf.string))


def _to_float_pcm(audio: tf.Tensor) -> tf.Tensor:
  """Mono float32 in [-1, 1] from TFDS's audio tensor (int16/int32 PCM or float, [S] or [S, C])."""
  if audio.dtype.is_integer:
    scale = float(np.iinfo(audio.dtype.as_numpy_dtype).max) + 1.0
    audio = tf.cast(audio, tf.float32) / scale
  else:
    audio = tf.cast(audio, tf.float32)
  if audio.shape.rank == 2:
    audio = tf.reduce_mean(audio, axis=-1)
  return tf.clip_by_value(tf.reshape(audio, [-1]), -1.0, 1.0)


def records(source: TfdsSplit, *, process_index: int = 0, process_count: int = 1,
            shuffle_files: bool = False, seed: int | None = None,
            audio: bool = False) -> tf.data.Dataset:
  """The split as a tf.data.Dataset of TFDS elements, frames still encoded, in a fixed order.

  With process_count > 1 each process reads its own, disjoint share
  (tfds.split_for_jax_process). Unused features are not read: audio only
  when `audio`.
  """
  check_features(source, audio=audio)
  b = builder(source)
  split = source.split
  if process_count > 1:
    split = tfds.split_for_jax_process(split, process_index=process_index,
                                       process_count=process_count)
  decoders = {VIDEO_KEY: tfds.decode.SkipDecoding()}
  read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1 if not shuffle_files
                                else tfds.ReadConfig().interleave_cycle_length)
  ds = b.as_dataset(split=split, decoders=decoders, shuffle_files=shuffle_files,
                    read_config=read_config)
  features = b.info.features
  is_jpeg = getattr(features[VIDEO_KEY], '_encoding_format', 'png') in ('jpeg', 'jpg')
  keep = [VIDEO_KEY, LABEL_KEY] + ([AUDIO_KEY] if audio else [])

  def select(element):
    out = {k: element[k] for k in keep if k in element}
    if not is_jpeg:
      out[VIDEO_KEY] = _to_jpeg(out[VIDEO_KEY])
    return out
  return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def parse(element: dict[str, tf.Tensor], *, video: bool = True, flow: bool = False,
          audio: bool = False, all_labels: bool = False,
          clip_id: bool = False) -> dict[str, tf.Tensor]:
  """A TFDS element in `reader.parse_example`'s layout ('video', 'label', 'audio', 'labels')."""
  if flow:
    raise TfdsError('TFDS video datasets carry no optical flow (flow/encoded)')
  label = element.get(LABEL_KEY)
  if label is None:
    label_L = tf.zeros([0], tf.int32)
  else:
    label_L = tf.reshape(tf.cast(label, tf.int32), [-1])  # ClassLabel or Sequence(ClassLabel).
  out = {'label': tf.cond(tf.size(label_L) > 0, lambda: label_L[0],
                          lambda: tf.constant(-1, tf.int32))}
  if all_labels:
    out['labels'] = label_L
  if clip_id:  # TFDS examples carry no clip id; folds need DMVR shards and a metadata CSV.
    out['clip_id'] = tf.constant('')
  if video:
    out['video'] = element[VIDEO_KEY]
  if audio:
    out['audio'] = _to_float_pcm(element[AUDIO_KEY])
  return out
