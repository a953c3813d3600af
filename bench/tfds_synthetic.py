"""Writes the embedded synthetic dataset as a TFDS dataset (`brave_synthetic`), with TFDS's builder API.

  python bench/tfds_synthetic.py --data_dir=/tmp/tfds --config=configs/brave_rgb_audio.py:demo

The same videos as the DMVR shards the demo evaluates on, stored the way
TFDS's video datasets are (a `Video` feature of JPEG frames, as UCF101's
build stores them, a `ClassLabel`, an int16 `Audio` feature), so that
`python -m brave_jax.evaluate --tfds=brave_synthetic --tfds_data_dir=DIR`
can be compared with the DMVR numbers (bench/eval_protocols.py).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from brave_jax import config_base  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top,wrong-import-position

_DATASET: dict = {}  # Filled by main(): the DMVR splits to copy.


def _examples(shards):
  for record in tf.data.TFRecordDataset(shards):
    ex = tf.train.SequenceExample.FromString(record.numpy())
    frames = [tf.io.decode_jpeg(f.bytes_list.value[0]).numpy()
              for f in ex.feature_lists.feature_list[dmvr_format.IMAGE_KEY].feature]
    wave = np.asarray(ex.feature_lists.feature_list[dmvr_format.WAVEFORM_KEY].feature[0]
                      .float_list.value, np.float32)
    ctx = ex.context.feature
    key = ctx[dmvr_format.VIDEO_ID_KEY].bytes_list.value[0].decode()
    yield key, {'video': np.stack(frames),
                'label': int(ctx[dmvr_format.LABEL_INDEX_KEY].int64_list.value[0]),
                'audio': np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)}


class BraveSynthetic(tfds.core.GeneratorBasedBuilder):
  """The embedded audio-visual dataset of brave_jax (data/synthetic.py) as a TFDS dataset."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'video': tfds.features.Video(shape=(None, None, None, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(names=_DATASET['class_names']),
        'audio': tfds.features.Audio(shape=(None,), dtype=np.int16,
                                     sample_rate=synthetic.AUDIO_RATE)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(_DATASET['train']),
            'test': self._generate_examples(_DATASET['test'])}

  def _generate_examples(self, shards):
    yield from _examples(shards)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--data_dir', required=True)
  p.add_argument('--config', required=True, help='configs/<file>.py[:variant] (its synthetic set)')
  args = p.parse_args()
  config = config_base.load(args.config)
  _DATASET.update(synthetic.ensure_dataset(config.data.synthetic,
                                           with_flow='flow' in config.data.broad_modalities))
  builder = BraveSynthetic(data_dir=args.data_dir)
  builder.download_and_prepare()
  print({split: info.num_examples for split, info in builder.info.splits.items()})


if __name__ == '__main__':
  main()
