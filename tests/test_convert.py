"""Tests for the video-file -> DMVR shard converter, on tiny synthetic videos."""
import glob
import json
import os

import av
import numpy as np
import pytest
import tensorflow as tf

from brave_jax.data import clip_cutting
from brave_jax.data import convert
from brave_jax.data import convert_file
from brave_jax.data import convert_summary
from brave_jax.data import dmvr_format
from brave_jax.data import listing
from brave_jax.data import media

import media_writers

H, W = 48, 64
RATE = 48000
SINE_AMPLITUDE = 0.5


def _frames(num: int, step: int = 4) -> np.ndarray:
  """Solid frames whose red level encodes the frame index (index * step)."""
  frames_TxHxWx3 = np.zeros([num, H, W, 3], np.uint8)
  frames_TxHxWx3[..., 0] = (np.arange(num) * step % 256)[:, None, None].astype(np.uint8)
  frames_TxHxWx3[..., 1] = 128
  return frames_TxHxWx3


def _sine(seconds: float, freq: float = 440.0) -> np.ndarray:
  t = np.arange(int(round(seconds * RATE))) / RATE
  return (SINE_AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _read_shards(pattern: str) -> list[dict]:
  """Parses every example of the matching shards into numpy (frames decoded)."""
  out = []
  for path in sorted(glob.glob(pattern)):
    for record in tf.data.TFRecordDataset(path):
      ctx, seq = tf.io.parse_single_sequence_example(
          record,
          context_features={
              dmvr_format.LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64),
              dmvr_format.LABEL_TEXT_KEY: tf.io.VarLenFeature(tf.string),
              dmvr_format.VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string),
          },
          sequence_features={
              dmvr_format.IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string),
              dmvr_format.WAVEFORM_KEY: tf.io.VarLenFeature(tf.float32),
          })
      jpegs = seq[dmvr_format.IMAGE_KEY].numpy()
      waveform = tf.sparse.to_dense(seq[dmvr_format.WAVEFORM_KEY]).numpy().reshape(-1)
      out.append({
          'frames': np.stack([tf.io.decode_jpeg(j).numpy() for j in jpegs]),
          'waveform': waveform if waveform.size else None,
          'label': ctx[dmvr_format.LABEL_INDEX_KEY].values.numpy().tolist(),
          'text': [t.decode() for t in ctx[dmvr_format.LABEL_TEXT_KEY].values.numpy()],
          'id': ctx[dmvr_format.VIDEO_ID_KEY].numpy().decode(),
      })
  return out


def test_mp4_h264_aac_round_trip_matches_source(tmp_path):
  """Acceptance: frame count at 25 fps within one frame, audio length and RMS within 1%."""
  seconds = 2.0
  src = tmp_path / 'videos' / 'sines' / 'clip.mp4'
  src.parent.mkdir(parents=True)
  frames = _frames(50)
  sine = _sine(seconds)
  media_writers.write_test_video(str(src), frames, fps=25, codec='libx264', audio=sine,
                           audio_codec='aac')
  out = tmp_path / 'shards'
  rc = convert.main([f'--videos={tmp_path / "videos"}', f'--output_dir={out}', '--prefix=train',
                     '--num_shards=2', '--short_side=32', '--no_progress'])
  assert rc == 0
  assert sorted(os.listdir(out)) == ['train-00000-of-00002', 'train-00001-of-00002',
                                     'train_summary.json']
  [ex] = _read_shards(str(out / 'train-*'))
  assert abs(len(ex['frames']) - seconds * 25) <= 1
  assert ex['frames'].shape[1:] == (32, 43, 3)
  # Frame k shows source frame k (red level 4k), up to JPEG/H.264 error.
  red = ex['frames'][..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(red, np.arange(len(red)) * 4, atol=4)
  assert abs(ex['waveform'].size - seconds * RATE) <= 0.005 * RATE
  assert abs(_rms(ex['waveform']) / _rms(sine) - 1) < 0.01
  assert ex['label'] == [0] and ex['text'] == ['sines'] and ex['id'] == 'sines/clip.mp4'
  summary = json.loads((out / 'train_summary.json').read_text())
  assert summary['converted'] == 1 and summary['no_audio'] == 0 and not summary['skipped']
  assert summary['total_seconds'] == pytest.approx(2.0)


def test_30fps_source_resamples_to_25fps_by_timestamp(tmp_path):
  path = media_writers.write_test_video(str(tmp_path / 'v30.mp4'), _frames(60), fps=30)
  video = media.decode_video(path, fps=25, short_side=0)
  assert len(video.frames) == 50 and video.duration_s == pytest.approx(2.0)
  assert video.source_fps == pytest.approx(30) and video.num_decoded == 60
  # Output time k/25 shows the latest source frame with pts <= k/25: index floor(k*30/25).
  want = np.floor(np.arange(50) * 30 / 25 + 1e-9) * 4
  np.testing.assert_allclose(video.frames_TxHxWx3[..., 0].mean(axis=(1, 2)), want, atol=3)


def test_variable_frame_rate_picks_latest_frame_before_each_output_time(tmp_path):
  timestamps = [0.0, 0.1, 0.13, 0.3, 0.31, 0.32, 0.6, 0.7]
  path = media_writers.write_test_video(str(tmp_path / 'vfr.mkv'), _frames(8, step=30), fps=25,
                                  timestamps_s=timestamps)
  video = media.decode_video(path, fps=25, short_side=0)
  # The last frame lasts its recorded duration (or the previous gap): the video ends in
  # (0.7, 0.8] s, and every output time k/25 before the end gets a frame.
  assert 0.7 < video.duration_s <= 0.8
  num = len(video.frames)
  assert num == int(np.ceil(video.duration_s * 25 - 1e-6))
  want = [np.searchsorted(timestamps, k / 25 + 1e-9, side='right') - 1 for k in range(num)]
  got = video.frames_TxHxWx3[..., 0].mean(axis=(1, 2)) / 30
  np.testing.assert_allclose(got, want, atol=0.2)


def test_huge_timestamp_gap_is_closed_not_filled(tmp_path):
  path = media_writers.write_test_video(str(tmp_path / 'gap.mkv'), _frames(4), fps=25,
                                  timestamps_s=[0.0, 0.04, 100.0, 100.04])
  video = media.decode_video(path, fps=25, short_side=0)
  assert len(video.frames) == 4
  assert any('gap.mkv' in w and 'jump' in w for w in video.warnings)


@pytest.mark.parametrize('name,codec', [
    ('h264.mp4', 'libx264'),
    ('mpeg4.avi', 'mpeg4'),
    ('vp9.mkv', 'libvpx-vp9'),
    ('vp8.webm', 'libvpx'),
    ('mpeg1.mpg', 'mpeg1video'),
    ('mpeg2.mpg', 'mpeg2video'),
    ('h264.mov', 'libx264'),
    ('hevc.mp4', 'libx265'),
])
def test_containers_and_codecs_round_trip(tmp_path, name, codec):
  """Each container/codec (with its usual audio codec) gives 25 frames and the source audio."""
  try:
    av.codec.Codec(codec, 'w')
  except av.FFmpegError:
    pytest.skip(f'encoder {codec} not in this FFmpeg build')
  sine = _sine(1.0)
  path = media_writers.write_test_video(str(tmp_path / name), _frames(25, step=8), fps=25,
                                  codec=codec, audio=sine)
  result = convert_file.convert_one(path, label_index=3, label_text='x', short_side=0)
  assert result.error is None, result.error
  assert result.num_frames == 25 and result.has_audio
  [ex] = _read_and_write(tmp_path, result.serialized)
  red = ex['frames'][..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(red, np.arange(25) * 8, atol=6)
  assert abs(ex['waveform'].size - RATE) <= 0.005 * RATE
  assert abs(_rms(ex['waveform']) / _rms(sine) - 1) < 0.01
  assert ex['label'] == [3]


def _read_and_write(tmp_path, serialized: bytes) -> list[dict]:
  dmvr_format.write_shards([serialized], str(tmp_path / 'out'), 'one', 1)
  return _read_shards(str(tmp_path / 'out' / 'one-*'))


def test_no_audio_unopenable_and_truncated_files_in_one_run(tmp_path):
  """Bad files are reported by name and skipped; the good ones still convert."""
  root = tmp_path / 'videos'
  (root / 'cls').mkdir(parents=True)
  media_writers.write_test_video(str(root / 'cls' / 'silent.mp4'), _frames(10), fps=25)
  (root / 'cls' / 'garbage.mp4').write_bytes(b'this is not a video' * 100)
  full = media_writers.write_test_video(str(tmp_path / 'full.mkv'), _frames(50), fps=25,
                                  audio=_sine(2.0))
  data = open(full, 'rb').read()
  (root / 'cls' / 'truncated.mkv').write_bytes(data[:int(len(data) * 0.6)])

  summary = convert.convert(str(root), str(tmp_path / 'out'), prefix='test', num_shards=1,
                            progress=False, short_side=0)
  assert summary.converted == 2 and summary.videos_listed == 3
  assert summary.no_audio == 1 and summary.no_audio_files == ['cls/silent.mp4']
  [skipped] = summary.skipped
  assert skipped['video'] == 'cls/garbage.mp4'
  assert 'garbage.mp4' in skipped['reason'] and 'cannot open' in skipped['reason']
  assert any('truncated.mkv' in w and 'did not decode' in w for w in summary.warnings)

  by_id = {ex['id']: ex for ex in _read_shards(str(tmp_path / 'out' / 'test-*'))}
  assert by_id['cls/silent.mp4']['waveform'] is None
  assert len(by_id['cls/silent.mp4']['frames']) == 10
  truncated = by_id['cls/truncated.mkv']
  assert 20 <= len(truncated['frames']) < 50  # Kept what decoded.
  red = truncated['frames'][..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(red, np.arange(len(red)) * 4, atol=4)
  saved = json.loads((tmp_path / 'out' / 'test_summary.json').read_text())
  assert saved['skipped'] == summary.skipped


def test_labels_are_indices_into_sorted_class_names(tmp_path):
  """Train and test written separately agree; --classes_file pins the list and its order."""
  for split, classes in [('train', ['zebra', 'apple', 'mango']), ('test', ['mango', 'zebra'])]:
    for cls in classes:
      (tmp_path / split / cls).mkdir(parents=True)
      media_writers.write_test_video(str(tmp_path / split / cls / f'{cls}.avi'), _frames(3),
                               fps=25, codec='mpeg4')
  def labels(split, **kw):
    convert.convert(str(tmp_path / split), str(tmp_path / 'out'), prefix=split,
                    progress=False, short_side=0, **kw)
    return {ex['text'][0]: ex['label'][0]
            for ex in _read_shards(str(tmp_path / 'out' / f'{split}-*'))}
  assert labels('train') == {'apple': 0, 'mango': 1, 'zebra': 2}
  classes_file = tmp_path / 'classInd.txt'
  classes_file.write_text('1 zebra\n2 apple\n3 mango\n')
  assert labels('test', classes_file=str(classes_file)) == {'zebra': 0, 'mango': 2}
  with pytest.raises(ValueError, match='not in the class list'):
    classes_file.write_text('apple\n')
    labels('test', classes_file=str(classes_file))


def test_csv_input_with_relative_paths_and_parallel_workers(tmp_path):
  (tmp_path / 'v').mkdir()
  for i in range(3):
    media_writers.write_test_video(str(tmp_path / 'v' / f'{i}.mp4'), _frames(4), fps=25)
  csv_path = tmp_path / 'list.csv'
  csv_path.write_text('path,label\nv/0.mp4,b\nv/1.mp4,a\nv/2.mp4\n')
  summary = convert.convert(str(csv_path), str(tmp_path / 'out'), num_shards=2, workers=2,
                            progress=False, short_side=0)
  assert summary.converted == 3 and summary.classes == ['a', 'b']
  examples = _read_shards(str(tmp_path / 'out' / 'train-*'))
  assert {ex['id']: ex['label'] for ex in examples} == {'v/0.mp4': [1], 'v/1.mp4': [0],
                                                        'v/2.mp4': []}


def test_ucf_and_hmdb_split_files_select_videos(tmp_path):
  ucf_videos = [(f'/d/{c}/v_{c}_g0{i}_c01.avi', f'{c}/v_{c}_g0{i}_c01.avi', c)
                for c in ('ApplyEyeMakeup', 'YoYo') for i in (1, 8)]
  (tmp_path / 'trainlist01.txt').write_text(
      'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g08_c01.avi 101\n')
  (tmp_path / 'testlist01.txt').write_text(
      'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nYoYo/v_YoYo_g01_c01.avi\nYoYo/v_missing.avi\n')
  kept, missing = listing.apply_split(
      ucf_videos, listing.read_split_files([str(tmp_path / 'trainlist01.txt')], None))
  assert [v[1] for v in kept] == ['ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
                                  'YoYo/v_YoYo_g08_c01.avi'] and not missing
  kept, missing = listing.apply_split(
      ucf_videos, listing.read_split_files([str(tmp_path / 'testlist01.txt')], None))
  assert [v[2] for v in kept] == ['ApplyEyeMakeup', 'YoYo'] and missing == ['YoYo/v_missing.avi']

  hmdb_videos = [(f'/h/brush_hair/{n}.avi', f'brush_hair/{n}.avi', 'brush_hair')
                 for n in ('a', 'b', 'c')]
  (tmp_path / 'brush_hair_test_split1.txt').write_text('a.avi 1\nb.avi 2\nc.avi 0\n')
  pattern = str(tmp_path / '*_test_split1.txt')
  with pytest.raises(ValueError, match='hmdb_split'):
    listing.read_split_files([pattern], None)
  for split, want in [('train', 'brush_hair/a.avi'), ('test', 'brush_hair/b.avi')]:
    kept, _ = listing.apply_split(hmdb_videos, listing.read_split_files([pattern], split))
    assert [(v[1], v[2]) for v in kept] == [(want, 'brush_hair')]


def test_align_audio_shifts_to_first_frame_and_reports_short_audio():
  audio = media.DecodedAudio(np.ones([1500], np.float32), rate=1000, start_s=0.5)
  waveform, short, notes = media.align_audio(audio, video_start_s=0.0, video_duration_s=2.0)
  assert waveform.size == 2000 and not waveform[:500].any() and not short  # Padded at the start.
  audio = media.DecodedAudio(np.arange(3000, dtype=np.float32), rate=1000, start_s=0.0)
  waveform, short, _ = media.align_audio(audio, video_start_s=0.25, video_duration_s=2.0)
  assert waveform.size == 2000 and waveform[0] == 250 and not short  # Cut at both ends.
  audio = media.DecodedAudio(np.ones([500], np.float32), rate=1000, start_s=0.0)
  _, short, notes = media.align_audio(audio, 0.0, 2.0, path='x.mp4')
  assert short and 'x.mp4' in notes[0]


def test_max_seconds_bounds_the_clip(tmp_path):
  path = media_writers.write_test_video(str(tmp_path / 'long.mp4'), _frames(50), fps=25,
                                  audio=_sine(2.0))
  result = convert_file.convert_one(path, short_side=0, max_seconds=1.0)
  assert result.num_frames == 25 and result.audio_s == pytest.approx(1.0)
  assert not result.warnings


# ----------------------------------------------------------------------------- clips of long videos


def _read_clips(pattern: str) -> list[dict]:
  """Every record of the shards with its clip context, frames' mean level and waveform."""
  out = []
  for path in sorted(glob.glob(pattern)):
    for record in tf.data.TFRecordDataset(path):
      ctx, seq = tf.io.parse_single_sequence_example(
          record,
          context_features={
              dmvr_format.VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string),
              dmvr_format.CLIP_SOURCE_KEY: tf.io.FixedLenFeature([], tf.string),
              dmvr_format.CLIP_START_KEY: tf.io.FixedLenFeature([], tf.float32),
          },
          sequence_features={
              dmvr_format.IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string),
              dmvr_format.WAVEFORM_KEY: tf.io.VarLenFeature(tf.float32),
          })
      levels = [tf.io.decode_jpeg(j).numpy().mean() for j in seq[dmvr_format.IMAGE_KEY].numpy()]
      out.append({
          'id': ctx[dmvr_format.VIDEO_ID_KEY].numpy().decode(),
          'source': ctx[dmvr_format.CLIP_SOURCE_KEY].numpy().decode(),
          'start': float(ctx[dmvr_format.CLIP_START_KEY].numpy()),
          'levels': np.asarray(levels),
          'waveform': tf.sparse.to_dense(seq[dmvr_format.WAVEFORM_KEY]).numpy().reshape(-1),
      })
  return sorted(out, key=lambda r: (r['source'], r['start']))


def _onsets(x: np.ndarray, threshold: float = 0.3, min_gap: int = 480) -> np.ndarray:
  """Sample indices where |x| first rises above threshold (rises closer than min_gap merged)."""
  loud = np.abs(x) > threshold
  rises = np.nonzero(loud & ~np.concatenate([[False], loud[:-1]]))[0]
  return np.asarray([r for i, r in enumerate(rises) if i == 0 or r - rises[i - 1] > min_gap])


@pytest.mark.parametrize('source_fps', [25, 24])
def test_clip_cutter_click_track_lands_on_the_flash_frames(tmp_path, source_fps):
  """A 6 s H.264/AAC video flashes white at 6 known frames while a 2 ms click sounds; cut into
  2 s clips every 1.5 s, every record holds exactly the clicks of its time range, each on the
  first output frame showing its flash: within 0.01 frame at 25 fps (no resampling), and at
  most one output frame (40 ms) after the click from a 24 fps source (resampled to 25 fps by
  timestamp, so the flash appears at the first output frame at or after its time)."""
  num = 6 * source_fps
  flashes = [13, 45, 59, 78, 111, 130]
  frames = np.full([num, H, W, 3], 16, np.uint8)
  frames[flashes] = 240
  audio = np.zeros(int(num / source_fps * RATE), np.float32)
  click = 0.8 * np.sin(2 * np.pi * 3000 * np.arange(96) / RATE).astype(np.float32)
  for k in flashes:
    audio[round(k / source_fps * RATE):][:96] = click
  src = tmp_path / 'videos' / 'long.mp4'
  src.parent.mkdir()
  media_writers.write_test_video(str(src), frames, fps=source_fps, audio=audio, audio_codec='aac')
  out = tmp_path / 'clips'
  rc = convert.main([f'--videos={src.parent}', f'--output_dir={out}', '--short_side=0',
                     '--clip_seconds=2', '--clip_stride=1.5', '--no_progress'])
  assert rc == 0
  records = _read_clips(str(out / 'train-*'))
  # 150 frames at 25 fps: clips of 50 frames start every round(37.5) = 38 frames: 0, 38, 76.
  assert [r['start'] for r in records] == pytest.approx([0.0, 1.52, 3.04])
  assert [r['id'] for r in records] == ['long.mp4#t=0.000', 'long.mp4#t=1.520', 'long.mp4#t=3.040']
  assert {r['source'] for r in records} == {'long.mp4'}
  summary = json.loads((out / 'train_summary.json').read_text())
  assert summary['clips_per_source'] == {'long.mp4': 3} and summary['records'] == 3
  assert summary['converted'] == 1 and summary['clip_seconds'] == 2.0
  for r in records:
    assert len(r['levels']) == 50 and r['waveform'].size == 2 * RATE
    flash_frames = np.nonzero(r['levels'] > 128)[0]
    first_flash = flash_frames[np.concatenate([[True], np.diff(flash_frames) > 1])]
    clicks = _onsets(r['waveform']) / RATE * 25  # In output frames of this record.
    in_range = [k / source_fps * 25 - r['start'] * 25 for k in flashes]
    want = [t for t in in_range if 0 <= t <= 49]
    assert len(clicks) == len(first_flash) == len(want), (r['id'], clicks, first_flash, want)
    np.testing.assert_allclose(clicks, want, atol=0.01)  # Audio at the click's own time.
    lag = first_flash - clicks
    if source_fps == 25:
      np.testing.assert_allclose(lag, 0, atol=0.01)
    else:
      assert np.all((lag > -0.01) & (lag < 1.0)), (r['id'], lag)


def test_clip_frame_ranges_and_flag_errors(tmp_path):
  assert clip_cutting.clip_frame_ranges(100, 25, 2.0) == [(0, 50), (50, 100)]
  assert clip_cutting.clip_frame_ranges(99, 25, 2.0) == [(0, 50)]  # The short tail is dropped.
  assert clip_cutting.clip_frame_ranges(30, 25, 2.0) == [(0, 30)]  # Shorter than a clip: whole.
  assert clip_cutting.clip_frame_ranges(100, 25, 2.0, 1.0) == [(0, 50), (25, 75), (50, 100)]
  with pytest.raises(ValueError, match='clip_seconds'):
    clip_cutting.clip_frame_ranges(100, 25, 0.01)
  (tmp_path / 'v').mkdir()
  media_writers.write_test_video(str(tmp_path / 'v' / 'a.mp4'), _frames(10))
  videos, out = str(tmp_path / 'v'), str(tmp_path / 'o')
  with pytest.raises(ValueError, match='needs --clip_seconds'):
    convert.convert(videos, out, progress=False, clip_stride=1.0)
  with pytest.raises(ValueError, match='audio_only'):
    convert.convert(videos, out, progress=False, clip_seconds=1.0, audio_only=True)
  with pytest.raises(ValueError, match='at least one frame'):
    convert.convert(videos, out, progress=False, clip_seconds=0.001)
  assert not (tmp_path / 'o').exists()


def test_clips_carry_their_own_flow_frames(tmp_path):
  path = media_writers.write_test_video(str(tmp_path / 'f.mp4'), _frames(50))
  result = convert_file.convert_one(path, short_side=0, flow_method='farneback', clip_seconds=1.0)
  assert result.error is None and result.serialized is None and len(result.clips) == 2
  for serialized in result.clips:
    seq = tf.train.SequenceExample.FromString(serialized)
    lists = seq.feature_lists.feature_list
    assert len(lists[dmvr_format.IMAGE_KEY].feature) == len(lists[dmvr_format.FLOW_KEY].feature) == 25


# --- Real media as users bring it (issue 21) -------------------------------------------------


@pytest.mark.parametrize('name,codec,audio_codec,rate', [
    ('a.webm', 'libvpx-vp9', 'libopus', RATE), ('a.mkv', 'libx264', 'aac', RATE),
    ('a.flv', 'flv', 'libmp3lame', 44100)])
def test_audio_outlasting_video_is_not_called_truncated(tmp_path, name, codec, audio_codec, rate):
  """Before: 'decoded 2.00s of video but the file declares 3.0s ... (truncated or corrupt
  file?)' on intact WebM/MKV/FLV files whose audio runs on: the container's length was read
  as the video's. Now the video stream's own length decides, and the whole video is kept."""
  src = tmp_path / 'v' / name
  src.parent.mkdir()
  t = np.arange(int(3.0 * rate)) / rate
  media_writers.write_test_video(str(src), _frames(50), fps=25, codec=codec, audio_codec=audio_codec,
                           audio=(0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
                           audio_rate=rate)
  summary = convert.convert(str(tmp_path / 'v'), str(tmp_path / 'out'), num_shards=1,
                            progress=False, short_side=32)
  assert summary.converted == 1, summary.text()
  assert not [w for w in summary.warnings if 'truncated' in w], summary.warnings
  [ex] = _read_shards(str(tmp_path / 'out' / 'train-*'))
  assert len(ex['frames']) == 50 and len(ex['waveform']) == 2 * RATE  # Audio cut at the video.


def test_truncation_note_compares_the_container_length_with_the_audio():
  """A video stream without a length of its own: only a file whose audio stops short of the
  container's length too is called cut short (negative control for the test above)."""
  video = media.DecodedVideo(frames=[0] * 50, fps=25, duration_s=2.0, start_s=0.0,
                               source_fps=25, num_decoded=50, container_duration_s=3.29)
  ran_on = media.DecodedAudio(np.zeros(int(3.29 * RATE), np.float32), RATE, 0.0)
  cut = media.DecodedAudio(np.zeros(2 * RATE, np.float32), RATE, 0.0)
  assert media.truncation_note(video, ran_on, 'x.flv') == []
  [note] = media.truncation_note(video, cut, 'x.flv')
  assert 'x.flv: decoded 2.00s of video but the file declares 3.29s' in note
  assert 'truncated' in media.truncation_note(video, None, 'x.flv')[0]


@pytest.mark.parametrize('policy', ['drop', 'pad'])
def test_clips_whose_audio_ends_early_are_dropped_or_padded(tmp_path, policy):
  """Before: a video whose audio ends 2 s before it gave last clips with little or no audio
  (training then counted them against its bad-data budget). Now they are dropped (default)
  or padded with silence (--short_audio_clips=pad), and the summary says how many."""
  src = tmp_path / 'v' / 'tail.mp4'
  src.parent.mkdir()
  media_writers.write_test_video(str(src), _frames(125), fps=25, audio=_sine(3.0))  # 5 s, audio 3 s.
  out = tmp_path / 'out'
  rc = convert.main([f'--videos={src.parent}', f'--output_dir={out}', '--clip_seconds=1',
                     '--short_side=32', '--no_progress', f'--short_audio_clips={policy}'])
  assert rc == 0
  clips = _read_clips(str(out / 'train-*'))
  saved = json.loads((out / 'train_summary.json').read_text())
  if policy == 'drop':
    assert [c['start'] for c in clips] == [0.0, 1.0, 2.0]
    assert saved['clips_dropped_short_audio'] == 2 and saved['clips_padded_short_audio'] == 0
  else:
    assert [c['start'] for c in clips] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert saved['clips_padded_short_audio'] == 2 and saved['clips_dropped_short_audio'] == 0
    assert np.abs(clips[4]['waveform']).max() == 0.0  # Silence where the audio had ended.
  assert all(len(c['waveform']) == RATE for c in clips)  # Every kept clip: a full second.
  np.testing.assert_allclose(_rms(clips[1]['waveform']), SINE_AMPLITUDE / np.sqrt(2), rtol=0.05)
  assert saved['records'] == len(clips)


def test_clips_all_without_audio_are_skipped_by_name(tmp_path):
  """A video whose audio ends before its first clip does: no record, a reason that names the
  option keeping them, and the other video of the run still converts."""
  root = tmp_path / 'v'
  root.mkdir()
  media_writers.write_test_video(str(root / 'early.mp4'), _frames(50), fps=25, audio=_sine(0.3))
  media_writers.write_test_video(str(root / 'fine.mp4'), _frames(50), fps=25, audio=_sine(2.0))
  summary = convert.convert(str(root), str(tmp_path / 'out'), clip_seconds=1.0, progress=False,
                            short_side=32)
  assert summary.converted == 1 and summary.records == 2
  [skipped] = summary.skipped
  assert skipped['video'] == 'early.mp4' and skipped['category'] == 'audio ends early'
  assert '--short_audio_clips=pad keeps them' in skipped['reason']
  assert summary.skipped_by_reason == {'audio ends early': 1}
  assert 'skipped 1 file(s) (named above): audio ends early 1' in summary.text()


def test_files_with_unlisted_extensions_are_named_with_the_flag(tmp_path, capsys):
  """Before: a folder of 5 files with 3 of unlisted extensions said 'converted 2/2 videos'.
  Now each left-out file is named with its reason and the flag that adds it."""
  root = tmp_path / 'v'
  (root / 'cls').mkdir(parents=True)
  media_writers.write_test_video(str(root / 'cls' / 'a.mp4'), _frames(25), fps=25)
  media_writers.write_test_video(str(root / 'cls' / 'b.m1v'), _frames(25), fps=25, codec='mpeg1video')
  (root / 'cls' / 'c.rm').write_bytes(b'.RMF' + bytes(60))
  (root / 'cls' / 'd.swf').write_bytes(b'FWS' + bytes(60))
  media_writers.write_test_audio(str(root / 'cls' / 'e.wav'), _sine(0.2))
  (root / '.DS_Store').write_bytes(b'\0' * 8)  # Hidden: ignored without a word.
  out = tmp_path / 'out'
  assert convert.main([f'--videos={root}', f'--output_dir={out}', '--short_side=32',
                       '--no_progress']) == 0
  printed = capsys.readouterr().out
  last = printed.strip().splitlines()[-2]  # Before 'summary: <path>'.
  assert last.startswith('[train] converted 1/1 videos') and '4 other file(s) left out' in last
  assert ('left out 3 file(s) whose extension is not in the list: cls/b.m1v, cls/c.rm, cls/d.swf;'
          ' --extra_extensions=.m1v,.rm,.swf adds them') in printed
  assert 'cls/e.wav (.wav is an audio extension; --audio_only converts audio files)' in printed
  saved = json.loads((out / 'train_summary.json').read_text())
  assert sorted(f['file'] for f in saved['left_out']) == ['cls/b.m1v', 'cls/c.rm', 'cls/d.swf',
                                                          'cls/e.wav']
  # The flag it names converts the file (and the others are still left out, by name).
  summary = convert.convert(str(root), str(tmp_path / 'out2'), progress=False, short_side=32,
                            extra_extensions='.m1v')
  assert summary.converted == 2 and len(summary.left_out) == 3


def test_slightly_clipped_audio_is_counted_loud_clipping_named(tmp_path):
  """Before: every ordinary lossy file peaking a little over 1.0 warned 'audio peaked at
  1.0xx after downmix; clipped' (369 of 1,006). Now they are one count in the summary; only
  peaks above CLIP_WARN_PEAK get a line naming the file."""
  root = tmp_path / 'a'
  root.mkdir()
  for name, peak in (('slight1.wav', 1.02), ('slight2.wav', 1.05), ('loud.wav', 1.6),
                     ('fine.wav', 0.5)):
    media_writers.write_test_audio(str(root / name), np.full(4800, peak, np.float32) *
                             np.sign(np.sin(np.arange(4800) / 7.0)).astype(np.float32),
                             codec='pcm_f32le')
  summary = convert.convert(str(root), str(tmp_path / 'out'), audio_only=True, progress=False)
  assert summary.converted == 4
  assert summary.clipped_audio == 3 and summary.clipped_audio_max_peak == pytest.approx(1.6)
  assert [w for w in summary.warnings if 'peaked' in w] == [
      f'{root / "loud.wav"}: audio peaked at 1.600 after downmix; clipped to [-1, 1]']
  assert 'audio clipped (peak above 1.0 after downmix, clipped to [-1, 1]): 3 file(s)' in \
      summary.text()


def test_text_file_named_wav_is_called_not_an_audio_file(tmp_path):
  """Before, under --audio_only: 'this is a text file, not a video ... download the real
  video'. Now the words are about audio; the good file beside it still converts."""
  root = tmp_path / 'a'
  root.mkdir()
  (root / 'page.wav').write_text('<!DOCTYPE html><html>404 Not Found</html>\n')
  media_writers.write_test_audio(str(root / 'good.wav'), _sine(0.3))
  summary = convert.convert(str(root), str(tmp_path / 'out'), audio_only=True, progress=False)
  assert summary.converted == 1
  [skipped] = summary.skipped
  assert 'this is a text file, not an audio file' in skipped['reason']
  assert 'download the real audio file' in skipped['reason'] and 'video' not in skipped['reason']
  assert skipped['category'] == 'text file, not media'
  [record] = tf.data.TFRecordDataset(summary.shards)
  ex = tf.train.SequenceExample.FromString(record.numpy())
  assert ex.context.feature[dmvr_format.VIDEO_ID_KEY].bytes_list.value[0] == b'good.wav'
  assert len(ex.feature_lists.feature_list[dmvr_format.WAVEFORM_KEY].feature[0]
             .float_list.value) == int(0.3 * RATE)  # Written whole.


def _held_video(path: str) -> str:
  """4 s at 25 fps whose frames 1.0-3.0 s never decode (a 2 s timestamp gap): the decoder holds
  the last frame over the gap, as with Theora packets that fail."""
  times = [i / 25 for i in range(25)] + [3.0 + i / 25 for i in range(25)]
  return media_writers.write_test_video(path, _frames(50), fps=25, timestamps_s=times, audio=_sine(4.0))


def test_clips_of_held_frames_are_counted_and_dropped_over_the_threshold(tmp_path):
  """Before: clips made of one frame repeated over a stretch that did not decode were written
  as if fine. Now they are counted in the summary, and --max_held_fraction leaves them out."""
  root = tmp_path / 'v'
  root.mkdir()
  _held_video(str(root / 'held.mp4'))
  video = media.decode_video(str(root / 'held.mp4'), 25, 32)
  assert video.held_fraction(0, 25) == 0 and video.held_fraction(25, 75) > 0.9
  assert video.held_fraction(75, 100) == 0
  kept = convert.convert(str(root), str(tmp_path / 'kept'), clip_seconds=1.0, progress=False,
                         short_side=32)
  assert kept.records == 4 and kept.mostly_held_records == 2
  assert kept.mostly_held_sources == ['held.mp4']
  assert 'records made mostly (>50%) of held frames: 2 (from held.mp4); kept' in kept.text()
  dropped = convert.convert(str(root), str(tmp_path / 'dropped'), clip_seconds=1.0,
                            progress=False, short_side=32, max_held_fraction=0.5)
  assert dropped.records == 2 and dropped.dropped_held_records == 2
  assert [c['start'] for c in _read_clips(str(tmp_path / 'dropped' / 'train-*'))] == [0.0, 3.0]
  saved = json.loads((tmp_path / 'dropped' / 'train_summary.json').read_text())
  assert saved['dropped_held_records'] == 2 and saved['max_held_fraction'] == 0.5
  # A whole-video record over the threshold is skipped with that reason.
  whole = convert.convert(str(root), str(tmp_path / 'whole'), progress=False, short_side=32,
                          max_held_fraction=0.25)
  assert not whole.converted and whole.skipped_by_reason == {'held frames': 1}


def test_summary_counts_short_records_that_the_pipelines_loop():
  """Videos shorter than one clip are kept whole; the summary counts them (they get looped)."""
  summary = convert_summary.Summary(prefix='p', clip_seconds=2.0)
  summary.add(convert_file.Result('short.mp4', None, clips=[b'x'], record_seconds=[0.8]))
  summary.add(convert_file.Result('long.mp4', None, clips=[b'x', b'y'], record_seconds=[2.0, 2.0]))
  assert summary.looped_short_records == 1 and summary.shortest_record_seconds == 0.8
  assert summary.records == 3 and summary.converted == 2
  text = summary.text()
  assert 'records shorter than one 2s clip (whole short videos, looped by the pipelines to fill ' \
         'their windows): 1' in text
  assert text.splitlines()[-1].startswith('[p] converted 2/0 videos into 3 record(s)')
