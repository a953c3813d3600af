"""The backbone batch norm's written-out gradient (model.bn_backward='analytic') against
autodiff of hk.BatchNorm ('autodiff', as published): outputs, moving averages and gradients,
on one device and across two replicas, with a control that a wrong gradient is caught."""
import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brave_jax.models import batch_norm_grad
from brave_jax.models import tsm_resnet


def _loss_fn(backward: str, axis_name: str | None):
  def loss(x, weights):
    bn = tsm_resnet.BatchNorm(backward=backward, **tsm_resnet.make_bn_config(
        cross_replica_axis=axis_name))
    y = jax.nn.relu(bn(x, is_training=True))
    return jnp.sum(y * weights)
  return hk.transform_with_state(loss)


def _grads(backward: str, x, weights, axis_name=None):
  model = _loss_fn(backward, axis_name)
  params, state = model.init(jax.random.PRNGKey(0), x, weights)
  params = jax.tree_util.tree_map(lambda p: p + 0.3, params)  # Not the ones/zeros init.

  def loss(p, x):
    out, new_state = model.apply(p, state, None, x, weights)
    return out, new_state
  (value, new_state), (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      params, x)
  return value, new_state, g_params, g_x


def _assert_close(a, b, rtol):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    scale = float(np.max(np.abs(y))) + 1e-12
    assert float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) <= rtol * scale


def test_analytic_gradient_equals_autodiff_on_one_device():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(1.5, 2.0, (6, 5, 4, 8)).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=(6, 5, 4, 8)).astype(np.float32))
  analytic = _grads('analytic', x, weights)
  autodiff = _grads('autodiff', x, weights)
  assert float(analytic[0]) == pytest.approx(float(autodiff[0]), rel=1e-6)
  _assert_close(analytic[1], autodiff[1], 1e-6)  # The moving averages: the same statistics.
  _assert_close(analytic[2:], autodiff[2:], 1e-5)


def test_analytic_gradient_equals_autodiff_across_replicas():
  """Cross-replica statistics: each replica's gradient needs the other's sums too."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(0.5, 1.0, (2, 3, 4, 4, 6)).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=(2, 3, 4, 4, 6)).astype(np.float32))
  results = {}
  for backward in ('analytic', 'autodiff'):
    run = jax.pmap(functools.partial(_grads, backward, axis_name='i'), axis_name='i')
    results[backward] = run(x, weights)
  _assert_close(results['analytic'][1:], results['autodiff'][1:], 1e-5)
  # The control: without the other replica's sums the gradient is measurably wrong.
  local = jax.pmap(functools.partial(_grads, 'analytic', axis_name=None))(x, weights)
  gap = np.max(np.abs(np.asarray(local[3]) - np.asarray(results['autodiff'][3])))
  assert gap > 1e-3 * np.max(np.abs(np.asarray(results['autodiff'][3])))


def test_a_wrong_gradient_is_caught(monkeypatch):
  """The control for the comparison above: drop the x_hat term and it fails."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(4, 3, 3, 5)).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=(4, 3, 3, 5)).astype(np.float32))
  original = batch_norm_grad._backward  # pylint: disable=protected-access

  def wrong(eps, axes, axis_name, groups, residuals, cotangents):
    d_x, d_scale, d_offset = original(eps, axes, axis_name, groups, residuals, cotangents)
    return d_x * 1.01, d_scale, d_offset
  wrong_normalize = jax.custom_vjp(batch_norm_grad.normalize.fun, nondiff_argnums=(3, 4, 5, 6))
  wrong_normalize.defvjp(batch_norm_grad._forward, wrong)  # pylint: disable=protected-access
  monkeypatch.setattr(batch_norm_grad, 'normalize', wrong_normalize)
  with pytest.raises(AssertionError):
    _assert_close(_grads('analytic', x, weights)[3], _grads('autodiff', x, weights)[3], 1e-5)


def test_unknown_backward_is_refused():
  with pytest.raises(ValueError, match='config.model.bn_backward'):
    hk.transform(lambda x: tsm_resnet.BatchNorm(backward='fast', **tsm_resnet.make_bn_config())(
        x, True)).init(jax.random.PRNGKey(0), jnp.ones((2, 3)))


def test_the_statistics_outputs_have_their_gradient_too():
  """normalize's mean and var (for the moving averages) are differentiable outputs as well."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(5, 3, 2, 4)).astype(np.float32))
  scale, offset = jnp.full((1, 1, 1, 4), 1.3), jnp.full((1, 1, 1, 4), 0.2)
  w_mean, w_var = (jnp.asarray(rng.normal(size=(1, 1, 1, 4)).astype(np.float32)) for _ in range(2))

  def loss(norm, x):
    out, mean, var = norm(x)
    return jnp.sum(out ** 2) + jnp.sum(mean * w_mean) + jnp.sum(var * w_var)

  def haiku_form(x):  # hk.BatchNorm's arithmetic, left to autodiff.
    mean = jnp.mean(x, (0, 1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x), (0, 1, 2), keepdims=True) - jnp.square(mean)
    return (x - mean) * (scale * jax.lax.rsqrt(var + 1e-5)) + offset, mean, var
  analytic = jax.grad(lambda x: loss(
      lambda y: batch_norm_grad.normalize(y, scale, offset, 1e-5, (0, 1, 2), None, None), x))(x)
  autodiff = jax.grad(lambda x: loss(haiku_form, x))(x)
  _assert_close(analytic, autodiff, 1e-5)
  without = jax.grad(lambda x: jnp.sum(haiku_form(x)[0] ** 2))(x)  # Control: stats' terms matter.
  assert float(jnp.max(jnp.abs(without - autodiff))) > 1e-3 * float(jnp.max(jnp.abs(autodiff)))
