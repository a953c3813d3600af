"""BraVe's regression loss between a view's prediction and another view's projection."""
from __future__ import annotations

import jax
import jax.numpy as jnp

NORM_EPS = 1e-5  # Row norms below this are clamped (docs/design.md, "Heads and loss").


def _unit_rows(x_BxK: jax.Array) -> jax.Array:
  # sqrt(max(|x|^2, eps^2)) == max(|x|, eps), but with a finite gradient at x = 0.
  sq_norm_Bx1 = jnp.sum(jnp.square(x_BxK), axis=-1, keepdims=True)
  return x_BxK * jax.lax.rsqrt(jnp.maximum(sq_norm_Bx1, NORM_EPS ** 2))


def normalized_regression_loss(pred_BxK: jax.Array, target_BxK: jax.Array) -> jax.Array:
  """0.5 * ||h/|h| - z/|z|||^2 summed over features, mean over the batch; no gradient to z.

  Equals 1 - cos(h, z): 0 for equal directions, 2 for opposite ones. Computed in f32.
  """
  pred_BxK = pred_BxK.astype(jnp.float32)
  target_BxK = jax.lax.stop_gradient(target_BxK.astype(jnp.float32))
  diff_BxK = _unit_rows(pred_BxK) - _unit_rows(target_BxK)
  return jnp.mean(0.5 * jnp.sum(jnp.square(diff_BxK), axis=-1))
