"""Bad files and failed conversions (issue 13, data side): each fault is reproduced on real files.

Converter: a run that converts nothing writes nothing; reconverting with another
--num_shards leaves no stale set; messages fit what a broken input file is.
Reader: non-shard files in a shard folder are ignored, mixed shard sets refused,
non-TFRecord files named, damaged stretches skipped and counted record by record.
Training: all-bad data stops with an error naming the shards, with few warnings.
"""
import logging
import os
import struct
import time

import numpy as np
import pytest

from brave_jax import config_base
from brave_jax.data import convert
from brave_jax.data import dmvr_format
from brave_jax.data import pipeline
from brave_jax.data import reader
from brave_jax.data import tfrecord

import media_writers

T, H, W = 12, 24, 32


def _frames(i, t=T):
  yy, xx = np.mgrid[:H, :W]
  f = np.stack([(xx * 8 + 20 * i) % 256, yy * 10, np.full_like(xx, 30 * i % 256)], -1)
  return np.stack([np.roll(f, k, axis=1) for k in range(t)]).astype(np.uint8)


def _record(i, *, garbage_jpegs=False):
  frames = [dmvr_format.encode_jpeg(f) for f in _frames(i)]
  if garbage_jpegs:
    frames = [b'\xff\xd8 not really a jpeg'] * T
  return dmvr_format.encode_clip(dmvr_format.Clip(
      encoded_frames=frames, waveform=np.zeros(20000, np.float32), label_index=i % 3,
      video_id=f'v{i}'))


def _config(cfg, batch=4):
  cfg.data.audio_sample_rate = 16000
  cfg.data.num_parallel_calls = 2
  cfg.training.batch_size = batch
  cfg.eval.update(num_temporal_crops=1, num_spatial_crops=1, resize_short_side=32,
                  image_size=32, num_frames=4, frame_step=2, train_passes=1)
  return cfg


def _shards(path, prefix='train', n=6, num_shards=2, **kw):
  return dmvr_format.write_shards([_record(i, **kw) for i in range(n)], str(path), prefix,
                                  num_shards)


def _offsets(path):
  return tfrecord.index_file(str(path)).offsets.tolist()


# --- Converter -------------------------------------------------------------------------------

def _video(path, seed=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  frames = np.random.default_rng(seed).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
  return media_writers.write_test_video(str(path), frames, fps=25)


def _tree(folder):
  return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


def test_converter_that_converts_nothing_writes_nothing(tmp_path, capsys):
  """Before: 0 of 2 converted replaced the good shard by a 0-byte file and the summary too."""
  good, bad, out = tmp_path / 'good', tmp_path / 'bad', tmp_path / 'out'
  _video(good / 'a' / 'x.mp4')
  assert convert.main([f'--videos={good}', f'--output_dir={out}', '--no_progress']) == 0
  before = _tree(out)
  assert set(before) == {'train-00000-of-00001', 'train_summary.json'}
  bad.mkdir()
  (bad / 'empty.mp4').write_bytes(b'')
  (bad / 'page.mp4').write_text('<!DOCTYPE html><html><body>404 Not Found</body></html>')
  (bad / 'cut.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + os.urandom(200))
  capsys.readouterr()
  assert convert.main([f'--videos={bad}', f'--output_dir={out}', '--no_progress']) == 1
  assert _tree(out) == before  # Same names, same bytes: nothing written, replaced or left over.
  printed = capsys.readouterr()
  assert 'nothing written' in printed.err
  assert 'empty.mp4' in printed.out and 'the file is empty (0 bytes)' in printed.out
  assert 'page.mp4' in printed.out and 'text file, not a video' in printed.out
  assert "'<!DOCTYPE html>" in printed.out
  assert 'cut.mp4' in printed.out and 'moov atom' in printed.out
  assert printed.out.count('moov atom') == 1  # Only the real MP4 gets the re-download hint.


def test_reconverting_with_other_num_shards_leaves_one_set(tmp_path):
  """Before: the old -of-00001 shard stayed beside the new set and train-* read it twice."""
  videos, out = tmp_path / 'videos', tmp_path / 'out'
  for i in range(3):
    _video(videos / 'c' / f'v{i}.mp4', seed=i)
  first = convert.convert(str(videos), str(out), num_shards=1, progress=False)
  assert first.converted == 3 and not first.replaced_shards
  second = convert.convert(str(videos), str(out), num_shards=2, progress=False)
  assert second.replaced_shards == [str(out / 'train-00000-of-00001')]
  assert sorted(os.listdir(out)) == ['train-00000-of-00002', 'train-00001-of-00002',
                                     'train_summary.json']
  index = reader.index_shards(reader.list_shards(str(out / 'train-*')))
  assert len(index) == 3


def test_failed_write_keeps_existing_shards(tmp_path):
  """A crash half-way through writing leaves the old shards and no temporaries."""
  _shards(tmp_path, n=4, num_shards=2)
  before = _tree(tmp_path)

  def dies():
    yield _record(0)
    raise OSError(28, 'No space left on device')
  with pytest.raises(OSError, match='No space left'):
    dmvr_format.write_shards(dies(), str(tmp_path), 'train', 3)
  assert _tree(tmp_path) == before


# --- Shard lists -----------------------------------------------------------------------------

def test_shard_folder_with_other_files_reads_only_shards(tmp_path, tiny_va_config, caplog):
  """Before: dataset.json / train_summary.json in the folder were read as (corrupt) shards.
  Now they are left out; other files are named once so the user sees what was left out, while
  the project's own files beside its shards (the converter's summary, the synthetic set's
  manifest) are expected there and not mentioned (issue 21: every evaluation warned about them)."""
  _shards(tmp_path)
  (tmp_path / 'dataset.json').write_text('{"splits": {}}')
  (tmp_path / 'train_summary.json').write_text('{"converted": 6}')
  (tmp_path / 'notes.txt').write_text('converted on a Tuesday')
  (tmp_path / '.train-00000-of-00002.123.tmp').write_bytes(b'half written')
  expected = [str(tmp_path / 'train-00000-of-00002'), str(tmp_path / 'train-00001-of-00002')]
  with caplog.at_level(logging.WARNING):
    assert reader.list_shards(str(tmp_path)) == expected
    assert reader.list_shards(str(tmp_path / 'train*')) == expected
    assert reader.list_shards(str(tmp_path)) == expected  # Said once per spec.
  said = [r.getMessage() for r in caplog.records if 'not shards' in r.getMessage()]
  assert len(said) == 1, said
  assert 'ignoring 1 file(s) that are not shards: notes.txt' in said[0]
  assert not [r for r in caplog.records if 'summary' in r.getMessage()]
  (tmp_path / 'test_summary.json').write_text('{}')  # Another prefix's summary is not ours.
  with caplog.at_level(logging.WARNING):
    reader.list_shards(str(tmp_path / '*'))
  said = caplog.records[-1].getMessage()
  assert 'notes.txt, test_summary.json' in said and 'train_summary' not in said
  cfg = _config(tiny_va_config)
  it = pipeline.make_eval_dataset(cfg, str(tmp_path), mode='test', batch_size=6)
  assert sum(len(b['label']) for b in it) == 6 and it.skipped_records() == 0


def test_folder_of_train_and_test_shards_is_refused(tmp_path):
  _shards(tmp_path, 'train')
  _shards(tmp_path, 'test')
  with pytest.raises(reader.ShardError, match=r"several prefixes \['test', 'train'\]"):
    reader.list_shards(str(tmp_path))


def test_mixed_shard_totals_of_one_prefix_are_refused(tmp_path):
  old = _shards(tmp_path, num_shards=1)[0]
  # A second set written beside the first (as a copy by hand would), newer.
  os.utime(old, (time.time() - 100, time.time() - 100))
  dmvr_format_writer = __import__('tensorflow').io.TFRecordWriter
  for i in range(2):
    with dmvr_format_writer(str(tmp_path / dmvr_format.shard_name('train', i, 2))) as w:
      w.write(_record(i))
  for spec in (str(tmp_path), str(tmp_path / 'train-*')):
    with pytest.raises(reader.ShardError, match=r'2 shard sets of prefix .train.*-of-00001'):
      reader.list_shards(spec)
    with pytest.raises(reader.ShardError, match=r'rm .*train-\*-of-00001'):
      reader.list_shards(spec)


@pytest.mark.parametrize('junk', ['random', 'json'])
def test_non_tfrecord_file_sorting_first_is_named(tmp_path, tiny_va_config, junk):
  """Before: DataLossError '... Is this even a TFRecord file?' traceback without the file name."""
  _shards(tmp_path, 'train', num_shards=1)
  bad = tmp_path / 'a_first'
  bad.write_bytes(os.urandom(5000) if junk == 'random' else b'{"converted": 3, "shards": []}')
  cfg = _config(tiny_va_config)
  spec = f'{bad},{tmp_path / "train-00000-of-00001"}'
  with pytest.raises(reader.ShardError, match=f'{bad} is not a TFRecord file'):
    pipeline.make_train_dataset(cfg, spec, num_local_devices=1)
  with pytest.raises(reader.ShardError, match=f'{bad} is not a TFRecord file'):
    pipeline.make_eval_dataset(cfg, spec, mode='test')


# --- Damaged shards --------------------------------------------------------------------------

def test_truncated_shard_loses_only_its_last_record(tmp_path, tiny_va_config, caplog):
  [path] = _shards(tmp_path, n=4, num_shards=1)
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size - 100)
  with caplog.at_level(logging.WARNING):
    index = reader.index_shards([path])
  assert len(index) == 3 and index.lost_records == 1
  assert f'{path}: record 3 onwards' in caplog.text and 'truncated file' in caplog.text
  it = pipeline.make_eval_dataset(_config(tiny_va_config), path, mode='test', batch_size=8)
  assert sorted(np.concatenate([b['video_index'] for b in it]).tolist()) == [0, 1, 2]
  assert it.skipped_records() == 1


def test_overwritten_middle_bytes_lose_exactly_the_records_they_hit(tmp_path, tiny_va_config,
                                                                     caplog):
  """Before: TF skipped the rest of the file and counted one record."""
  [path] = _shards(tmp_path, n=6, num_shards=1)
  offsets = _offsets(path)
  data = bytearray(open(path, 'rb').read())
  data[offsets[2]:offsets[2] + 40] = os.urandom(40)  # Record 2's header: framing lost.
  for k in range(offsets[4] + 500, offsets[4] + 520):  # Record 4's data: CRC mismatch.
    data[k] ^= 0xFF
  open(path, 'wb').write(bytes(data))
  index = reader.index_shards([path])
  assert index.record.tolist() == [0, 1, 3, 4, 5] and index.lost_records == 1
  cfg = _config(tiny_va_config)
  with caplog.at_level(logging.WARNING):
    it = pipeline.make_eval_dataset(cfg, path, mode='test', batch_size=8)
    kept = np.concatenate([b['video_index'] for b in it])
  assert kept.tolist() == [0, 1, 2, 4]  # Entries of records 0, 1, 3, 5: record 4 failed its CRC.
  assert it.skipped_records() == 2
  assert f'record 4 of {path}' in caplog.text and 'data CRC mismatch' in caplog.text
  assert f'{path}: record 2 onwards' in caplog.text


def test_shards_of_undecodable_records_stop_training_quickly(tmp_path, tiny_va_config, caplog):
  """Before: no step, no error for 200 s and 49 MB of warnings."""
  _shards(tmp_path, n=8, num_shards=2, garbage_jpegs=True)
  cfg = _config(tiny_va_config, batch=16)
  start = time.time()
  with caplog.at_level(logging.WARNING):
    it = pipeline.make_train_dataset(cfg, str(tmp_path), num_local_devices=1)
    with pytest.raises(reader.BadDataError) as error:
      for _ in range(20):
        next(it)
  assert time.time() - start < 60
  message = str(error.value)
  assert 'train-00000-of-00002' in message and 'train-00001-of-00002' in message
  assert 'did not decode' in message and 'config.data' in message
  warned = [r.getMessage() for r in caplog.records if 'skipped bad' in r.getMessage()]
  assert len(warned) == 10 and len(caplog.records) <= 15  # Rate-limited ...
  assert all(f'of {tmp_path}/train-0000' in m for m in warned)  # ... each naming file and record.


def test_bad_record_budget(tmp_path, tiny_va_config):
  """1 bad record in 6: within the default budget, refused with a 0 budget."""
  records = [_record(i) for i in range(6)]
  records[3] = b'not a SequenceExample at all'
  dmvr_format.write_shards(records, str(tmp_path), 'train', 1)
  cfg = _config(tiny_va_config)
  it = pipeline.make_train_dataset(cfg, str(tmp_path), num_local_devices=1)
  batches = [next(it) for _ in range(3)]  # 12 slots: 2 epochs, record 3 read twice.
  assert it.skipped_records() == 2
  for b in batches:  # Bad rows were filled with copies of good ones.
    assert np.isfinite(b['broad']['audio']).all() and b['narrow']['video'].max() > 0
  cfg.data.max_bad_record_fraction = 0.0
  it = pipeline.make_train_dataset(cfg, str(tmp_path), num_local_devices=1)
  with pytest.raises(reader.BadDataError, match=r'record 3 of .*train-00000-of-00001.*do not parse'):
    for _ in range(3):
      next(it)


@pytest.mark.parametrize('field, value', [('max_bad_record_fraction', 1.5),
                                          ('max_bad_record_fraction', -0.1),
                                          ('max_consecutive_bad_records', -1)])
def test_budget_fields_are_validated(tiny_va_config, field, value):
  tiny_va_config.data[field] = value
  with pytest.raises(config_base.ConfigError, match=f'config.data.{field}'):
    config_base.validate(tiny_va_config, 1, 1)


def test_header_crc_matches_tensorflow(tmp_path):
  """Our framing check agrees with TensorFlow's writer (masked CRC32C)."""
  [path] = _shards(tmp_path, n=2, num_shards=1)
  with open(path, 'rb') as f:
    header = f.read(12)
  assert struct.unpack('<I', header[8:])[0] == tfrecord.masked_crc(header[:8])
  rd = tfrecord.RandomAccessReader([path])
  index = tfrecord.index_file(path)
  assert rd.read(0, int(index.offsets[1]), int(index.lengths[1])) == _record(1)


def test_shard_cut_short_after_mapping_is_a_record_error(tmp_path):
  """The training reader views records through a memory map; a shard cut shorter after it
  was mapped gives the reader's error for the lost record, not a crash (SIGBUS)."""
  [path] = _shards(tmp_path, n=3, num_shards=1)
  index = tfrecord.index_file(path)
  rd = tfrecord.RandomAccessReader([path])
  first = rd.view(0, int(index.offsets[0]), int(index.lengths[0]), 0)
  assert isinstance(first, memoryview) and bytes(first) == _record(0)
  with open(path, 'r+b') as f:
    f.truncate(int(index.offsets[2]) + 20)
  with pytest.raises(tfrecord.RecordError, match='record 2 .*ends inside the record'):
    rd.view(0, int(index.offsets[2]), int(index.lengths[2]), 2)
  assert bytes(rd.view(0, int(index.offsets[1]), int(index.lengths[1]), 1)) == _record(1)


def test_remote_paths_are_listed_indexed_and_read_through_gfile(tmp_path):
  """gs://-style URLs go through tf.io.gfile (exercised with TF's in-memory ram:// filesystem)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  root = f'ram://{tmp_path.name}'
  tf.io.gfile.makedirs(root)
  for i in range(2):
    with tf.io.TFRecordWriter(f'{root}/{dmvr_format.shard_name("train", i, 2)}') as w:
      for k in range(3):
        w.write(f'record {i} {k}'.encode())
  with tf.io.gfile.GFile(f'{root}/train_summary.json', 'w') as f:
    f.write('{}')
  files = reader.list_shards(root)
  assert files == [f'{root}/train-00000-of-00002', f'{root}/train-00001-of-00002']
  assert reader.list_shards(f'{root}/train*') == files
  index = reader.index_shards(files)
  rd = index.reader()
  assert [index.read(rd, i) for i in range(len(index))] == [
      f'record {i} {k}'.encode() for i in range(2) for k in range(3)]


def test_training_set_smaller_than_a_batch_warns(tmp_path, tiny_va_config, caplog):
  """Before: 25 clips with batch 32 trained without a word. Now a warning names the counts."""
  _shards(tmp_path / 'few', n=3, num_shards=1)
  _shards(tmp_path / 'enough', n=8, num_shards=1)
  cfg = _config(tiny_va_config, batch=8)
  with caplog.at_level(logging.WARNING):
    pipeline.make_train_dataset(cfg, str(tmp_path / 'enough'), num_local_devices=1)
    assert not [r for r in caplog.records if 'fewer than one batch' in r.getMessage()]
    pipeline.make_train_dataset(cfg, str(tmp_path / 'few'), num_local_devices=1)
  [said] = [r.getMessage() for r in caplog.records if 'fewer than one batch' in r.getMessage()]
  assert said.startswith('the training set has 3 clip(s) (1 shard(s), first ')
  assert 'fewer than one batch of 8 per host' in said and 'config.training.batch_size' in said
