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
  """Every window is either tf.image's draw (area 0.3-1.0, aspect 0.5-2.0, inside the image) or,
  when no attempt fitted, exactly the published centred fallback square; the draws span the range."""
  fallback = tuple(decode.center_crop_window(tf.constant([48, 64])).numpy())
  areas = []
  for i in range(100):
    y, x, h, w = decode.random_crop_window(tf.constant([48, 64]), (0.3, 1.0), (0.5, 2.0),
                                           SEED + i).numpy()
    assert 0 <= y and y + h <= 48 and 0 <= x and x + w <= 64
    if (y, x, h, w) == fallback:
      continue
    areas.append(h * w / (48 * 64))
    assert 0.3 <= areas[-1] <= 1.0, (i, h, w)
    # One pixel of rounding on either side of the aspect bounds.
    assert 0.5 * (h - 1) / h <= w / h <= 2.0 * (w + 1) / w, (i, h, w)
  assert len(areas) >= 90, 'the fallback should be rare'
  assert min(areas) < 0.45 and max(areas) > 0.85, (min(areas), max(areas))


def test_choose_ratio():
  assert int(decode.choose_ratio([256, 340], [112, 112])) == 1  # ratio 2
  assert int(decode.choose_ratio([200, 340], [112, 112])) == 0  # 100 < 112
  assert int(decode.choose_ratio([200, 340], [112, 112], max_upscale=1.25)) == 1
  assert int(decode.choose_ratio([1000, 1000], [100, 100])) == 3  # ratio 8
  # Crops smaller than the view are decoded at full scale (was index -1: switch_case's last
  # branch, 1/8 scale, for most 224-px crops of 256-px frames).
  assert int(decode.choose_ratio([150, 200], [224, 224], max_upscale=1.25)) == 0


def test_small_crop_is_decoded_at_full_scale():
  frames = _smooth_frames(2, 48, 64)
  out = decode.decode_crop_resize(_jpegs(frames), tf.constant([8, 8, 30, 40]), 64,
                                  decode.TRAIN_MAX_UPSCALE).numpy()
  want = tf.image.resize(frames[:, 8:38, 8:48].astype(np.float32), [64, 64]).numpy()
  assert np.abs(out - want).mean() < 3  # JPEG error only; 1/8 scale was ~4x coarser.


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


def _random_jpeg_clip(rng, t, h, w, chroma_downsampling):
  """Random smooth-ish frames (noise upsampled from a coarse grid), JPEG-encoded."""
  coarse = rng.uniform(0, 255, size=(t, h // 4, w // 4, 3)).astype(np.float32)
  frames = tf.image.resize(coarse, [h, w], method='bicubic') + rng.normal(0, 4, (t, h, w, 3))
  frames = tf.cast(tf.clip_by_value(frames, 0, 255), tf.uint8)
  return tf.stack([tf.io.encode_jpeg(f, quality=90, chroma_downsampling=chroma_downsampling)
                   for f in frames])


def _published_train_crop(jpegs, window, size, dct_method=''):
  """The published training crop: tf.io.decode_jpeg of every frame (full scale, TF's default
  DCT), the window cut out, tf.image.resize (bilinear) to size x size."""
  y, x, h, w = [int(v) for v in window]
  full = np.stack([tf.io.decode_jpeg(j, channels=3, dct_method=dct_method).numpy()
                   for j in jpegs.numpy()])
  return tf.image.resize(full[:, y:y + h, x:x + w], [size, size], method='bilinear').numpy()


@pytest.mark.parametrize('chroma_downsampling', [True, False])
def test_default_train_crop_is_the_published_full_decode_crop_resize(chroma_downsampling):
  """config.data.jpeg_decode='full' (the default): bit for bit the published full decode, crop
  and bilinear resize, for random windows of random 4:2:0 and 4:4:4 JPEG frames, views smaller
  and larger than the crop, RGB (TF's default DCT) and flow (INTEGER_ACCURATE)."""
  rng = np.random.RandomState(0)
  for trial in range(12):
    jpegs = _random_jpeg_clip(rng, 3, 96, 128, chroma_downsampling)
    seed = tf.constant([trial, 7], tf.int64)
    window = decode.random_crop_window(decode.jpeg_shape(jpegs[0]), (0.3, 1.0), (0.5, 2.0), seed)
    size = (24, 48, 112)[trial % 3]
    got = decode.decode_random_crop(jpegs, size, (0.3, 1.0), (0.5, 2.0), seed).numpy()
    np.testing.assert_array_equal(got, _published_train_crop(jpegs, window.numpy(), size))
    flow = decode.decode_train_crop(jpegs, window, size, 'full', decode.FLOW_DCT_METHOD).numpy()
    np.testing.assert_array_equal(
        flow, _published_train_crop(jpegs, window.numpy(), size, decode.FLOW_DCT_METHOD))


def _pillow_jpegs(rng, h, w):
  """One frame (colour waves, hard-edged boxes, noise: chroma changes at every scale) encoded as
  every JPEG kind the widened-window decode must hold for: {kind: bytes}."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  yy, xx = np.mgrid[:h, :w]
  img = np.stack([128 + 60 * np.sin(rng.uniform(0.02, 0.4) * yy + rng.uniform(0.02, 0.4) * xx + c)
                  for c in range(3)], -1) + rng.normal(0, 10, (h, w, 3))
  for _ in range(4):
    y0, x0 = rng.randint(0, h), rng.randint(0, w)
    img[y0:y0 + rng.randint(1, h), x0:x0 + rng.randint(1, w)] = rng.uniform(0, 255, 3)
  img = np.clip(img, 0, 255).astype(np.uint8)
  out = {}
  for subsampling, name in ((0, '444'), (1, '422'), (2, '420')):
    for progressive in (False, True):
      buf = io.BytesIO()
      Image.fromarray(img).save(buf, 'JPEG', quality=85, subsampling=subsampling,
                                progressive=progressive)
      out[name + ('_progressive' if progressive else '')] = buf.getvalue()
  buf = io.BytesIO()
  Image.fromarray(img).convert('L').save(buf, 'JPEG', quality=85)
  out['grey'] = buf.getvalue()
  return out


def _windows(rng, h, w, n):
  """The whole frame, a bottom-right corner, and random windows (1 px wide ones included)."""
  out = [(0, 0, h, w), (h - max(1, h // 3), w - max(1, w // 3), max(1, h // 3), max(1, w // 3))]
  for _ in range(n):
    hh, ww = rng.randint(1, h + 1), rng.randint(1, w + 1)
    out.append((rng.randint(0, h - hh + 1), rng.randint(0, w - ww + 1), hh, ww))
  return out


@pytest.mark.parametrize('h,w', [(64, 88), (37, 53)])
def test_widened_window_decode_is_the_whole_frame_decode_for_every_jpeg_kind(h, w):
  """'full' decodes a window widened by decode.WINDOW_MARGIN from a 16-px boundary: the same
  pixels as 'full_frame' (whole frame, then the cut) for 4:4:4, 4:2:2, 4:2:0, progressive and
  greyscale JPEGs, odd sizes, both DCT methods. Negative control: without the margin, the
  chroma-subsampled kinds differ at the window's bottom and right edges."""
  rng = np.random.RandomState(h)
  unwidened_differs = {}
  for kind, jpeg in _pillow_jpegs(rng, h, w).items():
    jpegs = tf.constant([jpeg, jpeg])
    for dct in (decode._DCT_METHOD, decode.FLOW_DCT_METHOD):  # pylint: disable=protected-access
      whole = decode.decode_full(jpegs, dct)
      for window in _windows(rng, h, w, 8):
        want = decode.crop(whole, tf.constant(window)).numpy()
        got = decode.decode_full_crop(jpegs, tf.constant(window), dct, 'full').numpy()
        np.testing.assert_array_equal(got, want, err_msg=f'{kind} {dct} {window}')
        outer = decode.exact_decode_window(tf.constant(window), tf.constant([h, w]), margin=0)
        plain = decode.cut(decode._decode_all(jpegs, outer, 1, dct), outer[:2],  # pylint: disable=protected-access
                           tf.constant(window)).numpy()
        unwidened_differs[kind] = unwidened_differs.get(kind, 0) + int(
            not np.array_equal(plain, want))
  assert unwidened_differs['444'] == unwidened_differs['grey'] == 0
  for kind in ('422', '420', '422_progressive', '420_progressive'):
    assert unwidened_differs[kind] > 0, (kind, unwidened_differs)


def test_covering_window_and_its_decode_serve_every_window():
  windows = [tf.constant([10, 40, 20, 8]), tf.constant([3, 50, 5, 30])]
  np.testing.assert_array_equal(decode.covering_window(windows).numpy(), [3, 40, 27, 40])
  jpegs = _random_jpeg_clip(np.random.RandomState(3), 2, 64, 96, True)
  frames, origin = decode.decode_for_windows(jpegs, windows, 'full')
  assert origin.numpy().tolist() == [0, 32]  # 16-px boundaries at least 2 px before.
  whole = decode.decode_full(jpegs)
  for window in windows:
    np.testing.assert_array_equal(decode.cut(frames, origin, window).numpy(),
                                  decode.crop(whole, window).numpy())


def test_reduced_scale_is_the_old_fast_path_and_misses_the_published_pixels():
  """'reduced_scale' is decode_and_crop_jpeg at libjpeg's reduced scale (the path before the
  default changed); negative control: on a large crop of a 4:2:0 frame, reduced to a 2x smaller
  view, it differs from the published pixels well past rounding, where 'full' is exact."""
  jpegs = _random_jpeg_clip(np.random.RandomState(1), 2, 256, 340, True)
  window = tf.constant([16, 20, 224, 300])  # 2x the 112-px view: libjpeg decodes at 1/2.
  assert int(decode.choose_ratio(window[2:], [112, 112], decode.TRAIN_MAX_UPSCALE)) == 1
  reduced = decode.decode_train_crop(jpegs, window, 112, 'reduced_scale').numpy()
  np.testing.assert_array_equal(
      reduced, decode.decode_crop_resize(jpegs, window, 112, decode.TRAIN_MAX_UPSCALE).numpy())
  published = _published_train_crop(jpegs, window.numpy(), 112)
  np.testing.assert_array_equal(decode.decode_train_crop(jpegs, window, 112).numpy(), published)
  diff = np.abs(reduced - published)
  print(f'reduced_scale vs published, 224x300 crop -> 112: mean {diff.mean():.2f}, '
        f'max {diff.max():.1f} (of 255)')
  assert diff.max() > 8 and diff.mean() > 0.3
  with pytest.raises(ValueError, match='config.data.jpeg_decode'):
    decode.decode_train_crop(jpegs, window, 112, 'fast')


def test_short_side_resize_as_published():
  assert decode.resized_short_side_shape([240, 320], 256).numpy().tolist() == [256, 341]
  assert decode.resized_short_side_shape([320, 240], 256).numpy().tolist() == [341, 256]
  jpegs = _jpegs(_smooth_frames(2))  # 48 x 64
  frames = decode.decode_resize_short_side(jpegs, 24).numpy()
  assert frames.shape == (2, 24, 32, 3) and frames.dtype == np.float32
  full = tf.stack([tf.io.decode_jpeg(j, channels=3) for j in jpegs])
  want = tf.cast(tf.image.resize(full, [24, 32]), tf.uint8).numpy()  # Truncated, as published.
  np.testing.assert_array_equal(frames, want)
  same = decode.decode_resize_short_side(jpegs, 48).numpy()  # Already the size: no resize.
  np.testing.assert_array_equal(same, full.numpy())


def test_spatial_crops_run_along_the_diagonal():
  x = tf.reshape(tf.range(2 * 40 * 50, dtype=tf.float32), [2, 40, 50, 1])
  crops = decode.spatial_crops(x, 32, 3).numpy()
  assert crops.shape == (3, 2, 32, 32, 1)
  for crop, (y0, x0) in zip(crops, [(0, 0), (4, 9), (8, 18)]):  # int(linspace(0, free, 3)).
    np.testing.assert_array_equal(crop, x[:, y0:y0 + 32, x0:x0 + 32])
  np.testing.assert_array_equal(decode.spatial_crops(x, 32, 1).numpy()[0], x[:, :32, :32])


def test_failed_crop_sampling_falls_back_to_the_padded_centre_square():
  # An aspect range no crop of this image can satisfy: every attempt fails.
  window = decode.random_crop_window(tf.constant([48, 64]), (0.9, 1.0), (10.0, 11.0), SEED)
  np.testing.assert_array_equal(window.numpy(), [16, 24, 16, 16])  # 48 - 2 * 16 = 16.


def test_flow_to_unit():
  out = decode.flow_to_unit(tf.constant([[[[0.0, 255.0, 0.0]]]])).numpy()
  np.testing.assert_allclose(out, [[[[-1.0, 1.0]]]])


# --- The published ops, as the published code calls them: the reference for every fast path ---

def _published_blur(x_TxHxWxC, sigma, kernel_size):
  """Two depthwise_conv2d calls (horizontal, then vertical), SAME zero padding."""
  radius = kernel_size // 2
  d = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  taps = tf.exp(-tf.pow(d, 2.0) / (2.0 * tf.pow(tf.cast(sigma, tf.float32), 2.0)))
  taps /= tf.reduce_sum(taps)
  channels = x_TxHxWxC.shape[-1]
  blur_h = tf.tile(tf.reshape(taps, [1, kernel_size, 1, 1]), [1, 1, channels, 1])
  blur_v = tf.tile(tf.reshape(taps, [kernel_size, 1, 1, 1]), [1, 1, channels, 1])
  x = tf.nn.depthwise_conv2d(x_TxHxWxC, blur_h, [1, 1, 1, 1], 'SAME')
  return tf.nn.depthwise_conv2d(x, blur_v, [1, 1, 1, 1], 'SAME')


def _published_jitter(x, brightness, saturation, contrast, hue):
  x = tf.image.adjust_brightness(x, brightness)
  x = tf.image.adjust_saturation(x, saturation)
  x = tf.image.adjust_contrast(x, contrast)
  x = tf.image.adjust_hue(x, hue)
  return tf.clip_by_value(x, 0.0, 1.0)


def _published_gray(x):
  return tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 1, 3])


def _published_chain(x, draw, aug, random_conv):
  """The published per-view chain on [0, 255] pixels, with our draws replayed."""
  x = tf.cast(x, tf.float32) * (1.0 / 255.0)
  if bool(draw.blur):
    x = _published_blur(x, draw.sigma, augment.blur_kernel_size(int(x.shape[2])))
  if bool(draw.flip):
    x = tf.image.flip_left_right(x)
  if bool(draw.color.jitter):
    x = _published_jitter(x, *draw.color.strengths)
  if bool(draw.color.gray):
    x = _published_gray(x)
  if random_conv:
    index, kernel_seed = augment.draw_random_conv(aug.rc_kernel_sizes, draw.rc_seed)
    kernel = augment.he_normal_kernel(int(aug.rc_kernel_sizes[int(index)]), 3, kernel_seed)
    x = tf.nn.conv2d(x, kernel, 1, 'SAME')
  return x


# --- Colour ---------------------------------------------------------------

COLOR_TOLERANCE = 2e-6  # Max |ours - tf.image| over random clips; measured 1.1e-6.


def test_saturation_and_hue_equal_tf_image_on_any_floats():
  """Inputs beyond [0, 1] (as after brightness), factors beyond the configured ranges, ties."""
  rng = np.random.RandomState(0)
  x = rng.uniform(-0.3, 1.3, size=(3, 17, 19, 3)).astype(np.float32)
  x[0, 0, :6] = [[0.5, 0.5, 0.2], [0.2, 0.5, 0.5], [0.5, 0.2, 0.5], [0.3, 0.3, 0.3],
                 [0.0, 0.0, 1.0], [-0.1, -0.2, -0.05]]  # Ties, grey, pure, all negative.
  planes = tf.unstack(tf.transpose(tf.constant(x), [3, 0, 1, 2]))
  stack = lambda p: tf.stack(p, -1).numpy()
  for factor in (0.0, 0.3, 0.6, 1.0, 1.4, 3.0):
    np.testing.assert_allclose(stack(augment.adjust_saturation(*planes, factor)),
                               tf.image.adjust_saturation(x, factor).numpy(), atol=COLOR_TOLERANCE)
  for delta in (-0.5, -0.2, -0.01, 0.0, 0.07, 0.2, 0.5):
    np.testing.assert_allclose(stack(augment.adjust_hue(*planes, delta)),
                               tf.image.adjust_hue(x, delta).numpy(), atol=COLOR_TOLERANCE)


def test_color_jitter_equals_tf_image_in_the_published_order():
  rng = np.random.RandomState(1)
  aug = _aug()
  worst = 0.0
  for _ in range(60):
    x = rng.uniform(0, 1, size=(2, 13, 11, 3)).astype(np.float32)
    strengths = [tf.constant(v, tf.float32) for v in (
        rng.uniform(-aug.brightness, aug.brightness), rng.uniform(*aug.saturation_range),
        rng.uniform(*aug.contrast_range), rng.uniform(-aug.hue, aug.hue))]
    ours = augment.color_jitter(x, *strengths).numpy()
    worst = max(worst, float(np.abs(ours - _published_jitter(x, *strengths).numpy()).max()))
  assert worst < COLOR_TOLERANCE, worst
  # The order matters: contrast before saturation gives another image.
  x = rng.uniform(0, 1, size=(2, 13, 11, 3)).astype(np.float32)
  swapped = tf.clip_by_value(tf.image.adjust_hue(tf.image.adjust_saturation(
      tf.image.adjust_contrast(x + 0.1, 0.6), 1.4), 0.2), 0, 1).numpy()
  assert np.abs(augment.color_jitter(x, 0.1, 1.4, 0.6, 0.2).numpy() - swapped).max() > 1e-3


def test_grayscale_is_tf_image_rgb_to_grayscale_tiled():
  x = np.random.RandomState(2).uniform(size=(2, 5, 6, 3)).astype(np.float32)
  # augment's greyscale path without a flip: no public wrapper, as only this test needs it alone.
  flip_gray = augment._flip_gray  # pylint: disable=protected-access
  np.testing.assert_allclose(flip_gray(x, tf.constant(False)).numpy(), _published_gray(x).numpy(),
                             atol=1e-6)


# --- Blur and random convolution ------------------------------------------

BLUR_TOLERANCE = 1e-6  # Max |ours - depthwise_conv2d| on [0, 1] inputs; measured 3.6e-7.


@pytest.mark.parametrize('kernel_size', [3, 11, 23])  # Views of 32, 112, 224 px.
def test_blur_equals_the_published_depthwise_convolutions(kernel_size):
  x = np.random.RandomState(kernel_size).uniform(0, 255, size=(2, 33, 35, 3)).astype(np.float32)
  for sigma in (0.1, 0.5, 0.99, 1.01, 1.79, 1.81, 2.0):  # Around skipped-tap cut-offs (5 sigma).
    ours = augment.gaussian_blur(x, sigma, kernel_size, 1.0 / 255.0).numpy()
    want = _published_blur(x / 255.0, sigma, kernel_size).numpy()
    np.testing.assert_allclose(ours, want, atol=BLUR_TOLERANCE, err_msg=f'sigma {sigma}')
  assert augment.blur_kernel_size(224) == 23 and augment.blur_kernel_size(112) == 11
  assert augment.blur_kernel_size(32) == 3 and augment.blur_kernel_size(40) == 5


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
def test_fft_convolution_equals_tf_nn_conv2d(shape, k):
  """Stated tolerance: 1e-4 absolute on [0, 1] inputs with unit-normal kernels (sums of up to
  363 products of size ~1)."""
  rng = np.random.RandomState(k + shape[1])
  x = rng.uniform(size=shape).astype(np.float32)
  kernel = rng.normal(size=(k, k, shape[-1], 3)).astype(np.float32)
  direct = tf.nn.conv2d(x, kernel, 1, 'SAME').numpy()
  np.testing.assert_allclose(augment.conv_same_fft(x, kernel).numpy(), direct, atol=1e-4)
  assert [augment._fft_length(n) for n in (116, 117, 121, 131)] == [120, 120, 125, 135]


def test_random_convolve_draws_every_published_kernel_size():
  # An impulse far from the border: the response's support is the drawn k x k.
  x = np.zeros((1, 25, 25, 3), np.float32)
  x[0, 12, 12, :] = 1.0
  sizes = set()
  for i in range(60):
    out = augment.random_convolve(x, _aug().rc_kernel_sizes, SEED + i).numpy()[0]
    rows = np.nonzero(np.abs(out).sum(axis=(1, 2)) > 1e-6)[0]
    sizes.add(int(rows.max() - rows.min() + 1))
  assert sizes == {1, 3, 5, 7, 9, 11}


def test_random_convolve_kernel_is_tf_he_normal():
  """VarianceScaling(2, fan_in, truncated_normal): std sqrt(2 / fan_in), cut at 2 / 0.8796 of it."""
  for k in (3, 5):
    fan_in = k * k * 3
    weights = np.concatenate([augment.he_normal_kernel(k, 3, SEED + i).numpy().ravel()
                              for i in range(300)])
    target = np.sqrt(2 / fan_in)
    assert abs(weights.std() / target - 1) < 0.03, (k, weights.std(), target)
    bound = 2 * target / 0.87962566103423978
    assert np.abs(weights).max() <= bound and np.abs(weights).max() > 0.95 * bound
  # The convolution uses exactly that kernel: an impulse returns its weights.
  x = np.zeros((1, 11, 11, 3), np.float32)
  x[0, 5, 5, 0] = 1.0
  index, kernel_seed = augment.draw_random_conv((5,), SEED)
  kernel = augment.he_normal_kernel(5, 3, kernel_seed).numpy()
  out = augment.random_convolve(x, (5,), SEED).numpy()[0, 3:8, 3:8]
  np.testing.assert_allclose(out, kernel[::-1, ::-1, 0], atol=1e-6)
  assert int(index) == 0


# --- The chain ------------------------------------------------------------

@pytest.mark.parametrize('size,random_conv', [(32, False), (40, True)])
def test_view_chain_equals_the_published_ops_with_the_same_draws(size, random_conv):
  """Scale -> blur -> flip -> jitter -> clip -> grey (-> random conv) with the published ops,
  our draws replayed: every fast path together stays within the tolerances above."""
  rng = np.random.RandomState(size)
  aug = _aug()
  seen = set()
  for i in range(24):
    clip = tf.constant(rng.randint(0, 256, size=(3, size, size, 3)), tf.float32)
    draw = augment.draw_view(aug, SEED + i)
    ours = augment.apply_view(clip, draw, aug, random_conv=random_conv).numpy()
    want = _published_chain(clip, draw, aug, random_conv).numpy()
    np.testing.assert_allclose(ours, want, atol=1e-4 if random_conv else 4e-6, err_msg=str(i))
    seen.add((bool(draw.flip), bool(draw.color.jitter), bool(draw.color.gray)))
  assert len(seen) >= 5  # Flip, jitter and grey each taken and skipped.


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
