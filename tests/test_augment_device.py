"""The device (jax.numpy) view chain equals the host (TF) one, op by op and whole, given the draws.

Each comparison uses the tolerance the host op meets against the published op
(tests/test_data_decode_augment.py), and a negative control: another draw moves
the output by far more than that tolerance, so a comparison that passes is not
passing on inputs the op leaves alone.
"""
import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from brave_jax import config_base
from brave_jax.data import augment
from brave_jax.data import augment_device

SEED = tf.constant([1, 2], tf.int64)
# The host fast paths' tolerances against the published ops (test_data_decode_augment.py).
BLUR_TOLERANCE = 1e-6
COLOR_TOLERANCE = 2e-6
GRAY_TOLERANCE = 1e-6
CHAIN_TOLERANCE = 4e-6
RANDOM_CONV_TOLERANCE = 1e-4
FAR = 1e-3  # What a different draw must move some output by, at least.


def _aug():
  return config_base.base_config().data.augment


def _seed(i) -> tf.Tensor:
  """Clip i's seed; i as int32 whether a Python int or tf.data's int64 (fold_in hashes the dtype)."""
  return tf.random.experimental.stateless_fold_in(SEED, tf.cast(i, tf.int32))


def _shipped_draws(aug, num_clips: int, random_conv: bool) -> dict[str, np.ndarray]:
  """Per-clip draws of seeds _seed(0..n-1), batched by tf.data as the input pipeline would."""
  ds = tf.data.Dataset.range(num_clips).map(
      lambda i: augment_device.draw_view(aug, _seed(i), random_conv=random_conv))
  batch = next(iter(ds.batch(num_clips)))
  return jax.tree.map(lambda t: t.numpy(), batch)


class OpsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(3, 11, 23)  # Views of 32, 112, 224 px.
  def test_blur_equals_host(self, kernel_size):
    x = np.random.RandomState(kernel_size).uniform(0, 255, (2, 33, 35, 3)).astype(np.float32)
    blur = self.variant(functools.partial(augment_device.gaussian_blur, kernel_size=kernel_size,
                                          scale=1.0 / 255.0))
    for sigma in (0.1, 0.5, 1.01, 1.81, 2.0):
      ours = np.asarray(blur(x, np.float32(sigma)))
      chex.assert_shape(ours, x.shape)
      host = augment.gaussian_blur(x, sigma, kernel_size, 1.0 / 255.0).numpy()
      np.testing.assert_allclose(ours, host, atol=BLUR_TOLERANCE, err_msg=f'sigma {sigma}')
    other = augment.gaussian_blur(x, 1.0, kernel_size, 1.0 / 255.0).numpy()
    assert np.abs(np.asarray(blur(x, np.float32(0.5))) - other).max() > FAR

  @chex.variants(with_jit=True, without_jit=True)
  def test_saturation_and_hue_equal_host_on_any_floats(self):
    """Inputs beyond [0, 1] (as after brightness), factors beyond the configured ranges, ties."""
    rng = np.random.RandomState(0)
    x = rng.uniform(-0.3, 1.3, size=(3, 17, 19, 3)).astype(np.float32)
    x[0, 0, :6] = [[0.5, 0.5, 0.2], [0.2, 0.5, 0.5], [0.5, 0.2, 0.5], [0.3, 0.3, 0.3],
                   [0.0, 0.0, 1.0], [-0.1, -0.2, -0.05]]
    host_planes = tf.unstack(tf.transpose(tf.constant(x), [3, 0, 1, 2]))
    saturation = self.variant(lambda x, f: jnp.stack(
        augment_device.adjust_saturation(x[..., 0], x[..., 1], x[..., 2], f), -1))
    hue = self.variant(lambda x, d: jnp.stack(
        augment_device.adjust_hue(x[..., 0], x[..., 1], x[..., 2], d), -1))
    for factor in (0.0, 0.6, 1.0, 1.4, 3.0):
      host = tf.stack(augment.adjust_saturation(*host_planes, factor), -1).numpy()
      np.testing.assert_allclose(saturation(x, np.float32(factor)), host, atol=COLOR_TOLERANCE)
    for delta in (-0.5, -0.2, 0.0, 0.07, 0.5):
      host = tf.stack(augment.adjust_hue(*host_planes, delta), -1).numpy()
      np.testing.assert_allclose(hue(x, np.float32(delta)), host, atol=COLOR_TOLERANCE)
    host = tf.stack(augment.adjust_hue(*host_planes, 0.1), -1).numpy()
    assert np.abs(np.asarray(hue(x, np.float32(0.15))) - host).max() > FAR

  @chex.variants(with_jit=True, without_jit=True)
  def test_color_jitter_equals_host_in_the_published_order(self):
    rng = np.random.RandomState(1)
    aug = _aug()
    jitter = self.variant(augment_device.color_jitter)
    for _ in range(10):
      x = rng.uniform(0, 1, size=(2, 13, 11, 3)).astype(np.float32)
      strengths = [np.float32(v) for v in (
          rng.uniform(-aug.brightness, aug.brightness), rng.uniform(*aug.saturation_range),
          rng.uniform(*aug.contrast_range), rng.uniform(-aug.hue, aug.hue))]
      ours = np.asarray(jitter(x, *strengths))
      np.testing.assert_allclose(ours, augment.color_jitter(x, *strengths).numpy(),
                                 atol=COLOR_TOLERANCE)
      assert ours.min() >= 0.0 and ours.max() <= 1.0
    # Contrast before saturation (another order) gives another image.
    swapped = tf.clip_by_value(tf.image.adjust_hue(tf.image.adjust_saturation(
        tf.image.adjust_contrast(x + 0.1, 0.6), 1.4), 0.2), 0, 1).numpy()
    ours = np.asarray(jitter(x, *[np.float32(v) for v in (0.1, 1.4, 0.6, 0.2)]))
    assert np.abs(ours - swapped).max() > FAR

  @chex.variants(with_jit=True, without_jit=True)
  def test_flip_and_grayscale_equal_host(self):
    x = np.random.RandomState(2).uniform(size=(2, 5, 6, 3)).astype(np.float32)
    flip = self.variant(augment_device.random_flip)
    np.testing.assert_array_equal(flip(x, np.bool_(True)), augment.flip_left_right(x).numpy())
    np.testing.assert_array_equal(flip(x, np.bool_(False)), x)
    assert np.abs(np.asarray(flip(x, np.bool_(True))) - x).max() > FAR
    gray = np.asarray(self.variant(augment_device.to_grayscale)(x))
    host_gray = augment._flip_gray(x, tf.constant(False)).numpy()  # pylint: disable=protected-access
    np.testing.assert_allclose(gray, host_gray, atol=GRAY_TOLERANCE)
    assert np.abs(gray - x).max() > FAR

  def test_draws_are_the_host_draws_and_kernels_every_published_size(self):
    """Same TF stateless calls as augment.draw_view; the kernel is he_normal_kernel's, centred."""
    aug = _aug()
    sizes = aug.rc_kernel_sizes
    seen = set()
    for i in range(40):
      host = augment.draw_view(aug, _seed(i))
      ours = augment_device.draw_view(aug, _seed(i), random_conv=True)
      want = (host.blur, host.sigma, host.flip, host.color.jitter, *host.color.strengths,
              host.color.gray)
      names = ('blur', 'sigma', 'flip', 'jitter', 'brightness', 'saturation', 'contrast', 'hue',
               'gray')
      for name, b in zip(names, want):
        np.testing.assert_array_equal(ours[name].numpy(), b.numpy(), err_msg=name)
      index, weights_seed = augment.draw_random_conv(sizes, host.rc_seed)
      k = sizes[int(index)]
      pad = (max(sizes) - k) // 2
      kernel = ours['rc_kernel'].numpy()
      chex.assert_shape(kernel, (max(sizes), max(sizes), 3, 3))
      np.testing.assert_array_equal(kernel[pad:pad + k, pad:pad + k],
                                    augment.he_normal_kernel(k, 3, weights_seed).numpy())
      inner = np.zeros_like(kernel, bool)
      inner[pad:pad + k, pad:pad + k] = True
      assert not kernel[~inner].any()
      seen.add(k)
    assert seen == set(sizes)
    assert 'rc_kernel' not in augment_device.draw_view(aug, SEED)

  @chex.variants(with_jit=True, without_jit=True)
  def test_random_convolve_equals_host(self):
    aug = _aug()
    rng = np.random.RandomState(3)
    x = rng.uniform(size=(2, 24, 26, 3)).astype(np.float32)
    gray = np.repeat(x[..., :1], 3, axis=-1)
    convolve = self.variant(augment_device.random_convolve)
    draws = _shipped_draws(aug, 16, random_conv=True)
    for i in range(16):
      rc_seed = augment.draw_view(aug, _seed(i)).rc_seed
      kernel = draws['rc_kernel'][i]
      np.testing.assert_allclose(
          convolve(x, kernel), augment.random_convolve(x, aug.rc_kernel_sizes, rc_seed).numpy(),
          atol=RANDOM_CONV_TOLERANCE, err_msg=str(i))
      np.testing.assert_allclose(  # The host's one-channel shortcut for grey clips.
          convolve(gray, kernel),
          augment.random_convolve(gray, aug.rc_kernel_sizes, rc_seed, is_gray=True).numpy(),
          atol=RANDOM_CONV_TOLERANCE, err_msg=str(i))
    other = augment.random_convolve(x, aug.rc_kernel_sizes, _seed(99)).numpy()
    assert np.abs(np.asarray(convolve(x, draws['rc_kernel'][0])) - other).max() > FAR


class ChainTest(chex.TestCase):

  @chex.variants(with_jit=True)  # The ops above run without jit too.
  @parameterized.parameters((32, False), (40, True))
  def test_view_chain_equals_augment_clip(self, size, random_conv):
    """Batched over clips, each with its own draws, against the host chain from the same seed;
    the same clips with the draws passed round by one clip are far from it."""
    aug = _aug()
    num_clips = 12
    rng = np.random.RandomState(size)
    clips = rng.randint(0, 256, size=(num_clips, 3, size, size, 3)).astype(np.float32)
    draws = _shipped_draws(aug, num_clips, random_conv)
    apply = self.variant(augment_device.apply_views)
    ours = np.asarray(apply(clips, draws))
    chex.assert_shape(ours, clips.shape)
    others = np.asarray(apply(clips, jax.tree.map(lambda a: np.roll(a, 1, axis=0), draws)))
    tolerance = RANDOM_CONV_TOLERANCE if random_conv else CHAIN_TOLERANCE
    for i in range(num_clips):
      host = augment.augment_clip(clips[i], aug, _seed(i), random_conv=random_conv).numpy()
      np.testing.assert_allclose(ours[i], host, atol=tolerance, err_msg=str(i))
      assert np.abs(others[i] - host).max() > FAR, i
    for name in ('flip', 'jitter', 'gray'):  # Each taken and skipped.
      assert set(draws[name].tolist()) == {False, True}, name

  def test_uint8_clips_under_pmap_equal_augment_clip(self):
    """uint8 frames as [devices, clips per device, ...], as the training step would see them."""
    devices = jax.local_device_count()
    per_device = 2
    aug = _aug()
    n = devices * per_device
    clips = np.random.RandomState(8).randint(0, 256, size=(n, 2, 32, 32, 3)).astype(np.uint8)
    draws = _shipped_draws(aug, n, random_conv=True)
    split = lambda a: a.reshape((devices, per_device) + a.shape[1:])
    out = jax.pmap(augment_device.apply_views)(split(clips), jax.tree.map(split, draws))
    chex.assert_shape(out, (devices, per_device, 2, 32, 32, 3))
    out = np.asarray(out).reshape(clips.shape)
    for i in range(n):
      host = augment.augment_clip(clips[i].astype(np.float32), aug, _seed(i), random_conv=True)
      np.testing.assert_allclose(out[i], host.numpy(), atol=RANDOM_CONV_TOLERANCE, err_msg=str(i))
