"""Shard listing, host split, batch structure, determinism, bad-data counting, eval crops."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import conftest

from brave_jax.data import dmvr_format
from brave_jax.data import eval_clips
from brave_jax.data import pipeline
from brave_jax.data import reader

H, W, T, RATE = 24, 32, 12, 16000


def _frames(i, t=T):
  yy, xx = np.mgrid[:H, :W]
  f = np.stack([(xx * 8 + 20 * i) % 256, yy * 10, np.full_like(xx, 30 * i % 256)], -1)
  return np.stack([np.roll(f, k, axis=1) for k in range(t)]).astype(np.uint8)


def _clip(i, *, audio=True, t=T):
  wave = np.sin(np.arange(int(t / 25 * RATE)) * 0.05 * (i + 1)).astype(np.float32) * 0.5
  return dmvr_format.Clip(frames_TxHxWx3=_frames(i, t), waveform=wave if audio else None,
                          label_index=i % 3, label_text=f'c{i % 3}', video_id=f'v{i}')


def _config(cfg):
  cfg.data.audio_sample_rate = RATE
  cfg.data.num_parallel_calls = 2
  cfg.training.batch_size = 4
  cfg.eval.update(num_temporal_crops=2, num_spatial_crops=3, resize_short_side=32,
                  image_size=32, num_frames=4, frame_step=2, train_passes=2)
  return cfg


@pytest.fixture
def shard_dir(tmp_path):
  examples = [dmvr_format.encode_clip(_clip(i)) for i in range(8)]
  dmvr_format.write_shards(examples, str(tmp_path), 'train', 4)
  return tmp_path


# --- Shard listing and host split ------------------------------------------

def test_list_shards_accepts_dir_glob_comma_list(shard_dir):
  files = reader.list_shards(str(shard_dir))
  assert len(files) == 4 and files == sorted(files)
  assert reader.list_shards(str(shard_dir / 'train-*')) == files
  assert reader.list_shards(','.join(reversed(files))) == files
  assert reader.list_shards(list(reversed(files))) == files


def test_missing_and_empty_shards_name_the_path(tmp_path):
  with pytest.raises(reader.ShardError, match='nope-'):
    reader.list_shards(str(tmp_path / 'nope-*'))
  with pytest.raises(reader.ShardError, match='missing.tfrecord'):
    reader.list_shards(str(tmp_path / 'missing.tfrecord'))
  (tmp_path / 'empty').write_bytes(b'')
  with pytest.raises(reader.ShardError, match='empty'):
    reader.list_shards(str(tmp_path / 'empty'))
  with pytest.raises(reader.ShardError, match='no shards'):
    reader.list_shards('')


def test_split_for_process_is_disjoint_and_covering():
  files = [f'f{i:02d}' for i in range(10)]
  parts = [reader.split_for_process(files, p, 3) for p in range(3)]
  assert sorted(sum(parts, [])) == files
  assert all(not set(a) & set(b) for i, a in enumerate(parts) for b in parts[i + 1:])
  with pytest.raises(reader.ShardError, match='cannot be split over 12'):
    reader.split_for_process(files, 0, 12)


# --- Training batches --------------------------------------------------------

def test_train_batch_structure_va(shard_dir, tiny_va_config):
  cfg = _config(tiny_va_config)
  it = pipeline.make_train_dataset(cfg, str(shard_dir), num_local_devices=2, seed=0)
  batch = next(it)
  shapes = pipeline.batch_shapes(cfg)
  assert shapes['broad']['audio'] == (-(-int(round(32 / 25 * RATE)) // 160), 80)
  assert batch['narrow']['video'].shape == (2, 2) + shapes['narrow']['video'] == (2, 2, 4, 32, 32, 3)
  assert batch['narrow']['video'].dtype == np.float32
  assert 0.0 <= batch['narrow']['video'].min() and batch['narrow']['video'].max() <= 1.0
  assert batch['broad']['audio'].shape == (2, 2) + shapes['broad']['audio']
  assert np.isfinite(batch['broad']['audio']).all() and batch['broad']['audio'].max() > 0
  assert batch['label'].shape == (2, 2) and batch['label'].dtype == np.int32
  assert set(batch) == {'narrow', 'broad', 'label'} and set(batch['broad']) == {'audio'}
  assert it.skipped_records() == 0


def test_batch_shapes_of_other_broad_views_leave_the_config_as_it_was(tiny_va_config,
                                                                      tiny_vv_config):
  """What random init of a checkpoint whose views are not the config's shapes its batch with."""
  before = str(tiny_va_config)
  assert pipeline.batch_shapes(tiny_va_config, ('video',)) == pipeline.batch_shapes(tiny_vv_config)
  assert set(pipeline.batch_shapes(tiny_va_config, ('video', 'audio'))['broad']) == {'video',
                                                                                     'audio'}
  assert str(tiny_va_config) == before


def test_train_batch_structure_vv_and_per_host_batch(shard_dir, tiny_vv_config):
  cfg = _config(tiny_vv_config)
  cfg.training.batch_size = 8
  it = pipeline.make_train_dataset(cfg, str(shard_dir), process_index=1, process_count=2,
                                   num_local_devices=2, seed=0)
  batch = next(it)
  assert batch['narrow']['video'].shape == (2, 2, 4, 32, 32, 3)
  assert batch['broad']['video'].shape == (2, 2, 8, 32, 32, 3)  # Randomly convolved.
  assert pipeline.batch_shapes(cfg)['broad'] == {'video': (8, 32, 32, 3)}


def test_train_is_deterministic_given_seed_and_start_step_moves_it(shard_dir, tiny_va_config):
  cfg = _config(tiny_va_config)
  first = lambda **kw: next(pipeline.make_train_dataset(cfg, str(shard_dir), num_local_devices=1,
                                                        **kw))
  a, b = first(seed=3), first(seed=3)
  np.testing.assert_array_equal(a['narrow']['video'], b['narrow']['video'])
  np.testing.assert_array_equal(a['broad']['audio'], b['broad']['audio'])
  c = first(seed=3, start_step=5)
  assert np.abs(a['narrow']['video'] - c['narrow']['video']).max() > 0


def test_hosts_read_disjoint_clips_that_together_cover_the_dataset(tmp_path, tiny_va_config):
  """Two hosts with the same seed: each reads only its own shards' clips (labels name clips here)."""
  clips = [dmvr_format.Clip(frames_TxHxWx3=_frames(i), waveform=_clip(i).waveform, label_index=i,
                            label_text=f'c{i}', video_id=f'v{i}') for i in range(8)]
  conftest.write_clip_shards(tmp_path, clips, 'train', 4)
  cfg = _config(tiny_va_config)  # Global batch 4: 2 clips per host and step.
  seen = []
  for host in (0, 1):
    it = pipeline.make_train_dataset(cfg, str(tmp_path), process_index=host, process_count=2,
                                     num_local_devices=1, seed=3)
    # Four steps of two clips: two epochs of the host's four clips.
    seen.append({int(l) for _ in range(4) for l in next(it)['label'].ravel()})
  assert len(seen[0]) == len(seen[1]) == 4, seen
  assert not seen[0] & seen[1], seen
  assert seen[0] | seen[1] == set(range(8))


# --- Bad data ----------------------------------------------------------------

def _bad_records():
  good = [dmvr_format.encode_clip(_clip(i)) for i in range(3)]
  garbage_proto = b'\x0a\xff\xff\xff\x0f not a SequenceExample'
  frames = [dmvr_format.encode_jpeg(f) for f in _frames(5)]
  bad_jpeg = dmvr_format.encode_clip(dmvr_format.Clip(
      # Frames 4..7 are garbage: every window samples some of them, never only frame 0.
      encoded_frames=frames[:4] + [b'\xff\xd8 garbage jpeg'] * 4 + frames[8:],
      waveform=np.zeros(8000, np.float32), label_index=1))
  no_audio = dmvr_format.encode_clip(_clip(6, audio=False))
  # Order: good0, garbage, good1, bad jpeg, no audio, good2.
  return [good[0], garbage_proto, good[1], bad_jpeg, no_audio, good[2]]


def test_bad_records_are_skipped_and_counted(tmp_path, tiny_va_config):
  cfg = _config(tiny_va_config)
  cfg.eval.update(num_temporal_crops=1, num_spatial_crops=1)
  dmvr_format.write_shards(_bad_records(), str(tmp_path), 'bad', 1)
  it = pipeline.make_eval_dataset(cfg, str(tmp_path), mode='test', batch_size=8,
                                  include_audio=True)
  batches = list(it)
  indices = np.concatenate([b['video_index'] for b in batches])
  np.testing.assert_array_equal(indices, [0, 2, 5])  # Positions in shard order.
  assert it.skipped_records() == 3
  # Without audio the audio-less record is fine: only the two corrupt ones go.
  it = pipeline.make_eval_dataset(cfg, str(tmp_path), mode='test', batch_size=8)
  np.testing.assert_array_equal(np.concatenate([b['video_index'] for b in it]), [0, 2, 4, 5])
  assert it.skipped_records() == 2
  # Training skips them too and keeps counting.
  train = pipeline.make_train_dataset(cfg, str(tmp_path), num_local_devices=1, seed=0)
  for _ in range(3):
    batch = next(train)
    assert np.isfinite(batch['broad']['audio']).all()
  assert train.skipped_records() >= 3


def test_trailing_bad_records_are_counted(tmp_path, tiny_va_config):
  cfg = _config(tiny_va_config)
  cfg.eval.update(num_temporal_crops=1, num_spatial_crops=1)
  records = [dmvr_format.encode_clip(_clip(0)), b'garbage', b'more garbage']
  dmvr_format.write_shards(records, str(tmp_path), 'tail', 1)
  it = pipeline.make_eval_dataset(cfg, str(tmp_path), mode='test', batch_size=4)
  assert len(list(it)) == 1 and it.skipped_records() == 2


def test_independent_minimal_writer_is_read(tmp_path, tiny_va_config):
  """Shards from a bare tf.train.SequenceExample writer (only the three DMVR keys) read fine."""
  path = str(tmp_path / 'minimal-00000-of-00001')
  with tf.io.TFRecordWriter(path) as w:
    for i in range(2):
      seq = tf.train.SequenceExample()
      seq.context.feature['clip/label/index'].int64_list.value.append(i + 5)
      images = seq.feature_lists.feature_list['image/encoded']
      for f in _frames(i):
        images.feature.add().bytes_list.value.append(tf.io.encode_jpeg(f).numpy())
      seq.feature_lists.feature_list['WAVEFORM/feature/floats'].feature.add().float_list.value[:] = (
          np.linspace(-0.5, 0.5, 7000).tolist())
      w.write(seq.SerializeToString())
  cfg = _config(tiny_va_config)
  batch = next(pipeline.make_train_dataset(cfg, path, num_local_devices=1, seed=0))
  assert sorted(set(batch['label'].ravel().tolist())) <= [5, 6]
  assert batch['broad']['audio'].shape[-1] == 80
  rows = list(pipeline.make_eval_dataset(cfg, path, mode='test', batch_size=100))
  np.testing.assert_array_equal(rows[0]['label'], [5] * 6 + [6] * 6)


# --- Eval --------------------------------------------------------------------

def test_eval_test_mode_groups_crops_of_a_video(shard_dir, tiny_va_config):
  cfg = _config(tiny_va_config)  # 2 temporal x 3 spatial crops.
  it = pipeline.make_eval_dataset(cfg, str(shard_dir), mode='test', batch_size=5,
                                  include_audio=True)
  batches = list(it)
  video = np.concatenate([b['video'] for b in batches])
  index = np.concatenate([b['video_index'] for b in batches])
  label = np.concatenate([b['label'] for b in batches])
  assert video.shape == (8 * 6, 4, 32, 32, 3) and video.dtype == np.float32
  assert batches[0]['audio'].shape[1:] == pipeline.batch_shapes(cfg)['broad']['audio']
  np.testing.assert_array_equal(index, np.repeat(np.arange(8), 6))
  # Shards are round-robin: record r of shard s is clip s + 4 r, label = clip % 3.
  clip_of_index = [s + 4 * r for s in range(4) for r in range(2)]
  np.testing.assert_array_equal(label, np.repeat([c % 3 for c in clip_of_index], 6))
  # Deterministic: a second pass gives the same crops.
  again = np.concatenate([b['video'] for b in pipeline.make_eval_dataset(
      cfg, str(shard_dir), mode='test', batch_size=5, include_audio=True)])
  np.testing.assert_array_equal(video, again)
  # Spatial crops of one window differ (left/centre/right of a 32x43 frame).
  assert np.abs(video[0] - video[2]).max() > 0.05


def test_eval_train_mode_passes(shard_dir, tiny_va_config):
  cfg = _config(tiny_va_config)  # 2 passes.
  rows = list(pipeline.make_eval_dataset(cfg, str(shard_dir), mode='train', batch_size=16))
  assert len(rows) == 1
  index = rows[0]['video_index']
  np.testing.assert_array_equal(index, np.tile(np.arange(8), 2))
  assert rows[0]['video'].shape == (16, 4, 32, 32, 3)
  assert np.abs(rows[0]['video'][:8] - rows[0]['video'][8:]).max() > 0  # Fresh augmentation.


@pytest.mark.parametrize('mode,settings', [
    ('test', dict(num_frames=2, num_temporal_crops=1, num_spatial_crops=2)),
    ('train', dict(num_frames=2, frame_step=1, train_passes=1)),
])
def test_clips_given_as_a_value_equal_config_eval_saying_the_same(shard_dir, tiny_va_config,
                                                                  mode, settings):
  """`clips=` steers the pipeline exactly as config.eval would, and leaves the config as it was."""
  cfg = _config(tiny_va_config)
  before = str(cfg)
  clips = dataclasses.replace(eval_clips.EvalClips.from_config(cfg), **settings)
  given = list(pipeline.make_eval_dataset(cfg, str(shard_dir), mode=mode, batch_size=6,
                                          clips=clips))
  assert str(cfg) == before
  cfg.eval.update(**settings)
  assert eval_clips.EvalClips.from_config(cfg) == clips
  configured = list(pipeline.make_eval_dataset(cfg, str(shard_dir), mode=mode, batch_size=6))
  rows = 8 * (clips.test_rows if mode == 'test' else clips.train_passes)
  assert np.concatenate([b['video'] for b in given]).shape == (rows, 2, 32, 32, 3)
  assert len(given) == len(configured)
  for a, b in zip(given, configured):
    for key in ('video', 'label', 'video_index'):
      np.testing.assert_array_equal(a[key], b[key])


def test_bad_mode_raises(shard_dir, tiny_va_config):
  with pytest.raises(ValueError, match='mode'):
    pipeline.make_eval_dataset(tiny_va_config, str(shard_dir), mode='val', batch_size=2)


def test_shards_without_needed_audio_fail_before_training(tmp_path, tiny_va_config):
  cfg = _config(tiny_va_config)
  examples = [dmvr_format.encode_clip(_clip(i, audio=False)) for i in range(4)]
  dmvr_format.write_shards(examples, str(tmp_path), 'silent', 2)
  with pytest.raises(reader.ShardError, match=r'needs audio .*silent-00000-of-00002'):
    pipeline.make_train_dataset(cfg, str(tmp_path), num_local_devices=1, seed=0)


def test_train_and_probe_crops_decode_as_config_says(shard_dir, tiny_va_config, monkeypatch):
  """config.data.jpeg_decode (here not the default) reaches every training crop (narrow, broad
  RGB) and the linear probe's train clips."""
  jpeg_decode = 'reduced_scale'
  from brave_jax.data import decode  # pylint: disable=g-import-not-at-top
  seen = []
  real = decode.decode_train_crop_pixels  # What every training crop, resized or not, goes through.

  def recording(*args, **kwargs):
    seen.append(args[3] if len(args) > 3 else kwargs.get('jpeg_decode', 'full'))
    return real(*args, **kwargs)
  monkeypatch.setattr(decode, 'decode_train_crop_pixels', recording)
  cfg = _config(tiny_va_config)
  cfg.data.jpeg_decode = jpeg_decode
  next(pipeline.make_train_dataset(cfg, str(shard_dir), num_local_devices=1, seed=0))
  next(iter(pipeline.make_eval_dataset(cfg, str(shard_dir), mode='train')))
  assert len(seen) >= 2 and set(seen) == {jpeg_decode}
