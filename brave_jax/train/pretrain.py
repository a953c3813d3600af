"""BraVe pretraining: the config's `training` section as the loop's settings, then the loop.

Fine-tuning (eval/finetune.py) is the loop's other caller, with its own section.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import ml_collections

from brave_jax import config_base
from brave_jax.train import loop
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib


def settings(config: ml_collections.ConfigDict, stop_at_step: int | None = None) -> loop.Settings:
  """config.training's length and intervals, and config.seed."""
  t = config.training
  return loop.Settings(
      num_steps=int(t.num_steps), batch_size=int(t.batch_size), log_every=int(t.log_every),
      checkpoint_every=int(t.checkpoint_every), keep_checkpoints=int(t.keep_checkpoints),
      plot_every=int(t.plot_every), seed=int(config.seed), stop_at_step=stop_at_step)


def train(config: ml_collections.ConfigDict, workdir: str,
          make_batch_iterator: loop.BatchIteratorFn, model: Any = None,
          stop_at_step: int | None = None, *,
          hooks: Sequence[loop.Hook] = ()) -> step_lib.TrainState:
  """Pretrains to config.training.num_steps (or stop_at_step), resuming from workdir.

  `model` defaults to the BraVe model of config.model (tests pass a small
  double); the optimizer and schedule are config.optimizer's. With
  config.data.augment_on='device' the batches must carry the views' draws
  (data/pipeline.py ships them, and the broad audio as its waveform) and the step augments them
  and makes the audio's log-mel before the model. See loop.train
  for the iterator's contract and the errors raised.
  """
  config_base.validate(config, jax.process_count(), jax.local_device_count())
  from brave_jax.data import augment_device  # pylint: disable=g-import-not-at-top
  if model is None:
    from brave_jax.models import brave  # pylint: disable=g-import-not-at-top
    model = brave.build_model(config.model, tuple(config.data.broad_modalities), axis_name='i')
  return loop.train(settings(config, stop_at_step), workdir, config,
                    make_batch_iterator=make_batch_iterator, model=model,
                    optimizer=optimizer_lib.make_optimizer(config),
                    schedule=optimizer_lib.make_schedule(config), hooks=hooks,
                    prepare_batch=augment_device.pretraining_batch_preparer(config))
