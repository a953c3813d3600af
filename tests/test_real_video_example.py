"""examples/real_video.py without the network: pinned-hash fetching from local sdists, the time
split, and cutting generated videos into the split's shards."""
import hashlib
import importlib.util
import io
import os
import sys
import tarfile
import zipfile

import numpy as np
import pytest

from brave_jax.data import convert

import conftest
import media_writers


def _load_example():
  path = conftest.REPO_ROOT / 'examples' / 'real_video.py'
  spec = importlib.util.spec_from_file_location('real_video_example', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules['real_video_example'] = module  # dataclasses resolve their module by name.
  spec.loader.exec_module(module)
  return module


example = _load_example()


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _fake_sdists(download_dir):
  """Two sdists like the real ones: a media file inside a zip inside the tarball, and one plain."""
  os.makedirs(download_dir)
  video_a, video_b = b'first video bytes' * 100, b'second video bytes' * 50
  zipped = io.BytesIO()
  with zipfile.ZipFile(zipped, 'w') as zf:
    zf.writestr('bundle/resources/a.mp4', video_a)
  with tarfile.open(os.path.join(download_dir, 'pkg_a-1.0.tar.gz'), 'w:gz') as tar:
    _add(tar, 'pkg_a-1.0/docs/bundle.zip', zipped.getvalue())
  with tarfile.open(os.path.join(download_dir, 'pkg_b-2.0.tar.gz'), 'w:gz') as tar:
    _add(tar, 'pkg_b-2.0/files/b.mp4', video_b)
  sdist_sha = {n: example.sha256_of(os.path.join(download_dir, n))
               for n in ('pkg_a-1.0.tar.gz', 'pkg_b-2.0.tar.gz')}
  return (
      example.Media('a.mp4', 'pkg-a==1.0', 'pkg_a-1.0.tar.gz', sdist_sha['pkg_a-1.0.tar.gz'],
                    'pkg_a-1.0/docs/bundle.zip', 'bundle/resources/a.mp4', _sha(video_a), 'a'),
      example.Media('b.mp4', 'pkg-b==2.0', 'pkg_b-2.0.tar.gz', sdist_sha['pkg_b-2.0.tar.gz'],
                    'pkg_b-2.0/files/b.mp4', None, _sha(video_b), 'b'))


def test_fetch_extracts_pinned_media_from_local_sdists_and_refuses_changed_files(tmp_path):
  media = _fake_sdists(str(tmp_path / 'dl'))
  paths = example.fetch(str(tmp_path / 'dl'), str(tmp_path / 'media'), media)
  assert [os.path.basename(p) for p in paths] == ['a.mp4', 'b.mp4']
  assert example.sha256_of(paths[0]) == media[0].sha256
  # A changed media file is refused, naming it; so is a changed sdist (before extracting).
  with open(paths[1], 'ab') as f:
    f.write(b'x')
  with pytest.raises(example.ExampleError, match='b.mp4: sha256 .* is not the pinned'):
    example.fetch(str(tmp_path / 'dl'), str(tmp_path / 'media'), media)
  os.remove(paths[1])
  bad = example.Media(**{**media[1].__dict__, 'sdist_sha256': '0' * 64})
  with pytest.raises(example.ExampleError, match='pkg_b-2.0.tar.gz: sha256'):
    example.fetch(str(tmp_path / 'dl'), str(tmp_path / 'media'), [bad])
  assert not os.path.exists(paths[1])  # Nothing half-extracted left behind.


def _record(source, start, end):
  return example.ClipRecord(source, start, end, b'')


def test_time_split_keeps_a_gap_between_train_and_test():
  clips = [_record('long', s, s + 2.0) for s in np.arange(0, 100, 2.0)]
  clips += [_record('short', s, s + 2.0) for s in np.arange(0, 20, 2.0)]
  train, test, ranges = example.split_by_time(clips, (0.6, 0.8), gap_seconds=3.0)
  assert ranges['long']['test_seconds'] == [60.0, 80.0]
  assert [c.start_s for c in test if c.source == 'long'] == list(np.arange(60, 80, 2.0))
  # Train clips end by 57 s or start from 83 s: 56-58 and 80-82 are in neither split.
  long_train = [c.start_s for c in train if c.source == 'long']
  assert max(s for s in long_train if s < 60) == 54 and min(s for s in long_train if s > 60) == 84
  assert example.check_disjoint(train, test, 3.0) == 4.0
  assert ranges['short']['test_clips'] == 2 and ranges['short']['train_clips'] == 4  # 0-8 s.
  with pytest.raises(example.ExampleError, match='from a test clip'):
    example.check_disjoint(train + [_record('long', 58.5, 60.5)], test, 3.0)
  with pytest.raises(example.ExampleError, match='left 0 train'):
    example.split_by_time(clips, (0.0, 1.0), 3.0)


def test_cut_generated_videos_and_write_the_split(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / 'media').mkdir()
  for name, seconds in (('a.mp4', 8), ('b.mp4', 4)):
    frames = rng.integers(0, 255, size=(25 * seconds, 32, 40, 3), dtype=np.uint8)
    wave = (0.3 * np.sin(np.arange(48000 * seconds) / 20)).astype(np.float32)
    media_writers.write_test_video(str(tmp_path / 'media' / name), frames, audio=wave)
  convert.convert(str(tmp_path / 'media'), str(tmp_path / 'clips'), prefix='clips',
                  short_side=32, clip_seconds=1.0, progress=False)
  clips = example.read_clips(str(tmp_path / 'clips'))
  assert [(c.source, c.start_s) for c in clips[:2]] == [('a.mp4', 0.0), ('a.mp4', 1.0)]
  assert len(clips) == 12 and all(c.end_s - c.start_s == pytest.approx(1.0) for c in clips)
  train, test, _ = example.split_by_time(clips, (0.5, 0.75), gap_seconds=1.0)
  assert sorted((c.source, c.start_s) for c in test) == [('a.mp4', 4.0), ('a.mp4', 5.0),
                                                          ('b.mp4', 2.0)]
  assert len(train) == 4 + 1  # a: 0-2 s and 7 s; b: 0 s (1 s and 3 s are in the gaps).
  paths = example.write_split(test, str(tmp_path / 'test'), 'test')
  assert [os.path.basename(p) for p in paths] == ['test-00000-of-00001']
  assert len(example.read_clips(str(tmp_path / 'test'), prefix='test')) == 3


def test_main_runs_every_stage_on_local_media(tmp_path, monkeypatch):
  """The whole script on generated media, with pretraining and evaluation replaced by stand-ins
  that record their command lines (the real ones are tested in their own files)."""
  from brave_jax.eval import retrieval  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  (tmp_path / 'media').mkdir()
  frames = rng.integers(0, 255, size=(25 * 10, 32, 40, 3), dtype=np.uint8)
  wave = (0.3 * np.sin(np.arange(48000 * 10) / 20)).astype(np.float32)
  media_writers.write_test_video(str(tmp_path / 'media' / 'a.mp4'), frames, audio=wave)
  commands = []

  def fake_run(cmd, what):
    commands.append((what, list(cmd)))
    if what == 'retrieval':
      out = next(a.split('=', 1)[1] for a in cmd if a.startswith('--output_dir='))
      os.makedirs(out)
      metrics = {d: retrieval.rank_metrics(np.array([1, 2])) for d in retrieval.DIRECTIONS}
      record = {'headline_score': 'both', 'chance': retrieval.chance_metrics(2),
                'models': {'pretrained': {'scores': {'both': metrics}},
                           'random_init': {'scores': {'both': metrics}}}}
      with open(os.path.join(out, 'retrieval.json'), 'w') as f:
        f.write(__import__('json').dumps(record))
  monkeypatch.setattr(example, '_run', fake_run)
  work = tmp_path / 'work'
  assert example.main([f'--workdir={work}', f'--media_dir={tmp_path / "media"}', '--seed=3',
                       '--clip_seconds=1.6', '--short_side=32', '--steps=5', '--test_range=0.5,0.9',
                       '--config.training.batch_size=8']) == 0
  assert [w for w, _ in commands] == ['pretrain', 'retrieval']
  pretrain_cmd = commands[0][1]
  assert f'--config.data.train_shards={work / "train"}' in pretrain_cmd
  assert '--config.seed=3' in pretrain_cmd and '--config.training.num_steps=5' in pretrain_cmd
  assert '--config.training.batch_size=8' in pretrain_cmd
  assert f'--test_shards={work / "test"}' in commands[1][1]
  result = __import__('json').loads((work / 'seed3' / 'real_video.json').read_text())
  # 10 s in 1.6 s clips: 6 (the last ends at 9.6 s); test 4.8-8.64 s holds those at 4.8 and
  # 6.4 s; train clips end by 3.2 s (a 1.6 s gap) or would start after 10.24 s.
  assert result['num_test_clips'] == 2 and result['num_train_clips'] == 2
  assert result['nearest_train_test_seconds'] >= 1.6
  assert set(result['retrieval']) == {'pretrained', 'random_init', 'chance'}
  assert set(result['timings_seconds']) == {'fetch', 'cut', 'split', 'pretrain', 'retrieval',
                                            'total'}
