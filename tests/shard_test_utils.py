"""Reads generated DMVR shards back for tests that check what a generator wrote."""
from typing import Sequence

import numpy as np
import tensorflow as tf

from brave_jax.data import dmvr_format


def parse_labelled_clips(paths: str | Sequence[str]) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
  """(label index, label text, uint8 frames [T, H, W, 3], waveform [S]) of every record."""
  ctx_spec = {dmvr_format.LABEL_INDEX_KEY: tf.io.FixedLenFeature([1], tf.int64),
              dmvr_format.LABEL_TEXT_KEY: tf.io.FixedLenFeature([1], tf.string)}
  seq_spec = {dmvr_format.IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string),
              dmvr_format.WAVEFORM_KEY: tf.io.VarLenFeature(tf.float32)}
  out = []
  for record in tf.data.TFRecordDataset(paths):
    ctx, seq = tf.io.parse_single_sequence_example(record, ctx_spec, seq_spec)
    frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in seq[dmvr_format.IMAGE_KEY]])
    wave = tf.sparse.to_dense(seq[dmvr_format.WAVEFORM_KEY]).numpy().reshape(-1)
    out.append((int(ctx[dmvr_format.LABEL_INDEX_KEY][0]),
                ctx[dmvr_format.LABEL_TEXT_KEY][0].numpy().decode(), frames, wave))
  return out
