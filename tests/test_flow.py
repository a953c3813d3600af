"""Optical flow end to end: extraction, storage, the broad flow/rc views, a V/FA step, convert."""
import json

import cv2
import jax
import numpy as np
import optax
import pytest
import tensorflow as tf

from brave_jax import config_base
from brave_jax.data import convert
from brave_jax.data import decode
from brave_jax.data import dmvr_format
from brave_jax.data import flow
from brave_jax.data import pipeline
from brave_jax.data import reader
from brave_jax.models import brave
from brave_jax.train import optimizer as optimizer_lib

from conftest import config_path
import media_writers

H, W = 48, 64
QUANT_PX = dmvr_format.FLOW_CLIP_PX / 127.5  # One stored flow level in pixels.


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
  """float32 [h, w, 3] in [0, 255]: smoothed noise, textured at every scale flow needs."""
  rng = np.random.default_rng(seed)
  noise = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
  fine = cv2.GaussianBlur(noise, (0, 0), 1.5)
  coarse = cv2.GaussianBlur(noise, (0, 0), 6.0)
  x = fine + 2.0 * (coarse - coarse.mean())
  return (x - x.min()) / (x.max() - x.min()) * 255.0


def _translated_pair(dx: float, dy: float) -> np.ndarray:
  """uint8 [2, H, W, 3]: a textured frame and the same scene moved by (dx, dy) px."""
  big = _texture(2 * H, 2 * W)
  moved = cv2.warpAffine(big, np.float32([[1, 0, dx], [0, 1, dy]]), (2 * W, 2 * H),
                         flags=cv2.INTER_CUBIC)
  crop = lambda im: im[H // 2:H // 2 + H, W // 2:W // 2 + W]
  return np.clip(np.round(np.stack([crop(big), crop(moved)])), 0, 255).astype(np.uint8)


# --- Extraction ---------------------------------------------------------------

@pytest.mark.parametrize('dx, dy', [(2.0, -1.0), (1.5, 0.75)])
def test_flow_recovers_known_translation(dx, dy):
  frames = _translated_pair(dx, dy)
  for method, tolerance in (('tvl1', 0.5), ('dis', 1.0)):
    flow_TxHxWx2 = flow.compute_flow(frames, method)
    assert flow_TxHxWx2.shape == (2, H, W, 2) and flow_TxHxWx2.dtype == np.float32
    np.testing.assert_array_equal(flow_TxHxWx2[1], flow_TxHxWx2[0])  # Last frame repeats.
    inner = flow_TxHxWx2[0, 6:-6, 6:-6]
    error = np.abs(inner - np.array([dx, dy], np.float32)).mean()
    assert error < tolerance, (method, error)


def test_flow_is_clipped_to_stored_range_and_repeats_are_still():
  frames = np.repeat(_translated_pair(1.0, 0.0)[:1], 3, axis=0)
  np.testing.assert_array_equal(flow.compute_flow(frames, 'farneback'), 0.0)
  far = flow.pair_flow(lambda a, b: np.full(a.shape + (2,), 55.0, np.float32),
                       frames[0, ..., 0], frames[1, ..., 0])
  np.testing.assert_array_equal(far, dmvr_format.FLOW_CLIP_PX)
  with pytest.raises(ValueError, match='unknown flow method'):
    flow.make_flow_fn('horn_schunck')


def test_flow_jpeg_round_trip_within_one_level():
  """Stored flow read back by the pipeline's decoder is within one quantisation step."""
  yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
  flow_TxHxWx2 = np.stack([
      np.stack([15 * np.sin(xx / 9 + t) + 3 * yy / H, -12 * np.cos(yy / 11 - t)], -1)
      for t in range(3)]).astype(np.float32)
  serialized = dmvr_format.encode_clip(dmvr_format.Clip(
      frames_TxHxWx3=np.zeros([3, H, W, 3], np.uint8),
      encoded_flow=[dmvr_format.encode_flow_jpeg(f) for f in flow_TxHxWx2], flow_method='tvl1'))
  ex = reader.parse_example(tf.constant(serialized), flow=True)
  stored = decode.decode_crop(ex['flow'], tf.constant([0, 0, H, W]), [H, W],
                              dct_method=decode.FLOW_DCT_METHOD)
  read_px = decode.flow_to_unit(tf.cast(stored, tf.float32)).numpy() * dmvr_format.FLOW_CLIP_PX
  quantised_px = np.stack([
      decode.flow_to_unit(dmvr_format.flow_to_uint8(f).astype(np.float32))
      for f in flow_TxHxWx2]) * dmvr_format.FLOW_CLIP_PX
  jpeg_error = np.abs(read_px - quantised_px)  # JPEG's share: at most one stored level.
  assert jpeg_error.max() <= QUANT_PX * 1.001, jpeg_error.max() / QUANT_PX
  error = np.abs(read_px - flow_TxHxWx2)  # Plus half a level of rounding.
  assert error.max() <= 1.5 * QUANT_PX and error.mean() < QUANT_PX / 2, error.max()


# --- The broad flow view: geometry moves the vectors ---------------------------

def _flow_jpegs(flow_TxHxWx2: np.ndarray) -> tf.Tensor:
  return tf.constant([dmvr_format.encode_flow_jpeg(f) for f in flow_TxHxWx2])


def _whole_frame_aug(flip_prob: float):
  aug = config_base.base_config().data.augment
  aug.update(flip_prob=flip_prob)
  return aug


@pytest.fixture
def whole_frame_crops(monkeypatch):
  """Crop windows that are the whole frame (the published sampler would swap a whole-frame draw
  for its padded centre square), so the geometry below is the resize alone."""
  monkeypatch.setattr(decode, 'random_crop_window',
                      lambda image_hw, *unused: tf.concat([[0, 0], image_hw], 0))


@pytest.mark.parametrize('flip', [False, True])
def test_flow_view_scales_with_resize_and_flip_negates_x(flip, whole_frame_crops):
  """Left half moves (6, -4) px, right half (0, -4); the 64x48 frame becomes a 32x32 view."""
  flow_TxHxWx2 = np.zeros([2, H, W, 2], np.float32)
  flow_TxHxWx2[:, :, :W // 2, 0] = 6.0
  flow_TxHxWx2[..., 1] = -4.0
  view = pipeline._flow_view(_flow_jpegs(flow_TxHxWx2), 32, _whole_frame_aug(float(flip)),
                             tf.constant([1, 2], tf.int64)).numpy()
  assert view.shape == (2, 32, 32, 2)
  sx, sy = 32 / W, 32 / H
  moving = 6.0 * sx / dmvr_format.FLOW_CLIP_PX
  left, right = view[:, 4:-4, 2:12], view[:, 4:-4, 20:30]
  expect_left, expect_right = ((0.0, -moving) if flip else (moving, 0.0))
  tol = 2 * QUANT_PX / dmvr_format.FLOW_CLIP_PX
  np.testing.assert_allclose(left[..., 0], expect_left, atol=tol)
  np.testing.assert_allclose(right[..., 0], expect_right, atol=tol)
  np.testing.assert_allclose(view[..., 1], -4.0 * sy / dmvr_format.FLOW_CLIP_PX, atol=tol)


def test_flow_view_upscaling_clips_to_unit_range(whole_frame_crops):
  flow_TxHxWx2 = np.full([1, H, W, 2], 16.0, np.float32)  # 0.8 stored; x2 and x2.67 on a 128 view.
  view = pipeline._flow_view(_flow_jpegs(flow_TxHxWx2), 128, _whole_frame_aug(0.0),
                             tf.constant([3, 4], tf.int64)).numpy()
  np.testing.assert_allclose(view, 1.0)


# --- Every broad modality at once through the real pipeline --------------------

def _shards_with_flow(tmp_path, num=4, t=12):
  clips = []
  for i in range(num):
    frames = np.stack([np.roll(_texture(H, W, i), 2 * k, axis=1) for k in range(t)])
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    wave = (0.3 * np.sin(np.arange(t * 16000 // 25) * 0.05 * (i + 1))).astype(np.float32)
    clips.append(dmvr_format.encode_clip(dmvr_format.Clip(
        frames_TxHxWx3=frames, waveform=wave, label_index=i % 2, video_id=f'v{i}',
        flow_TxHxWx2=flow.compute_flow(frames, 'dis'), flow_method='dis')))
  return dmvr_format.write_shards(clips, str(tmp_path), 'train', 2)


def _pipeline_config(modalities, random_convolve_broad_video=False):
  cfg = config_base.load(config_path('brave_rgb_flow_audio', 'tiny'))
  cfg.data.broad_modalities = modalities
  cfg.data.random_convolve_broad_video = random_convolve_broad_video
  cfg.data.audio_sample_rate = 16000
  cfg.data.update(num_parallel_calls=2)
  cfg.data.broad.update(num_frames=4, frame_step=2)
  cfg.data.narrow.update(num_frames=2, frame_step=2)
  cfg.training.batch_size = 4
  return cfg


def _outside_unit_range(x: np.ndarray) -> bool:
  return bool(x.min() < -1e-3 or x.max() > 1 + 1e-3)


def test_pipeline_yields_every_broad_modality_rc_always_convolved(tmp_path):
  shards = _shards_with_flow(tmp_path)
  cfg = _pipeline_config(('video', 'rc', 'flow', 'audio'))
  batch = next(pipeline.make_train_dataset(cfg, shards, num_local_devices=1, seed=0))
  shapes = pipeline.batch_shapes(cfg)
  for m in cfg.data.broad_modalities:
    assert batch['broad'][m].shape == (1, 4) + shapes['broad'][m], m
  assert set(batch['broad']) == {'video', 'rc', 'flow', 'audio'}
  assert not _outside_unit_range(batch['broad']['video'])  # Plain RGB, clipped to [0, 1].
  assert _outside_unit_range(batch['broad']['rc'])  # Random kernels leave [0, 1].
  f = batch['broad']['flow']
  assert -1.0 <= f.min() and f.max() <= 1.0
  # Scene moves +2 px/frame in x at 64 px wide; the view is 32 px wide, maybe flipped.
  assert 0.02 < np.abs(f[..., 0].mean(axis=(2, 3, 4))).min()

  cfg = _pipeline_config(('video',), random_convolve_broad_video=True)
  batch = next(pipeline.make_train_dataset(cfg, shards, num_local_devices=1, seed=0))
  assert set(batch['broad']) == {'video'}
  assert _outside_unit_range(batch['broad']['video'])


# --- A V/FA training step --------------------------------------------------------

def _compile_fast(fn, *args):
  """Compiled at LLVM -O0: the tiny step runs in ms, so halve its compile (~15 s CPU) instead."""
  return jax.jit(fn).lower(*args).compile(compiler_options={'xla_backend_optimization_level': 0})


def test_vfa_training_step_reports_four_loss_terms():
  """The real model, optimizer and update (step.py's, minus the pmean) on a batch_shapes batch."""
  cfg = config_base.load(config_path('brave_rgb_flow_audio', 'tiny'))
  cfg.training.batch_size = 2
  config_base.validate(cfg)
  shapes = pipeline.batch_shapes(cfg)
  rng = np.random.default_rng(0)
  batch = jax.tree.map(lambda s: rng.uniform(-1, 1, (2,) + s).astype(np.float32), shapes,
                       is_leaf=lambda s: isinstance(s, tuple))
  batch['label'] = np.zeros([2], np.int32)
  assert batch['broad']['flow'].shape[-1] == 2
  model = brave.build_model(cfg.model, cfg.data.broad_modalities)
  optimizer = optimizer_lib.make_optimizer(cfg)
  key = jax.random.PRNGKey(0)
  params, state = _compile_fast(model.init, key, batch)(key, batch)

  def train_step(params, state, opt_state, batch):
    grad_fn = jax.value_and_grad(model.loss, has_aux=True)
    (_, (state, metrics)), grads = grad_fn(params, state, key, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), grads, opt_state, metrics

  opt_state = optimizer.init(params)
  new_params, grads, _, metrics = _compile_fast(train_step, params, state, opt_state, batch)(
      params, state, opt_state, batch)
  terms = {k for k in metrics if k.startswith('loss/')}
  assert terms == {'loss/narrow_to_flow', 'loss/flow_to_narrow', 'loss/narrow_to_audio',
                   'loss/audio_to_narrow'}
  assert all(np.isfinite(float(v)) for v in metrics.values())
  np.testing.assert_allclose(metrics['loss'], np.mean([metrics[k] for k in terms]), rtol=1e-5)
  stem = 'broad_flow_embedding/TSMResNetV2/tsm_resnet_stem'
  assert new_params[stem]['w'].shape[2] == 2
  for root in (stem, 'broad_audio_embedding/'):
    name = next(k for k in params if k.startswith(root) and 'w' in params[k])
    assert np.abs(grads[name]['w']).max() > 0, name  # Both broad backbones get gradients.


# --- Converter ------------------------------------------------------------------

def test_convert_flow_writes_one_flow_frame_per_frame_with_method(tmp_path):
  t = 10
  frames = np.stack([np.roll(_texture(H, W), 2 * k, axis=1) for k in range(t)])
  src = tmp_path / 'videos' / 'moving' / 'clip.mp4'
  src.parent.mkdir(parents=True)
  media_writers.write_test_video(str(src), np.clip(frames, 0, 255).astype(np.uint8), fps=25)
  out = tmp_path / 'shards'
  rc = convert.main([f'--videos={tmp_path / "videos"}', f'--output_dir={out}', '--prefix=train',
                     '--short_side=0', '--flow', '--flow_method=dis', '--no_progress'])
  assert rc == 0
  [record] = list(tf.data.TFRecordDataset(str(out / 'train-00000-of-00001')))
  ctx, seq = tf.io.parse_single_sequence_example(
      record, context_features={dmvr_format.FLOW_METHOD_KEY: tf.io.FixedLenFeature([], tf.string)},
      sequence_features={k: tf.io.FixedLenSequenceFeature([], tf.string)
                         for k in (dmvr_format.IMAGE_KEY, dmvr_format.FLOW_KEY)})
  assert ctx[dmvr_format.FLOW_METHOD_KEY].numpy() == b'dis'
  jpegs, flow_jpegs = seq[dmvr_format.IMAGE_KEY], seq[dmvr_format.FLOW_KEY]
  assert len(flow_jpegs) == len(jpegs) == t
  stored = np.stack([tf.io.decode_jpeg(j).numpy() for j in flow_jpegs.numpy()])
  assert stored.shape == (t, H, W, 3) and np.all(stored[..., 2] <= 1)
  flow_x = (stored[..., 0].astype(np.float32) * 2 / 255 - 1) * dmvr_format.FLOW_CLIP_PX
  assert abs(np.median(flow_x[:, 8:-8, 8:-8]) - 2.0) < 0.5  # The scene moves 2 px/frame.
  summary = json.loads((out / 'train_summary.json').read_text())
  assert summary['flow_method'] == 'dis'
