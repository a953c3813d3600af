"""The narrow view's resize in the step (data/resize_device.py) against tf.image.resize."""
import jax
import numpy as np
import pytest
import tensorflow as tf

import conftest
from brave_jax import config_base
from brave_jax.data import resize_device

# Float rounding of the blend (XLA may fuse a multiply-add) on pixels in [0, 255]: measured
# 4.6e-5 over 60 random crops; the chain after it is held to 4e-6 on [0, 1], i.e. 1e-3 here.
RESIZE_TOLERANCE = 1e-4
BUFFER = 300 * 360


def _resized_on_device(crop_TxHxWx3: np.ndarray, size: int) -> np.ndarray:
  flat = resize_device.flat_crop(tf.constant(crop_TxHxWx3), BUFFER).numpy()
  tables = {k: v.numpy() for k, v in
            resize_device.resize_tables(tf.constant(crop_TxHxWx3.shape[1:3]), size).items()}
  return np.asarray(jax.jit(resize_device.resize_flat_crop)(flat, tables))


@pytest.mark.parametrize('size', [224, 112, 32])
def test_resize_of_a_flat_crop_is_tf_image_resize(size):
  """Crops smaller and larger than the view, square and not, odd sizes, one pixel wide."""
  rng = np.random.default_rng(size)
  for h, w in [(256, 340), (size, size), (size - 1, size + 3), (77, 301), (300, 21), (1, 40)]:
    crop = rng.integers(0, 256, (2, h, w, 3)).astype(np.uint8)
    want = tf.image.resize(crop, [size, size], method='bilinear').numpy()
    got = _resized_on_device(crop, size)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=RESIZE_TOLERANCE, err_msg=f'{h}x{w}')


def test_tables_follow_tf_half_pixel_centres_negative_control():
  """Tables for a crop one pixel narrower than the shipped one (an off-by-one a port could make)
  land far from tf.image.resize: the test above can fail."""
  crop = np.random.default_rng(0).integers(0, 256, (1, 150, 200, 3)).astype(np.uint8)
  want = tf.image.resize(crop, [112, 112], method='bilinear').numpy()
  flat = resize_device.flat_crop(tf.constant(crop), BUFFER).numpy()
  wrong = {k: v.numpy() for k, v in resize_device.resize_tables(tf.constant([150, 199]), 112).items()}
  got = np.asarray(resize_device.resize_flat_crop(flat, wrong))
  assert np.abs(got - want).max() > 10


def test_flat_crop_is_row_major_and_zero_padded():
  crop = np.arange(2 * 3 * 4 * 3).reshape(2, 3, 4, 3).astype(np.uint8)
  flat = resize_device.flat_crop(tf.constant(crop), 20).numpy()
  assert flat.shape == (2, 20, 3) and flat.dtype == np.uint8
  np.testing.assert_array_equal(flat[:, :12], crop.reshape(2, 12, 3))
  assert not flat[:, 12:].any()


def test_a_crop_larger_than_the_buffer_fails_naming_the_field():
  crop = tf.zeros([1, 10, 11, 3], tf.uint8)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'config\.data\.narrow\.crop_buffer_pixels=100'):
    resize_device.flat_crop(crop, 100)


def test_resize_on_is_validated_naming_the_field():
  config = config_base.load(conftest.config_path('brave_rgb_audio', None))
  assert config_base.resizes_narrow_on_device(config)  # The full-size default.
  config.data.narrow.resize_on = 'tpu'
  with pytest.raises(config_base.ConfigError, match=r'config\.data\.narrow\.resize_on'):
    config_base.validate(config)
  config.data.narrow.resize_on = 'device'
  config.data.narrow.crop_buffer_pixels = 0
  with pytest.raises(config_base.ConfigError, match=r'config\.data\.narrow\.crop_buffer_pixels'):
    config_base.validate(config)
  config.data.narrow.crop_buffer_pixels = 1000
  config.data.augment_on = 'host'  # The host resizes whatever resize_on says.
  assert not config_base.resizes_narrow_on_device(config)
