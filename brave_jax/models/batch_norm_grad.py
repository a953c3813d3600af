"""Training-mode batch norm with its gradient written out, instead of left to autodiff.

Autodiff of `hk.BatchNorm` differentiates the mean and the mean of squares separately, so
the backward pass of every normalisation makes more reductions over the whole activation
than the two it needs (the sums of dy and of dy * x_hat). Batch norm's reductions were most
of a CPU step's time before they ran as YNNPACK reductions (bench/README.md: 44 % in
XLA:CPU's reduce-windows; step.CPU_COMPILER_OPTIONS), and on this CPU the written-out gradient runs a batch norm + ReLU forward and backward 1.2-1.8x faster.
The forward is Haiku's arithmetic, op for op; the gradient is the same function of the
inputs, equal to autodiff's to float rounding (tests/test_batch_norm_grad.py: within 1e-5,
on one device and across replicas; the published training-step goldens pass with it).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp


def _cross_replica_mean(x: jax.Array, axis_name: str | None,
                        groups: Sequence[Sequence[int]] | None) -> jax.Array:
  return jax.lax.pmean(x, axis_name=axis_name, axis_index_groups=groups) if axis_name else x


def _stats(x: jax.Array, axes: tuple[int, ...], axis_name: str | None,
           groups: Sequence[Sequence[int]] | None) -> tuple[jax.Array, jax.Array]:
  """(mean, var) as hk.BatchNorm computes them: E[x], E[x^2] - E[x]^2, across replicas."""
  mean = _cross_replica_mean(jnp.mean(x, axes, keepdims=True), axis_name, groups)
  mean_of_squares = _cross_replica_mean(jnp.mean(jnp.square(x), axes, keepdims=True),
                                        axis_name, groups)
  return mean, mean_of_squares - jnp.square(mean)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def normalize(x: jax.Array, scale: jax.Array, offset: jax.Array, eps: float,
              axes: tuple[int, ...], axis_name: str | None,
              groups: tuple[tuple[int, ...], ...] | None
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(normalised x, batch mean, batch var) of a training step; mean and var feed the EMAs."""
  return _forward(x, scale, offset, eps, axes, axis_name, groups)[0]


def _forward(x, scale, offset, eps, axes, axis_name, groups):
  mean, var = _stats(x, axes, axis_name, groups)
  rsqrt = jax.lax.rsqrt(var + jax.lax.convert_element_type(eps, var.dtype))
  out = (x - mean) * (scale * rsqrt) + offset
  return (out, mean, var), (x, mean, rsqrt, scale)


def _backward(eps, axes, axis_name, groups, residuals, cotangents):
  del eps
  x, mean, rsqrt, scale = residuals
  d_out, d_mean, d_var = cotangents
  x_hat = (x - mean) * rsqrt
  d_offset = jnp.sum(d_out, axes, keepdims=True)
  d_scale = jnp.sum(d_out * x_hat, axes, keepdims=True)
  count = 1
  for a in axes:
    count *= x.shape[a]
  # Means over every replica's batch of d(out)/d(x_hat) and of it times x_hat, less the
  # cotangents of the statistics themselves (outputs for the moving averages; zero in a
  # training step): d_mean reaches x as d_mean / count, d_var as 2 d_var (x - mean) / count,
  # and x - mean = x_hat / rsqrt. One all-reduce each, rsqrt being the same on every replica.
  g_mean = _cross_replica_mean((scale * d_offset - d_mean / rsqrt) / count, axis_name, groups)
  g_x_hat = _cross_replica_mean((scale * d_scale - 2.0 * d_var / jnp.square(rsqrt)) / count,
                                axis_name, groups)
  d_x = rsqrt * (scale * d_out - g_mean - x_hat * g_x_hat)
  return (d_x, jnp.reshape(d_scale, scale.shape).astype(scale.dtype),
          jnp.reshape(d_offset, scale.shape).astype(scale.dtype))


normalize.defvjp(_forward, _backward)
