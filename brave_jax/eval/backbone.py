"""Where an evaluated model's weights come from: a training workdir, a published .npy, or random init.

Every protocol (linear, fine-tuning, audio, kNN) starts from a `Source`: the
BraVe model (inference functions, built with no pmap axis), its parameters and
batch-norm state, and what produced them. Random init gives the baseline each
protocol's pretrained number is compared with; for frozen-feature protocols its
batch-norm statistics are re-estimated on data first (`calibrate_batch_norm`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np


RANDOM_INIT_SEED_OFFSET = 1_000_003  # random_init: PRNGKey(config.seed + this), not training's.
NARROW_ROOT = 'narrow_video_embedding'  # Haiku module root of the narrow (kept) backbone.
AUDIO_ROOT = 'broad_audio_embedding'  # Module root of the broad audio backbone.
BN_CALIBRATION_BATCHES = 20  # Eval batches that set a random-init backbone's BN statistics.


@dataclasses.dataclass
class Source:
  """A BraVe model with its weights and what they came from."""
  model: Any  # brave.Model, built with axis_name=None.
  model_config: ml_collections.ConfigDict
  broad_modalities: tuple[str, ...]
  params: Any
  state: Any
  step: int | None  # Training step of the checkpoint; None for published or random weights.
  kind: str  # 'workdir', 'published' or 'random_init'.

  def variables(self, root: str) -> tuple[Any, Any]:
    """(params, state) of one module root, e.g. NARROW_ROOT; all that root's embed function reads."""
    params, state = only_root((self.params, self.state), root)
    if not params:
      raise ValueError(f'the {self.kind} model has no {root!r} backbone (it was trained with '
                       f'broad modalities {self.broad_modalities})')
    return params, state


def only_root(tree: Any, root: str) -> Any:
  """The modules of Haiku params/state (or a tuple of them) under one module root."""
  if isinstance(tree, tuple):
    return tuple(only_root(t, root) for t in tree)
  return {k: v for k, v in tree.items() if k.split('/')[0] == root}


def embed_fn(model: Any, root: str = NARROW_ROOT) -> Callable[[Any, Any], Any]:
  """`(variables=(params, state), x) -> feats` of one backbone, for embeddings.compute_embeddings."""
  if root == NARROW_ROOT:
    fn = model.embed_narrow
  else:
    modality = root[len('broad_'):-len('_embedding')]
    if modality not in model.embed_broad:
      raise ValueError(f'the model has no {root!r} backbone (broad views: {sorted(model.embed_broad)})')
    fn = model.embed_broad[modality]

  def embed(variables, x):
    params, state = variables
    return fn(params, state, x)
  return embed


# ----------------------------------------------------------------------------- sources


def init_batch(config: ml_collections.ConfigDict,
               broad_modalities: Sequence[str] | None = None) -> dict[str, Any]:
  """A one-example batch of zeros shaped like the training batch, for model.init.

  `broad_modalities` (default config.data.broad_modalities): the views the
  model to initialise has, e.g. a published checkpoint's.
  """
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  shapes = pipeline.batch_shapes(config, broad_modalities)

  def zeros(shape):
    dtype = np.int32 if len(shape) == 0 else np.float32
    return np.zeros((1,) + tuple(shape), dtype)
  batch = jax.tree.map(zeros, shapes, is_leaf=lambda x: isinstance(x, tuple))
  batch['label'] = np.zeros((1,), np.int32)
  return batch


def build_model(config: ml_collections.ConfigDict) -> Any:
  """The BraVe model of `config` with inference functions (no pmap axis)."""
  from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
  return brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name=None)


def restore_latest(config: ml_collections.ConfigDict, workdir: str,
                   model: Any) -> tuple[Any, Any, int]:
  """(params, state, step) of the newest checkpoint in `workdir/checkpoints` (train.loop's)."""
  from brave_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  from brave_jax.train import loop  # pylint: disable=g-import-not-at-top
  from brave_jax.train import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(os.path.abspath(os.path.expanduser(workdir)), loop.CHECKPOINT_SUBDIR)
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f'no checkpoints in {ckpt_dir}: is --workdir a training workdir '
                            '(python -m brave_jax.main --workdir=...)?')
  ckpt = checkpointing.Checkpointer(ckpt_dir, keep=max(1, int(config.training.keep_checkpoints)),
                                    async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f'no finished checkpoint in {ckpt_dir}; train longer or check the path')
    # The restore template only needs shapes: trace init on one device, allocate zeros.
    init = step_lib.make_init(model, optimizer_lib.make_optimizer(config), jax.local_devices()[:1])
    batch = jax.tree.map(lambda x: x[None], init_batch(config))
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0), batch)
    template = jax.tree.map(lambda s: np.zeros(s.shape[1:], s.dtype), shapes)
    restored, _ = ckpt.restore(template, step)
  finally:
    ckpt.close()
  return restored.params, restored.state, int(np.asarray(restored.step))


def from_workdir(config: ml_collections.ConfigDict, workdir: str) -> Source:
  """The latest checkpoint of a training workdir (config: that run's, e.g. its config.json)."""
  model = build_model(config)
  params, state, step = restore_latest(config, workdir, model)
  return Source(model, config.model, tuple(config.data.broad_modalities), params, state, step,
                'workdir')


def from_published(path: str) -> Source:
  """A published BraVe checkpoint (.npy); its own config says which backbones it holds."""
  from brave_jax import published  # pylint: disable=g-import-not-at-top
  loaded = published.load(path)
  return Source(loaded.model, loaded.model_config, tuple(loaded.broad_modalities), loaded.params,
                loaded.state, None, 'published')


def random_init(config: ml_collections.ConfigDict, like: Source | None = None) -> Source:
  """An untrained model (seed config.seed + RANDOM_INIT_SEED_OFFSET): every protocol's baseline.

  The architecture is the config's, or `like`'s (e.g. a published checkpoint's,
  whose broad views the config need not share). Its batch-norm moving
  statistics are Haiku's initial ones; frozen-feature protocols must
  re-estimate them first (`calibrate_batch_norm`).
  """
  if like is None:
    model, model_config = build_model(config), config.model
    modalities = tuple(config.data.broad_modalities)
  else:
    model, model_config, modalities = like.model, like.model_config, tuple(like.broad_modalities)
  rng = jax.random.PRNGKey(int(config.seed) + RANDOM_INIT_SEED_OFFSET)
  params, state = jax.jit(model.init)(rng, init_batch(config, modalities))  # like's views, if any.
  return Source(model, model_config, modalities, jax.device_get(params), jax.device_get(state),
                None, 'random_init')


def from_train_state(config: ml_collections.ConfigDict, train_state: Any) -> Source:
  """The model training just ended with (device 0's replica of the replicated TrainState)."""
  from brave_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  params, state = step_lib.unreplicate((train_state.params, train_state.state))
  step = int(step_lib.unreplicate(train_state.step))
  return Source(build_model(config), config.model, tuple(config.data.broad_modalities), params,
                state, step, 'workdir')


def calibrate_batch_norm(config: ml_collections.ConfigDict, source: Source,
                         batches: Iterable[Mapping[str, np.ndarray]],
                         input_key: str | tuple[str, ...] = 'video',
                         num_batches: int = BN_CALIBRATION_BATCHES) -> Source:
  """The source with BN moving statistics re-estimated on eval inputs (params unchanged).

  A fresh model's BN state is Haiku's zero-initialised moving averages
  (variance 0), so inference-mode features of an untrained network grow by
  ~1/sqrt(eps) per layer and overflow float32. Only model.loss updates BN
  state, so it runs on batches holding the real `input_key` input ('video':
  the narrow view, 'audio': the broad audio view) and zeros for every other
  view (whose statistics the evaluated backbone never reads).
  """
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  shapes = pipeline.batch_shapes(config)
  loss_fn = jax.jit(source.model.loss)
  rng = jax.random.PRNGKey(0)
  state, rows = source.state, None
  keys = (input_key,) if isinstance(input_key, str) else tuple(input_key)
  for i, batch in enumerate(batches):
    if i >= num_batches:
      break
    inputs = {k: np.asarray(batch[k]) for k in keys}
    rows = rows or len(inputs[keys[0]])
    if len(inputs[keys[0]]) != rows:  # A partial last batch would recompile; skip it.
      continue
    full = {'narrow': {'video': np.zeros((rows,) + shapes['narrow']['video'], np.float32)},
            'broad': {m: np.zeros((rows,) + tuple(s), np.float32)
                      for m, s in shapes['broad'].items()},
            'label': np.zeros((rows,), np.int32)}
    for key, x in inputs.items():
      if key == 'video':
        full['narrow']['video'] = x
      else:
        full['broad'][key] = x
    _, (state, _) = loss_fn(source.params, state, rng, full)
  if rows is None:
    raise ValueError('calibrate_batch_norm: no batches; check the evaluation shards')
  return dataclasses.replace(source, state=jax.device_get(state))


def load(config: ml_collections.ConfigDict, *, workdir: str | None = None,
         checkpoint: str | None = None, random: bool = False) -> Source:
  """One of: a workdir's latest checkpoint, a published .npy, or random init of config's model."""
  if random:
    return random_init(config)
  if bool(workdir) == bool(checkpoint):
    raise ValueError('give exactly one of --workdir or --checkpoint (or --random_init)')
  return from_published(checkpoint) if checkpoint else from_workdir(config, workdir)
