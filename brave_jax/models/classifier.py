"""One BraVe backbone, dropout and a linear head, trained end to end: the fine-tuning model.

The backbone is BraVe's own module (`brave.Embedding`, e.g. root
`narrow_video_embedding`), so a pretrained checkpoint's backbone parameters
slot in by name; the head is the root `classifier`. `build_classifier`
returns `init` and `loss` with the signatures train/step.py's pmapped update
expects (cross-replica batch norm on `axis_name`, bf16 via
config.model.compute_dtype), plus inference-mode `logits`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import optax

from brave_jax.models import brave

HEAD_ROOT = 'classifier'  # Module root of the linear head.


class Classifier(NamedTuple):
  """Pure functions of a backbone + head; batches are {input_key: x, 'label': int [B]}."""
  init: Callable[[jax.Array, Mapping[str, Any]], tuple[hk.Params, hk.State]]
  loss: Callable[..., tuple[jax.Array, tuple[hk.State, dict[str, jax.Array]]]]
  logits: Callable[[hk.Params, hk.State, jax.Array], jax.Array]
  backbone_root: str


BackboneFn = Callable[[jax.Array, bool, 'str | None'], jax.Array]
"""(x, is_training, axis_name) -> feats_BxD, called inside a Haiku transform."""


def build_classifier(model_config: ml_collections.ConfigDict, num_classes: int, *,
                     dropout_rate: float, view: str = 'narrow', modality: str = 'video',
                     input_key: str = 'video', axis_name: str | None = None,
                     backbone: BackboneFn | None = None) -> Classifier:
  """Backbone features -> dropout (training only) -> linear head with zero-initialised weights.

  A zero head starts every class at the same score, so the first updates move
  the head rather than send large random gradients into a pretrained backbone.
  `backbone` replaces BraVe's own (`brave.Embedding` of `view`/`modality`),
  e.g. a small stand-in in tests; its module root must stay `backbone_root`.
  """
  if num_classes < 2:
    raise ValueError(f'build_classifier: need at least 2 classes, got {num_classes}')
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f'config.finetune.dropout_rate must be in [0, 1), got {dropout_rate}')

  def braves_backbone(x: jax.Array, is_training: bool, axis: str | None) -> jax.Array:
    with brave.precision(model_config.compute_dtype):
      return brave.Embedding(model_config, view, modality, axis)(x, is_training)
  backbone = backbone or braves_backbone

  def forward(x: jax.Array, is_training: bool, axis: str | None) -> jax.Array:
    feats_BxD = backbone(x, is_training, axis).astype(jnp.float32)
    if is_training and dropout_rate > 0:
      feats_BxD = hk.dropout(hk.next_rng_key(), dropout_rate, feats_BxD)
    return hk.Linear(num_classes, w_init=jnp.zeros, name=HEAD_ROOT)(feats_BxD)

  train = hk.transform_with_state(lambda x: forward(x, True, axis_name))
  local = hk.transform_with_state(lambda x: forward(x, True, None))
  infer = hk.transform_with_state(lambda x: forward(x, False, None))

  def init(rng: jax.Array, batch: Mapping[str, Any]) -> tuple[hk.Params, hk.State]:
    return local.init(rng, batch[input_key])

  def loss(params: hk.Params, state: hk.State, rng: jax.Array, batch: Mapping[str, Any]):
    logits_BxK, new_state = train.apply(params, state, rng, batch[input_key])
    labels_B = batch['label']
    total = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B))
    top1 = jnp.mean((jnp.argmax(logits_BxK, axis=-1) == labels_B).astype(jnp.float32))
    return total, (new_state, {'loss': total, 'top1': top1})

  def logits(params: hk.Params, state: hk.State, x: jax.Array) -> jax.Array:
    out, _ = infer.apply(params, state, None, x)
    return out

  return Classifier(init=init, loss=loss, logits=logits,
                    backbone_root=brave.embedding_name(view, modality))
