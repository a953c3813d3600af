"""LARS (or AdamW) with the published BraVe schedule, decay mask and predictor LR multiplier.

Parameters are addressed by their path 'module/sub/name' (Haiku's 'module/sub'
key joined with the parameter name), so masks and multipliers are plain regexes
and string tests that a reader can check against the param manifest.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from brave_jax import config_base

PyTree = Any

# Leaf names that are biases or normalisation parameters (Linear/Conv 'b', BN/LN 'scale'/'offset').
_NO_DECAY_NAMES = ('b', 'scale', 'offset')


def param_path(key_path: Sequence[Any]) -> str:
  """'module/sub/name' for a jax key path; the string masks and LR rules match against."""
  parts = []
  for k in key_path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(k.name)
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:
      parts.append(str(k))
  return '/'.join(parts)


def map_with_path(fn, tree: PyTree) -> PyTree:
  """tree_map whose function receives ('module/sub/name', leaf)."""
  return jax.tree_util.tree_map_with_path(lambda kp, x: fn(param_path(kp), x), tree)


def is_decayed(path: str) -> bool:
  """False for biases and normalisation params: decaying them only hurts (published recipe)."""
  parts = path.split('/')
  if parts[-1] in _NO_DECAY_NAMES:
    return False
  return not any('norm' in p for p in parts)  # Also covers 'batch_norm', 'layer_norm'.


def decay_mask(params: PyTree) -> PyTree:
  """Bool tree: True where weight decay AND the LARS trust ratio apply."""
  return map_with_path(lambda path, _: is_decayed(path), params)


def lr_multiplier_tree(params: PyTree,
                       rules: Sequence[tuple[str, float]]) -> PyTree:
  """Float tree of per-parameter LR multipliers: the first regex found in the path wins."""
  compiled = [(re.compile(pattern), float(mult)) for pattern, mult in rules]

  def multiplier(path: str, _) -> float:
    for pattern, mult in compiled:
      if pattern.search(path):
        return mult
    return 1.0

  return map_with_path(multiplier, params)


def scale_by_multipliers(rules: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
  """Scales each update by its path's multiplier; applied LAST so LARS's trust ratio keeps it."""
  rules = tuple((str(p), float(m)) for p, m in rules)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    mults = lr_multiplier_tree(updates, rules)
    updates = jax.tree.map(
        lambda u, m: u if m == 1.0 else u * jnp.asarray(m, u.dtype), updates, mults)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to the batch-scaled peak, then cosine to end_learning_rate."""
  o = config.optimizer
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config_base.peak_learning_rate(config),
      warmup_steps=int(o.warmup_steps),
      decay_steps=int(config.training.num_steps),  # Total length, warm-up included.
      end_value=float(o.end_learning_rate))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer named by config.optimizer.name, with masks and LR multipliers."""
  o = config.optimizer
  schedule = make_schedule(config)
  if o.name == 'lars':
    base = optax.lars(
        learning_rate=schedule,
        weight_decay=float(o.weight_decay),
        weight_decay_mask=decay_mask,
        trust_coefficient=float(o.trust_coefficient),
        trust_ratio_mask=decay_mask,
        momentum=float(o.momentum),
        nesterov=bool(o.nesterov))
  elif o.name == 'adamw':
    base = optax.adamw(
        learning_rate=schedule,
        b1=float(o.adam_b1),
        b2=float(o.adam_b2),
        eps=float(o.adam_eps),
        weight_decay=float(o.weight_decay),
        mask=decay_mask)
  else:
    raise config_base.ConfigError(
        f'config.optimizer.name: unknown optimizer {o.name!r}; '
        f'choose from {config_base.OPTIMIZERS}')
  rules = tuple(tuple(r) for r in (o.lr_multipliers or ()))
  if not rules:
    return base
  return optax.chain(base, scale_by_multipliers(rules))
