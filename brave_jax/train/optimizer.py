"""LARS (or AdamW) with the published BraVe schedule, masks and predictor multiplier.

Two arrangements (config.optimizer.variant, docs/fidelity.md): 'published' is
what the published code does and what trained its models; 'corrected' is what
it appears to have meant. Parameters are addressed by their path
'module/sub/name' (Haiku's 'module/sub' key joined with the parameter name), so
masks and multipliers are plain regexes and string tests that a reader can
check against the param manifest.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from brave_jax import config_base

PyTree = Any

VARIANTS = config_base.OPTIMIZER_VARIANTS


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


def is_bias_or_norm(path: str) -> bool:
  """The published predicate: a bias (leaf 'b') or a parameter of a module whose name has 'norm'."""
  module, _, name = path.rpartition('/')
  return name == 'b' or 'norm' in module


def decay_mask(params: PyTree, variant: str = 'published') -> PyTree:
  """Bool tree, True where LARS weight decay and trust ratio (AdamW: weight decay) APPLY.

  'published': True for biases and norm parameters only, as the published code
  passes its bias/norm predicate as the optax mask (where True means apply), so
  conv and linear weights get neither. 'corrected': the opposite, what the
  predicate's name intended: weights decayed and trust-ratio scaled, biases and
  norms not.
  """
  _check_variant(variant)
  if variant == 'published':
    return map_with_path(lambda path, _: is_bias_or_norm(path), params)
  return map_with_path(lambda path, _: not is_bias_or_norm(path), params)


def lr_multiplier_tree(params: PyTree,
                       rules: Sequence[tuple[str, float]]) -> PyTree:
  """Float tree of per-parameter multipliers: the product over every regex that matches the path
  from its start (re.match), as the published `_scale_by_module_name`; 1.0 where none does."""
  compiled = [(re.compile(pattern), float(mult)) for pattern, mult in rules]

  def multiplier(path: str, _) -> float:
    m = 1.0
    for pattern, mult in compiled:
      if pattern.match(path):
        m *= mult
    return m

  return map_with_path(multiplier, params)


def scale_by_multipliers(rules: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
  """Multiplies each leaf by its path's multiplier (`lr_multiplier_tree`).

  Placed first in the chain it scales gradients (published); placed last it
  scales the final updates, i.e. it is a per-parameter learning-rate factor (corrected).
  """
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


def with_scaled_gradients(base: optax.GradientTransformation,
                          rules: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
  """`base` fed gradients already multiplied by `rules` (the published placement), same state."""
  if not rules:
    return base
  scale = scale_by_multipliers(rules)

  def update_fn(grads, state, params=None):
    grads, _ = scale.update(grads, optax.EmptyState())
    return base.update(grads, state, params)

  return optax.GradientTransformation(base.init, update_fn)


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to the batch-scaled peak, then cosine to end_learning_rate."""
  o = config.optimizer
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config_base.peak_learning_rate(config),
      warmup_steps=int(o.warmup_steps),
      decay_steps=int(config.training.num_steps),  # Total length, warm-up included.
      end_value=float(o.end_learning_rate))


def _check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise config_base.ConfigError(
        f'config.optimizer.variant: must be one of {VARIANTS}, got {variant!r}')


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer named by config.optimizer.name, arranged as config.optimizer.variant says.

  'published' (default): chain(multipliers on the GRADIENTS, lars/adamw) with the
  published masks (decay and trust ratio only on biases and norms). Under LARS the
  x10 on predictor gradients is then a 10x learning rate for the predictor's
  linear weights (no trust ratio there), while on its biases and norm parameters
  the trust ratio cancels it (only their decay term becomes relatively 10x
  weaker); under AdamW it is nearly a no-op (Adam divides by the gradient's scale).
  'corrected': chain(lars/adamw, multipliers on the UPDATES) with decay and trust
  ratio on weights only: the x10 is a true 10x learning rate for the predictor.
  """
  o = config.optimizer
  variant = str(o.get('variant', 'published'))
  _check_variant(variant)
  mask = functools.partial(decay_mask, variant=variant)
  schedule = make_schedule(config)
  if o.name == 'lars':
    base = optax.lars(
        learning_rate=schedule,
        weight_decay=float(o.weight_decay),
        weight_decay_mask=mask,
        trust_coefficient=float(o.trust_coefficient),
        trust_ratio_mask=mask,
        momentum=float(o.momentum),
        nesterov=bool(o.nesterov))
  elif o.name == 'adamw':
    base = optax.adamw(
        learning_rate=schedule,
        b1=float(o.adam_b1),
        b2=float(o.adam_b2),
        eps=float(o.adam_eps),
        weight_decay=float(o.weight_decay),
        mask=mask)
  else:
    raise config_base.ConfigError(
        f'config.optimizer.name: unknown optimizer {o.name!r}; '
        f'choose from {config_base.OPTIMIZERS}')
  rules = tuple(tuple(r) for r in (o.lr_multipliers or ()))
  if not rules:
    return base
  on_gradients, on_updates = (rules, ()) if variant == 'published' else ((), rules)
  # One state layout, (base state, empty), for both variants: either restores the other's
  # checkpoints (and those written before the variants existed).
  return optax.chain(with_scaled_gradients(base, on_gradients), scale_by_multipliers(on_updates))
