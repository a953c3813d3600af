"""The normalised regression loss: its values at known angles, symmetry, and no gradient to targets."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from brave_jax.models import losses


def _rows(seed, shape=(4, 8)):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_zero_for_equal_directions_and_two_for_opposite():
  a_BxK = _rows(0)
  chex.assert_trees_all_close(losses.normalized_regression_loss(a_BxK, 3.0 * a_BxK), 0.0, atol=1e-6)
  chex.assert_trees_all_close(losses.normalized_regression_loss(a_BxK, -0.5 * a_BxK), 2.0, atol=1e-6)


def test_equals_one_minus_cosine_averaged_over_batch():
  a_BxK, b_BxK = _rows(0), _rows(1)
  cos_B = jnp.sum(a_BxK * b_BxK, -1) / (jnp.linalg.norm(a_BxK, axis=-1) * jnp.linalg.norm(b_BxK, axis=-1))
  loss = losses.normalized_regression_loss(a_BxK, b_BxK)
  chex.assert_shape(loss, ())
  chex.assert_trees_all_close(loss, jnp.mean(1.0 - cos_B), atol=1e-6)


def test_symmetric():
  a_BxK, b_BxK = _rows(0), _rows(1)
  chex.assert_trees_all_close(losses.normalized_regression_loss(a_BxK, b_BxK),
                              losses.normalized_regression_loss(b_BxK, a_BxK), atol=1e-6)


def test_no_gradient_into_target_but_some_into_prediction():
  a_BxK, b_BxK = _rows(0), _rows(1)
  grad_pred, grad_target = jax.grad(losses.normalized_regression_loss, argnums=(0, 1))(a_BxK, b_BxK)
  chex.assert_trees_all_equal(grad_target, jnp.zeros_like(b_BxK))
  assert float(jnp.abs(grad_pred).sum()) > 0


def test_zero_rows_are_clamped_not_nan():
  zeros_BxK = jnp.zeros((2, 8))
  loss, grad = jax.value_and_grad(losses.normalized_regression_loss)(zeros_BxK, _rows(0, (2, 8)))
  chex.assert_tree_all_finite((loss, grad))
  # A zero prediction is 0 after clamping: the loss is 0.5 * |z/|z||^2 = 0.5.
  np.testing.assert_allclose(loss, 0.5, atol=1e-6)


def test_bfloat16_inputs_give_float32_loss():
  a_BxK, b_BxK = _rows(0), _rows(1)
  loss = losses.normalized_regression_loss(a_BxK.astype(jnp.bfloat16), b_BxK.astype(jnp.bfloat16))
  chex.assert_type(loss, jnp.float32)
  chex.assert_trees_all_close(loss, losses.normalized_regression_loss(a_BxK, b_BxK), atol=2e-2)
