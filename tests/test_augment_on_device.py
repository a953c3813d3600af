"""config.data.augment_on='device': the pipeline ships crops and draws (and the broad audio as its
waveform), the step augments them (and makes the log-mel), and what the model sees equals the
host-augmented batch of the same seeds to the chain's tolerance (tests/test_augment_device.py
and tests/test_data_spectrogram.py hold the ops; this holds the wiring)."""
import jax
import numpy as np
import pytest
import tensorflow as tf

import conftest
from brave_jax import config_base
from brave_jax.data import augment_device
from brave_jax.data import dmvr_format
from brave_jax.data import pipeline
from brave_jax.data import resize_device
from brave_jax.data import spectrogram

H, W, T, RATE = 40, 48, 12, 16000
CHAIN_TOLERANCE = 4e-6  # tests/test_augment_device.py: the whole chain, device vs host.
RANDOM_CONV_TOLERANCE = 1e-4
# The step's JAX log-mel against the host pipeline's TF one. On the same waveforms the JAX log-mel
# is within 9.5e-7 of TF's run eagerly or in a tf.function (tests/test_data_spectrogram.py,
# EAGER_TOLERANCE here), but TF's own log-mel inside the tf.data pipeline differs from those by up
# to 1.8e-5 on these tone clips (measured; 5e-4 on the :tiny embedded data, where a float64
# log-mel is 2.6e-4 from the pipeline's and 6.1e-5 from JAX's and eager TF's), so device vs host
# gets ~3x that.
LOG_MEL_TOLERANCE = 5e-5
EAGER_TOLERANCE = 4e-6
FAR = 1e-3  # What another seed must move some pixel by, at least.
DEVICES = 2


def _clip(i):
  """Textured frames (noise on gradients) that move, so every op of the chain shows."""
  rng = np.random.default_rng(i)
  yy, xx = np.mgrid[:H, :W]
  base = np.stack([xx * 5 + 20 * i, yy * 6, 255 - xx * 3 - yy * 2], -1)
  frames = [np.clip(np.roll(base, k, axis=1) + rng.integers(-40, 40, base.shape), 0, 255)
            for k in range(T)]
  wave = np.sin(np.arange(int(T / 25 * RATE)) * 0.05 * (i + 1)).astype(np.float32) * 0.5
  return dmvr_format.Clip(frames_TxHxWx3=np.stack(frames).astype(np.uint8), waveform=wave,
                          label_index=i % 3, label_text=f'c{i % 3}', video_id=f'v{i}')


@pytest.fixture(scope='module')
def shard_dir(tmp_path_factory):
  return conftest.write_clip_shards(tmp_path_factory.mktemp('shards'), [_clip(i) for i in range(6)])


def _config(name, augment_on, shipped='float32', narrow_resize_on='device'):
  c = config_base.load(conftest.config_path(name, 'tiny'))
  c.data.update(audio_sample_rate=RATE, num_parallel_calls=2, augment_on=augment_on,
                shipped_frames_dtype=shipped)
  c.data.narrow.resize_on = narrow_resize_on
  c.training.batch_size = 4
  c.eval.update(image_size=32, num_frames=4, frame_step=2)
  return c


def _first_train_batch(shards, config, seed=0):
  return next(pipeline.make_train_dataset(config, shards, num_local_devices=DEVICES, seed=seed))


def _on_device(batch, config, blur):
  """What the fine-tuning model sees: the batch through its step's prepare_batch, under pmap."""
  return jax.tree.map(np.asarray,
                      jax.pmap(augment_device.batch_preparer(config, blur=blur))(batch))


def _pretraining_on_device(batch, config):
  """What the pretraining model sees: the batch through its step's prepare_batch, under pmap."""
  return jax.tree.map(np.asarray,
                      jax.pmap(augment_device.pretraining_batch_preparer(config))(batch))


def _views(batch):
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(batch)[0]}


@pytest.mark.parametrize('name,rgb_views,narrow_resize_on', [
    ('brave_rgb_audio', ("['narrow']['video']",), 'device'),
    ('brave_rgb_audio', ("['narrow']['video']",), 'host'),
    ('brave_rgb_rc', ("['narrow']['video']", "['broad']['rc']"), 'device'),
])
def test_device_augmented_train_batch_equals_host_batch(shard_dir, name, rgb_views,
                                                        narrow_resize_on):
  host = _views(_first_train_batch(shard_dir, _config(name, 'host')))
  device_config = _config(name, 'device', narrow_resize_on=narrow_resize_on)
  shipped = _first_train_batch(shard_dir, device_config)
  # Shipped: the crops in [0, 255] (not augmented) and, mirroring each RGB view, its draws; with
  # data.narrow.resize_on='device' the narrow view's crop unresized, with the resize's tables.
  assert set(shipped['draws']) == {'narrow', 'broad'}
  resized_here = set(resize_device.RESIZE_KEYS) if narrow_resize_on == 'device' else set()
  assert set(_views(shipped['draws'])) == {
      f"{v}['{k}']" for v in rgb_views
      for k in augment_device.VIEW_DRAW_KEYS | ({'rc_kernel'} if 'rc' in v else set()) |
      (resized_here if 'narrow' in v else set())}
  narrow = shipped['narrow']['video']
  if narrow_resize_on == 'device':
    assert narrow.dtype == np.uint8
    assert narrow.shape[-2:] == (device_config.data.narrow.crop_buffer_pixels, 3)
  else:
    assert narrow.dtype == np.float32
    assert narrow.max() > 1.5  # Pixels, not [0, 1].
  seen = _views(_pretraining_on_device(shipped, device_config))
  assert set(seen) == set(host)  # Draws dropped; the same keys, shapes and dtypes as the host's.
  shapes = pipeline.batch_shapes(device_config)  # The model's inputs, either way.
  for key, x in host.items():
    assert (seen[key].shape, seen[key].dtype) == (x.shape, x.dtype), key
    if key in rgb_views:
      tolerance = RANDOM_CONV_TOLERANCE if 'rc' in key else CHAIN_TOLERANCE
      np.testing.assert_allclose(seen[key], x, atol=tolerance, err_msg=key)
    elif key == "['broad']['audio']":  # The log-mel, made by the step from the waveform.
      assert x.shape[2:] == shapes['broad']['audio']
      np.testing.assert_allclose(seen[key], x, rtol=0, atol=LOG_MEL_TOLERANCE, err_msg=key)
    else:  # Labels do not go through the chain.
      np.testing.assert_array_equal(seen[key], x, err_msg=key)
  # Negative control: another seed's clips are far from these.
  other = _views(_pretraining_on_device(_first_train_batch(shard_dir, device_config, seed=1),
                                        device_config))
  for key in rgb_views:
    assert np.abs(other[key] - host[key]).max() > FAR, key


def test_device_train_batch_ships_the_audio_waveform_and_the_step_makes_its_log_mel(shard_dir):
  """V/A with augment_on='device': batch['broad']['audio'] leaves the host as the broad window's
  waveform [audio_num_samples], and the pretraining step's log-mel equals the host's."""
  host_config, device_config = _config('brave_rgb_audio', 'host'), _config('brave_rgb_audio',
                                                                           'device')
  host = _first_train_batch(shard_dir, host_config)['broad']['audio']
  shipped = _first_train_batch(shard_dir, device_config)
  wave = shipped['broad']['audio']
  per_device = device_config.training.batch_size // DEVICES
  assert wave.dtype == np.float32
  assert wave.shape == (DEVICES, per_device, pipeline.audio_num_samples(device_config))
  assert host.shape == (DEVICES, per_device) + pipeline.batch_shapes(host_config)['broad']['audio']
  seen = _pretraining_on_device(shipped, device_config)['broad']['audio']
  print(f'max |device - host| log-mel: {np.abs(seen - host).max():.3g}')
  np.testing.assert_allclose(seen, host, rtol=0, atol=LOG_MEL_TOLERANCE)
  # The shipped waveforms are the host's: TF's log-mel of them, run eagerly, is the step's.
  eager = np.stack([[spectrogram.from_config(tf.constant(w), device_config.data).numpy()
                     for w in row] for row in wave])
  np.testing.assert_allclose(seen, eager, rtol=0, atol=EAGER_TOLERANCE)
  # Negative controls: another STFT hop misses the host's log-mel ...
  device_config.data.audio.frame_step += 1
  off = _pretraining_on_device(shipped, device_config)['broad']['audio']
  assert off.shape != host.shape or np.abs(off - host).max() > 1e-2
  # ... and a batch whose audio is already a log-mel (the host path's) is refused, naming it.
  device_config.data.audio.frame_step -= 1
  logmels = dict(shipped, broad={'audio': host})
  with pytest.raises(ValueError, match=r"batch\['broad'\]\['audio'\] has shape .* not the "
                                       r'broad window.s waveforms'):
    _pretraining_on_device(logmels, device_config)
  # The fine-tuning preparer makes no log-mel (its clips have no broad view): not for this batch.
  assert _on_device(shipped, device_config, blur=True)['broad']['audio'].shape == wave.shape


def test_bad_rows_are_refilled_with_their_draws(tmp_path):
  """A failed record's row is a copy of a good row (bad_records.fill_bad_rows): its draws are
  copied with its frames, so the device batch still equals the host's row for row."""
  good = [dmvr_format.encode_clip(_clip(i)) for i in range(3)]
  garbage = b'\x0a\xff\xff\xff\x0f not a SequenceExample'
  dmvr_format.write_shards(good[:2] + [garbage] + good[2:], str(tmp_path), 'bad', 1)
  device_config = _config('brave_rgb_audio', 'device')
  host = pipeline.make_train_dataset(_config('brave_rgb_audio', 'host'), str(tmp_path),
                                     num_local_devices=DEVICES, seed=0)
  shipped = pipeline.make_train_dataset(device_config, str(tmp_path), num_local_devices=DEVICES,
                                        seed=0)
  for _ in range(2):
    seen = _pretraining_on_device(next(shipped), device_config)
    np.testing.assert_allclose(seen['narrow']['video'], next(host)['narrow']['video'],
                               atol=CHAIN_TOLERANCE)
  assert shipped.skipped_records() == host.skipped_records() >= 1


def test_uint8_frames_are_the_float32_frames_rounded(shard_dir):
  """data.shipped_frames_dtype='uint8' rounds the resized views: the narrow one here is resized
  on the host (data.narrow.resize_on='host'), as the broad ones always are."""
  exact = _first_train_batch(shard_dir, _config('brave_rgb_rc', 'device', narrow_resize_on='host'))
  config = _config('brave_rgb_rc', 'device', shipped='uint8', narrow_resize_on='host')
  rounded = _first_train_batch(shard_dir, config)
  for view in (('narrow', 'video'), ('broad', 'rc')):
    x8, x32 = rounded[view[0]][view[1]], exact[view[0]][view[1]]
    assert x8.dtype == np.uint8 and x8.nbytes * 4 == x32.nbytes
    assert np.abs(x8.astype(np.float32) - x32).max() <= 0.5
  jax.tree.map(np.testing.assert_array_equal, rounded['draws'], exact['draws'])
  seen, host = (_pretraining_on_device(rounded, config),
                _first_train_batch(shard_dir, _config('brave_rgb_rc', 'host')))
  assert seen['narrow']['video'].dtype == np.float32
  # After the chain a 0.5/255 input difference stays small (blur averages, jitter scales by at
  # most ~1.4x, and the random convolution by the kernel's sum of |weights|) ...
  diff = np.abs(seen['narrow']['video'] - host['narrow']['video']).max()
  assert CHAIN_TOLERANCE < diff < 4.0 / 255
  assert np.abs(seen['broad']['rc'] - host['broad']['rc']).max() < 0.1


def test_device_augmented_finetune_batch_equals_host_batch(shard_dir):
  """Fine-tuning's clips (the linear protocol's: no blur) augmented in the fine-tuning step."""
  def first(config):
    return next(pipeline.make_finetune_dataset(config, shard_dir, batch_size=4,
                                               num_local_devices=DEVICES))
  host = first(_config('brave_rgb_audio', 'host'))
  device_config = _config('brave_rgb_audio', 'device')
  shipped = first(device_config)
  assert set(shipped) == {'video', 'label', 'draws'} and set(shipped['draws']) == {'video'}
  seen = _on_device(shipped, device_config, blur=False)
  assert set(seen) == set(host) == {'video', 'label'}
  np.testing.assert_allclose(seen['video'], host['video'], atol=CHAIN_TOLERANCE)
  np.testing.assert_array_equal(seen['label'], host['label'])
  blurred = _on_device(shipped, device_config, blur=True)  # Control: the pretraining chain.
  assert np.abs(blurred['video'] - host['video']).max() > FAR


def test_augment_on_and_shipped_dtype_are_validated_naming_the_field():
  config = _config('brave_rgb_audio', 'gpu')
  with pytest.raises(config_base.ConfigError, match=r'config\.data\.augment_on: must be one of'):
    config_base.validate(config)
  config = _config('brave_rgb_audio', 'device', shipped='float16')
  with pytest.raises(config_base.ConfigError, match=r'config\.data\.shipped_frames_dtype'):
    config_base.validate(config)
  assert augment_device.batch_preparer(_config('brave_rgb_audio', 'host'), blur=True) is None
  assert augment_device.pretraining_batch_preparer(_config('brave_rgb_audio', 'host')) is None
  assert not augment_device.ships_broad_audio_waveform(_config('brave_rgb_audio', 'host'))
  assert augment_device.ships_broad_audio_waveform(_config('brave_rgb_audio', 'device'))
  assert not augment_device.ships_broad_audio_waveform(_config('brave_rgb_rc', 'device'))
