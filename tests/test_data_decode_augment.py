"""Decoding into crops and the per-view augmentations: shapes, ranges, all frames alike."""
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from brave_jax import config_base
from brave_jax.data import augment
from brave_jax.data import decode

SEED = tf.constant([1, 2], tf.int64)


def _jpegs(frames_TxHxWx3):
  return tf.stack([tf.io.encode_jpeg(f, quality=95, chroma_downsampling=False)
                   for f in frames_TxHxWx3])


def _smooth_frames(t=3, h=48, w=64):
  yy, xx = np.mgrid[:h, :w]
  base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
  return np.stack([np.roll(base, 2 * i, axis=1) for i in range(t)]).astype(np.uint8)


def _aug() -> ml_collections.ConfigDict:
  return config_base.base_config().data.augment


def test_random_crop_window_inside_image_and_area_in_range():
  for i in range(10):
    y, x, h, w = decode.random_crop_window(tf.constant([48, 64]), (0.3, 1.0), (0.5, 2.0),
                                           SEED + i).numpy()
    assert 0 <= y and y + h <= 48 and 0 <= x and x + w <= 64
    assert 0.25 <= h * w / (48 * 64) <= 1.0


def test_choose_ratio():
  assert int(decode.choose_ratio([256, 340], [112, 112])) == 1  # ratio 2
  assert int(decode.choose_ratio([200, 340], [112, 112])) == 0  # 100 < 112
  assert int(decode.choose_ratio([200, 340], [112, 112], max_upscale=1.25)) == 1
  assert int(decode.choose_ratio([1000, 1000], [100, 100])) == 3  # ratio 8


def test_reduced_scale_decode_matches_full_decode():
  frames = _smooth_frames()
  jpegs = _jpegs(frames)
  window = tf.constant([8, 8, 40, 48])
  small = decode.decode_crop(jpegs, window, [16, 16])  # ratio 2
  assert small.shape == (3, 20, 24, 3)
  full = decode.decode_crop(jpegs, window, [40, 40])
  assert full.shape == (3, 40, 48, 3)
  np.testing.assert_allclose(full.numpy(), frames[:, 8:48, 8:56], atol=8)
  resized = tf.image.resize(full, [20, 24], antialias=True).numpy()
  assert np.abs(resized - small.numpy()).mean() < 4


def test_decode_random_crop_shape_and_same_window_for_all_frames():
  frames = np.repeat(_smooth_frames(1), 4, axis=0)
  out = decode.decode_random_crop(_jpegs(frames), 32, (0.3, 1.0), (0.5, 2.0), SEED).numpy()
  assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
  for t in range(1, 4):
    np.testing.assert_array_equal(out[t], out[0])


def test_short_side_resize_and_spatial_crops():
  frames = decode.decode_resize_short_side(_jpegs(_smooth_frames(2)), 24)
  assert frames.shape == (2, 24, 32, 3)
  x = tf.reshape(tf.range(2 * 24 * 32, dtype=tf.float32), [2, 24, 32, 1])
  crops = decode.spatial_crops(x, 24, 3).numpy()
  assert crops.shape == (3, 2, 24, 24, 1)
  np.testing.assert_array_equal(crops[0], x[:, :, 0:24])  # left
  np.testing.assert_array_equal(crops[1], x[:, :, 4:28])  # centre
  np.testing.assert_array_equal(crops[2], x[:, :, 8:32])  # right
  tall = tf.transpose(x, [0, 2, 1, 3])  # portrait: top / centre / bottom
  np.testing.assert_array_equal(decode.spatial_crops(tall, 24, 3).numpy()[2], tall[:, 8:32])


def test_flow_to_unit():
  out = decode.flow_to_unit(tf.constant([[[[0.0, 255.0, 0.0]]]])).numpy()
  np.testing.assert_allclose(out, [[[[-1.0, 1.0]]]])


# --- Colour ---------------------------------------------------------------

def _apply(state, x):
  return augment.apply_color(tf.constant(x), *state, tf.constant(False)).numpy()


def test_color_ops_match_their_definitions():
  rng = np.random.RandomState(0)
  x = rng.uniform(0.3, 0.7, size=(2, 5, 6, 3)).astype(np.float32)
  ident = augment.identity_color()
  np.testing.assert_allclose(_apply(ident, x), x, atol=1e-6)
  np.testing.assert_allclose(_apply(augment.brightness_op(ident, 0.1), x), x + 0.1, atol=1e-6)
  want = tf.image.adjust_contrast(x, 1.3).numpy()  # Per frame and channel mean.
  np.testing.assert_allclose(_apply(augment.contrast_op(ident, 1.3), x), np.clip(want, 0, 1),
                             atol=1e-5)
  gray = _apply(augment.matrix_op(ident, augment.saturation_matrix(0.0)), x)
  np.testing.assert_allclose(gray, augment.to_grayscale(x).numpy(), atol=1e-5)
  np.testing.assert_allclose(gray[..., 0], tf.image.rgb_to_grayscale(x).numpy()[..., 0], atol=1e-3)
  np.testing.assert_allclose(_apply(augment.matrix_op(ident, augment.hue_matrix(0.0)), x), x,
                             atol=1e-5)
  hued = _apply(augment.matrix_op(ident, augment.hue_matrix(0.2)), x)
  assert np.abs(hued - x).max() > 0.01
  luma = np.array([0.299, 0.587, 0.114])  # Hue rotation keeps brightness.
  np.testing.assert_allclose(np.clip(hued, 0, 1) @ luma, x @ luma, atol=0.05)


def test_composed_state_equals_sequential_application():
  rng = np.random.RandomState(1)
  x = rng.uniform(0.35, 0.65, size=(3, 4, 5, 3)).astype(np.float32)
  state = augment.identity_color()
  state = augment.contrast_op(state, 1.2)
  state = augment.brightness_op(state, 0.05)
  state = augment.matrix_op(state, augment.saturation_matrix(1.3))
  state = augment.contrast_op(state, 0.8)
  y = tf.image.adjust_contrast(x, 1.2) + 0.05
  y = tf.einsum('thwj,ij->thwi', y, augment.saturation_matrix(1.3))
  y = tf.image.adjust_contrast(y, 0.8)
  np.testing.assert_allclose(_apply(state, x), np.clip(y.numpy(), 0, 1), atol=1e-5)


def test_apply_color_flip():
  x = np.random.RandomState(2).uniform(size=(2, 3, 4, 3)).astype(np.float32)
  out = augment.apply_color(x, *augment.identity_color(), tf.constant(True)).numpy()
  np.testing.assert_allclose(out, x[:, :, ::-1], atol=1e-6)


# --- Blur and random convolution ------------------------------------------

def test_blur_matches_numpy_and_truncation_is_close():
  x = np.zeros((1, 31, 31, 3), np.float32)
  x[0, 15, 15] = 1.0
  out = augment.gaussian_blur(x, 1.5, 11).numpy()
  d = np.arange(-5, 6)
  k = np.exp(-d ** 2 / (2 * 1.5 ** 2))
  k /= k.sum()
  np.testing.assert_allclose(out[0, 10:21, 10:21, 0], np.outer(k, k), atol=1e-6)
  np.testing.assert_allclose(out.sum(), 3.0, rtol=1e-5)
  img = np.random.RandomState(3).uniform(size=(2, 24, 24, 3)).astype(np.float32)
  full = augment.gaussian_blur(img, 1.0, 9).numpy()
  trunc = augment.gaussian_blur(img, 1.0, 9, truncate=True).numpy()
  assert np.abs(full - trunc).max() < 0.01
  assert augment.blur_kernel_size(224) == 23 and augment.blur_kernel_size(112) == 11


def test_random_convolve_k1_is_a_colour_matrix_and_gray_shortcut_is_exact():
  x = np.random.RandomState(4).uniform(size=(2, 8, 8, 3)).astype(np.float32)
  out = augment.random_convolve(x, (1,), SEED).numpy()
  flat = x.reshape(-1, 3)
  m, *_ = np.linalg.lstsq(flat, out.reshape(-1, 3), rcond=None)
  np.testing.assert_allclose(flat @ m, out.reshape(-1, 3), atol=1e-5)
  gray = np.repeat(x[..., :1], 3, axis=-1)
  for sizes in ((3,), (5, 7)):
    a = augment.random_convolve(gray, sizes, SEED).numpy()
    b = augment.random_convolve(gray, sizes, SEED, is_gray=True).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a.shape == gray.shape


@pytest.mark.parametrize('shape,k', [((3, 20, 27, 3), 9), ((2, 33, 30, 1), 11),
                                     ((2, 16, 16, 3), 11), ((1, 9, 9, 3), 9)])
def test_fft_convolution_equals_direct_same_convolution(shape, k):
  rng = np.random.RandomState(k + shape[1])
  x = rng.uniform(size=shape).astype(np.float32)
  kernel = rng.normal(size=(k, k, shape[-1], 3)).astype(np.float32)
  direct = tf.nn.conv2d(x, kernel, 1, 'SAME').numpy()
  np.testing.assert_allclose(augment.conv_same_fft(x, kernel).numpy(), direct, atol=1e-4)
  assert [augment._fft_length(n) for n in (116, 117, 121, 131)] == [120, 120, 125, 135]


def test_random_convolve_draws_every_kernel_size():
  # An impulse far from the border: the response's support is the drawn k x k.
  x = np.zeros((1, 25, 25, 3), np.float32)
  x[0, 12, 12, :] = 1.0
  sizes = set()
  for i in range(40):
    out = augment.random_convolve(x, (1, 3, 9, 11), SEED + i).numpy()[0]
    rows = np.nonzero(np.abs(out).sum(axis=(1, 2)) > 1e-6)[0]
    sizes.add(int(rows.max() - rows.min() + 1))
  assert sizes == {1, 3, 9, 11}


def test_random_convolve_is_he_normal():
  x = np.zeros((1, 11, 11, 3), np.float32)
  x[0, 5, 5, 0] = 1.0  # Impulse: output = kernel weights from input channel 0.
  weights = np.concatenate([augment.random_convolve(x, (5,), SEED + i).numpy()[0, 3:8, 3:8]
                            .ravel() for i in range(40)])
  assert abs(weights.std() - np.sqrt(2 / 75)) < 0.03


# --- The chain ------------------------------------------------------------

@pytest.mark.parametrize('random_conv', [False, True])
def test_augment_clip_same_for_all_frames_and_in_range(random_conv):
  frame = np.random.RandomState(5).randint(0, 256, size=(1, 32, 32, 3))
  clip = tf.constant(np.repeat(frame, 4, axis=0), tf.float32)
  aug = _aug()
  for i in range(4):
    out = augment.augment_clip(clip, aug, SEED + i, random_conv=random_conv).numpy()
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
    if not random_conv:
      assert out.min() >= 0.0 and out.max() <= 1.0
    for t in range(1, 4):
      np.testing.assert_allclose(out[t], out[0], atol=1e-6)


def test_augment_clip_is_deterministic_given_seed_and_varies_across_seeds():
  clip = tf.constant(np.random.RandomState(6).randint(0, 256, size=(2, 32, 32, 3)), tf.float32)
  aug = _aug()
  a = augment.augment_clip(clip, aug, SEED).numpy()
  np.testing.assert_array_equal(a, augment.augment_clip(clip, aug, SEED).numpy())
  assert any(np.abs(a - augment.augment_clip(clip, aug, SEED + i).numpy()).max() > 1e-3
             for i in range(1, 4))
