"""Audio evaluation: audio-only conversion, the looping audio pipeline, folds, multi-label, end to end."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from brave_jax import evaluate
from brave_jax import published
from brave_jax.data import convert
from brave_jax.data import dmvr_format
from brave_jax.data import listing
from brave_jax.data import pipeline
from brave_jax.eval import audio
from brave_jax.eval import protocols
import eval_test_utils
import media_writers

RATE = 48000


def _tone(hz, seconds, rate=RATE):
  t = np.arange(int(seconds * rate)) / rate
  return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_convert_audio_only_files_with_multi_labels(tmp_path):
  media = tmp_path / 'media'
  media.mkdir()
  files = {'a.wav': _tone(440, 0.5), 'b.flac': _tone(660, 0.3), 'c.mp3': _tone(880, 0.4),
           'd.ogg': _tone(330, 0.4)}
  for name, wave in files.items():
    media_writers.write_test_audio(str(media / name), wave)
  csv_path = tmp_path / 'meta.csv'
  csv_path.write_text('YTID,labels,extra\n' + '\n'.join(
      [f'{n},{l},x' for n, l in zip(files, ['dog;bark', 'cat', 'dog', 'bark;cat;dog'])]) + '\n')
  summary = convert.convert(str(csv_path), str(tmp_path / 'out'), prefix='audio',
                            audio_only=True, path_column='YTID', label_column='labels',
                            media_root=str(media), progress=False)
  assert summary.converted == 4 and not summary.skipped, summary.text()
  assert summary.classes == ['bark', 'cat', 'dog'] and summary.audio_only
  by_id = {}
  for record in tf.data.TFRecordDataset(summary.shards):
    ex = tf.train.SequenceExample.FromString(record.numpy())
    ctx = ex.context.feature
    assert not ex.feature_lists.feature_list[dmvr_format.IMAGE_KEY].feature  # No frames.
    wave = np.array(ex.feature_lists.feature_list[dmvr_format.WAVEFORM_KEY].feature[0]
                    .float_list.value)
    by_id[ctx[dmvr_format.VIDEO_ID_KEY].bytes_list.value[0].decode()] = (
        list(ctx[dmvr_format.LABEL_INDEX_KEY].int64_list.value), wave)
  assert by_id['a.wav'][0] == [2, 0] and by_id['d.ogg'][0] == [0, 1, 2]
  assert by_id['b.flac'][0] == [1]
  np.testing.assert_allclose(by_id['a.wav'][1], files['a.wav'], atol=1e-3)  # PCM16, exact rate.
  assert abs(len(by_id['c.mp3'][1]) / RATE - 0.4) < 0.06  # mp3/opus pad by a frame or so.
  # A folder of audio files: labels from sub-folders; video-only listing ignores them.
  (media / 'dog').mkdir()
  media_writers.write_test_audio(str(media / 'dog' / 'x.wav'), _tone(500, 0.2))
  assert [l for _, _, l in listing.list_folder(str(media), listing.AUDIO_EXTENSIONS)] == \
      [None, None, None, None, 'dog']
  assert not [p for p, _, _ in listing.list_folder(str(media)) if p.endswith('.wav')]


def _audio_shards(directory, clips):
  """clips: [(waveform, labels, clip_id)] as waveform-only records."""
  examples = [dmvr_format.encode_clip(dmvr_format.Clip(waveform=w, label_index=l, video_id=i))
              for w, l, i in clips]
  return dmvr_format.write_shards(examples, str(directory), 'audio', 1)


def test_audio_pipeline_loops_short_clips_and_multi_hots(tiny_va_config, tmp_path):
  config = tiny_va_config
  window = pipeline.audio_num_samples(config)  # 8 frames x 4 / 25 fps = 1.28 s.
  short = np.linspace(-0.5, 0.5, window // 3).astype(np.float32)
  long = _tone(300, 2 * window / RATE) * np.linspace(0.1, 1.0, 2 * window, dtype=np.float32)
  shards = _audio_shards(tmp_path, [(short, [1, 3], 'short.wav'), (long, 2, 'long.wav'),
                                    (np.zeros(0, np.float32), 0, 'empty.wav')])
  batches = list(pipeline.make_audio_eval_dataset(config, shards, batch_size=8, num_windows=2,
                                                  num_classes=4))
  rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert rows['audio'].shape == (4, pipeline.audio_num_frames(config), 80)  # Empty one skipped.
  assert list(rows['clip_id']) == [b'short.wav'] * 2 + [b'long.wav'] * 2
  assert list(rows['num_samples']) == [len(short)] * 2 + [len(long)] * 2
  np.testing.assert_array_equal(rows['labels'][0], [0, 1, 0, 1])
  np.testing.assert_array_equal(rows['labels'][2], [0, 0, 1, 0])
  # The short clip's window is the clip repeated from its start (both windows start at 0).
  looped = np.tile(short, 4)[:window]
  expected = pipeline.spectrogram.from_config(tf.constant(looped), config.data).numpy()
  np.testing.assert_allclose(rows['audio'][0], expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(rows['audio'][1], expected, rtol=1e-4, atol=1e-4)
  assert not np.allclose(rows['audio'][2], rows['audio'][3])  # Long clip: quiet start, loud end.


def test_read_and_assign_folds(tmp_path):
  path = tmp_path / 'esc50.csv'
  path.write_text('filename,fold,target,category\n1-1-A-0.wav,1,0,dog\n2-1-A-1.wav,2,1,rain\n')
  folds = audio.read_folds(str(path))
  assert folds == {'1-1-A-0.wav': '1', '2-1-A-1.wav': '2'}
  np.testing.assert_array_equal(audio.assign_folds(['audio/2-1-A-1.wav', '1-1-A-0.wav'], folds,
                                                   str(path)), ['2', '1'])
  with pytest.raises(audio.AudioEvalError, match='not in'):
    audio.assign_folds(['3-1-A-0.wav'], folds, str(path))
  (tmp_path / 'bad.csv').write_text('name,split\nx.wav,1\n')
  with pytest.raises(audio.AudioEvalError, match='no id column'):
    audio.read_folds(str(tmp_path / 'bad.csv'))


def test_evaluate_folds_trains_on_the_other_folds():
  rng = np.random.default_rng(0)
  labels = np.tile(np.arange(3), 20)
  folds = np.repeat(np.array(['1', '2', '3', '4', '5']), 12)
  feats = np.eye(3)[labels] * 3 + rng.normal(size=(60, 3))
  result = audio.evaluate_folds(feats, labels, folds, 1.0)
  assert list(result['per_fold_accuracy']) == ['1', '2', '3', '4', '5']
  assert result['mean_accuracy'] > 0.8 and result['num_folds'] == 5
  assert np.sum(result['confusion_matrix']) == 60  # Every clip tested exactly once.
  noise = audio.evaluate_folds(rng.normal(size=(60, 3)), labels, folds, 1.0)
  assert noise['mean_accuracy'] < 0.6


def test_multilabel_metrics_by_hand_and_a_learned_head(tiny_va_config):
  targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
  perfect = audio.multilabel_metrics(targets * 0.9 + 0.05, targets)
  assert perfect['mAP'] == pytest.approx(1.0) and perfect['mAUC'] == pytest.approx(1.0)
  inverted = audio.multilabel_metrics(1.0 - targets, targets)
  assert inverted['mAUC'] == pytest.approx(0.0)
  rng = np.random.default_rng(0)
  y = (rng.uniform(size=(200, 4)) < 0.3).astype(np.float32)
  x = y @ rng.normal(size=(4, 16)) + 0.1 * rng.normal(size=(200, 16))
  for head in ('linear', 'mlp'):
    tiny_va_config.audio_eval.update(head=head, epochs=60, head_batch_size=50)
    scores = audio.train_multilabel_head(x[:150], y[:150], tiny_va_config)
    assert audio.multilabel_metrics(scores(x[150:]), y[150:])['mAP'] > 0.9, head


def test_run_folds_end_to_end(tiny_va_config, tmp_path, capsys):
  config = tiny_va_config
  clips, rows = [], ['filename,fold,target,category']
  for fold in (1, 2, 3):
    for label in range(2):
      for i in range(2):
        name = f'{fold}-{label}{i}-A-{label}.wav'
        clips.append((_tone(400 * (label + 1), 0.5 + 1.5 * i), label, name))
        rows.append(f'{name},{fold},{label},c{label}')
  shards = _audio_shards(tmp_path / 'shards', clips)
  (tmp_path / 'meta.csv').write_text('\n'.join(rows) + '\n')
  source = eval_test_utils.random_source(config)
  npy = published.save(str(tmp_path / 'model.npy'), source.params, source.state,
                       published.published_config(config))
  out = tmp_path / 'out'
  spec = os.path.join(os.path.dirname(__file__), '..', 'configs', 'brave_rgb_audio.py:tiny')
  assert evaluate.main(['--protocol=audio', f'--checkpoint={npy}', f'--config={spec}',
                        f'--audio_shards={",".join(shards)}', f'--folds_csv={tmp_path}/meta.csv',
                        f'--output_dir={out}', '--svm_c=1.0']) == 0
  assert 'were looped' in capsys.readouterr().out
  written = json.loads((out / 'audio_eval.json').read_text())
  assert written['backbone'] == 'published' and written['protocol'] == 'audio_folds'
  assert written['looped_clips'] == 6 and written['num_clips'] == 12  # 0.5 s < 1.28 s window.
  assert set(written['per_fold_accuracy']) == {'1', '2', '3'}
  assert 0.0 <= written['mean_accuracy'] <= 1.0
  for png in ('folds.png', 'confusion.png'):
    assert os.path.getsize(out / png) > 1000
  # AudioSet style through the CLI: several labels per clip, mAP/mAUC on the test split.
  multi = [(_tone(300 * (1 + a) + 500 * b, 0.6), [a, 2 + b], f'm{a}{b}{i}.wav')
           for a in range(2) for b in range(2) for i in range(3)]
  train_shards = _audio_shards(tmp_path / 'multi_train', multi[::2] + multi[1::4])
  test_shards = _audio_shards(tmp_path / 'multi_test', multi[1::2])
  assert evaluate.main(['--protocol=audio', '--multilabel', '--num_classes=4',
                        f'--checkpoint={npy}', f'--config={spec}',
                        f'--train_shards={",".join(train_shards)}',
                        f'--test_shards={",".join(test_shards)}',
                        f'--output_dir={tmp_path / "multi"}', '--config.audio_eval.epochs=5']) == 0
  written = json.loads((tmp_path / 'multi' / 'audio_eval.json').read_text())
  assert written['protocol'] == 'audio_multilabel' and written['num_scored_classes'] == 4
  assert 0.0 <= written['mAP'] <= 1.0 and 0.0 <= written['mAUC'] <= 1.0
  assert os.path.getsize(tmp_path / 'multi' / 'ap.png') > 1000


def test_embedded_audio_split_is_esc_shaped(tmp_path):
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  from brave_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  cfg = config_base.base_config().data.synthetic
  cfg.update(cache_dir=str(tmp_path), num_classes=3)
  dataset = synthetic.ensure_audio_dataset(cfg, num_folds=3, clips_per_fold=2, seconds=0.5,
                                           show_progress=False)
  assert synthetic.ensure_audio_dataset(cfg, num_folds=3, clips_per_fold=2, seconds=0.5,
                                        show_progress=False) == dataset  # Cached.
  folds = audio.read_folds(dataset['folds_csv'])
  ids, waves = [], []
  for record in tf.data.TFRecordDataset(dataset['audio']):
    ex = tf.train.SequenceExample.FromString(record.numpy())
    ids.append(ex.context.feature[dmvr_format.VIDEO_ID_KEY].bytes_list.value[0].decode())
    waves.append(np.array(ex.feature_lists.feature_list[dmvr_format.WAVEFORM_KEY].feature[0]
                          .float_list.value))
  assert sorted(ids) == sorted(folds) and len(ids) == 3 * 2 * 3
  assert sorted(set(folds.values())) == ['1', '2', '3']
  assert all(len(w) == RATE // 2 and np.abs(w).max() <= 1.0 for w in waves)


# --- Real media as users bring it (issue 21) -------------------------------------------------

LANGS = ('de', 'fr', 'it')


def _nested_speech(tmp_path):
  """Nested folders with repeated basenames (de/alpha/k.ogg, fr/alpha/k.ogg, ...), an ESC-style
  CSV of their relative paths with folds that differ between same-named files, converted
  --audio_only through the CSV with --media_root. Returns (shards, {path: fold}, csv path)."""
  media = tmp_path / 'media'
  rows, folds = ['filename,fold,category'], {}
  for li, lang in enumerate(LANGS):
    for wi, word in enumerate(('alpha', 'beta')):
      for ki, name in enumerate(('k.ogg', 'm.ogg')):
        rel = f'{lang}/{word}/{name}'
        (media / lang / word).mkdir(parents=True, exist_ok=True)
        media_writers.write_test_audio(str(media / rel), _tone(300 + 100 * li + 37 * ki, 0.3))
        fold = str(1 + (li + wi + ki) % 3)
        folds[rel] = fold
        rows.append(f'{rel},{fold},{lang}')
  csv_path = tmp_path / 'meta.csv'
  csv_path.write_text('\n'.join(rows) + '\n')
  summary = convert.convert(str(csv_path), str(tmp_path / 'shards'), prefix='speech',
                            audio_only=True, path_column='filename', label_column='category',
                            media_root=str(media), progress=False)
  assert summary.converted == 12, summary.text()
  return summary.shards, folds, str(csv_path)


def test_folds_match_clips_by_path_not_basename(tmp_path):
  """Before: folds were keyed by base name, so 12 rows became 2 keys ('k.ogg', 'm.ogg') and 10
  clips silently took another clip's fold. Now the converter's clip/id (the CSV path relative
  to --media_root) matches its own row."""
  shards, folds, csv_path = _nested_speech(tmp_path)
  assert len({os.path.basename(p) for p in folds}) == 2 < len(folds)  # The media reproduces it.
  ids = audio.shard_clip_ids(shards)
  assert sorted(ids) == sorted(folds)  # clip/id is the path the converter was given.
  assert audio.read_folds(csv_path) == folds
  np.testing.assert_array_equal(audio.assign_folds(ids, audio.read_folds(csv_path), csv_path),
                                [folds[i] for i in ids])
  assert audio.check_folds_cover(shards, csv_path) == folds


def test_ambiguous_fold_keys_are_refused_in_one_line(tmp_path):
  """A CSV of bare file names against nested clips with repeated names, and a path listed twice
  with two folds, are refused with one line naming the duplicates."""
  shards, folds, _ = _nested_speech(tmp_path)
  bare = tmp_path / 'bare.csv'
  bare.write_text('filename,fold\nk.ogg,1\nm.ogg,2\n')
  with pytest.raises(audio.AudioEvalError) as caught:
    audio.check_folds_cover(shards, str(bare))
  message = str(caught.value)
  assert '\n' not in message and 'ambiguous' in message
  assert "row 'k.ogg' matches clips ['de/alpha/k.ogg', 'de/beta/k.ogg', 'fr/alpha/k.ogg']" in message
  twice = tmp_path / 'twice.csv'
  twice.write_text('filename,fold\nde/alpha/k.ogg,1\nfr/beta/m.ogg,2\n./de/alpha/k.ogg,3\n')
  with pytest.raises(audio.AudioEvalError,
                     match=r"listed twice with different folds: 'de/alpha/k.ogg' \(lines 2 and 4\)"):
    audio.read_folds(str(twice))
  # Bare ESC-50 names still match clips under a folder when each name is unique.
  np.testing.assert_array_equal(
      audio.assign_folds(['audio/1-1-A-0.wav', 'x/2-1-A-1'], {'1-1-A-0.wav': '1',
                                                              '2-1-A-1.wav': '2'}, 'esc.csv'),
      ['1', '2'])


def _fails_before_the_model(monkeypatch, capsys, argv) -> str:
  """Runs the CLI expecting exit status 1 and one error line, with model building forbidden."""
  def no_model(*args, **kwargs):
    raise AssertionError('the model was built before the inputs were checked')
  monkeypatch.setattr(protocols.Request, 'source', no_model)
  with pytest.raises(SystemExit) as caught:
    evaluate.main(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert caught.value.code in (1, 2), err
  assert err and err[-1].startswith('error: ') and 'Traceback' not in '\n'.join(err), err
  return err[-1]


def test_bad_folds_csv_fails_in_one_line_before_the_model_is_built(tmp_path, monkeypatch, capsys):
  """Before: AudioEvalError derived from ValueError only, so the CLI printed a traceback, and
  only after building the model (98 s). Now every input is checked first, in one line."""
  shards, _, csv_path = _nested_speech(tmp_path)
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'earlier.json').write_text('{"kept": true}')
  spec = os.path.join(os.path.dirname(__file__), '..', 'configs', 'brave_rgb_audio.py:tiny')
  base = ['--protocol=audio', '--random_init', f'--config={spec}', f'--output_dir={out}',
          f'--audio_shards={",".join(shards)}']
  no_fold = tmp_path / 'no_fold.csv'
  no_fold.write_text('filename,split\nde/alpha/k.ogg,1\n')
  assert 'no fold column' in _fails_before_the_model(monkeypatch, capsys,
                                                     base + [f'--folds_csv={no_fold}'])
  partial = tmp_path / 'partial.csv'
  partial.write_text('filename,fold\nde/alpha/k.ogg,1\nfr/alpha/k.ogg,2\n')
  assert '10 clip(s) are not in' in _fails_before_the_model(monkeypatch, capsys,
                                                            base + [f'--folds_csv={partial}'])
  assert 'does not exist' in _fails_before_the_model(
      monkeypatch, capsys, base + [f'--folds_csv={tmp_path / "nowhere.csv"}'])
  binary = tmp_path / 'binary.csv'
  binary.write_bytes(b'filename,fold\n\x00\xff\xfe')
  assert 'not a readable CSV' in _fails_before_the_model(monkeypatch, capsys,
                                                         base + [f'--folds_csv={binary}'])
  assert sorted(os.listdir(out)) == ['earlier.json']  # Nothing written, nothing lost.
  assert issubclass(audio.AudioEvalError, evaluate.errors.RunError)
  del csv_path


def test_svm_folds_show_a_bar(capsys):
  """Before: minutes of silence between the embedding bar and the result. Now the folds count."""
  rng = np.random.default_rng(0)
  labels = np.tile(np.arange(2), 6)
  audio.evaluate_folds(rng.normal(size=(12, 3)), labels, np.repeat(['1', '2', '3'], 4), 1.0)
  assert 'SVM per fold' in capsys.readouterr().err
