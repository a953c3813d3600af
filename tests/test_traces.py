"""The training and evaluation steps compile once: no silent recompilation step after step.

A retrace costs seconds on CPU and minutes at full size on a TPU, and nothing
else would notice it (the numbers stay right). chex.assert_max_traces counts
how often JAX traces the wrapped function; each test also shows that a change
that does force a retrace (a different batch shape) is caught.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brave_jax import config_base
from brave_jax.data import augment_device
from brave_jax.data import pipeline
from brave_jax.eval import embeddings as embeddings_lib
from brave_jax.models import losses
from brave_jax.train import optimizer as optimizer_lib
from brave_jax.train import step as step_lib
import train_test_double

GLOBAL_BATCH = 4


def _update_counting_traces(num_devices: int):
  """The real pmapped update around the test-double model, its loss allowed one trace."""
  c = config_base.base_config()
  c.training.update(batch_size=GLOBAL_BATCH, num_steps=10)
  c.optimizer.update(warmup_steps=1)
  optimizer, schedule = optimizer_lib.make_optimizer(c), optimizer_lib.make_schedule(c)
  model = train_test_double.build_test_double_model('i')
  counted = train_test_double.TestDoubleModel(init=model.init,
                                              loss=chex.assert_max_traces(model.loss, n=1))
  devices = jax.devices()[:num_devices]
  first = step_lib.shard_batch(train_test_double.make_global_batch(0, GLOBAL_BATCH), num_devices)
  ts = step_lib.make_init(model, optimizer, devices)(jax.random.PRNGKey(0), first)
  return ts, step_lib.make_pmapped_update(counted, optimizer, 'i', devices, schedule)


@pytest.mark.parametrize('num_devices', [1, 2])
def test_training_step_traces_once_over_many_steps(num_devices):
  chex.clear_trace_counter()
  ts, update = _update_counting_traces(num_devices)
  for step in range(4):  # The state comes back donated, with a new step counter, every step.
    batch = train_test_double.make_global_batch(step, GLOBAL_BATCH)
    ts, _ = update(ts, step_lib.shard_batch(batch, num_devices))
  assert int(step_lib.unreplicate(ts.step)) == 4
  # Negative control: a batch of another size is a new program, and the counter says so.
  bigger = train_test_double.make_global_batch(9, 2 * GLOBAL_BATCH)
  with pytest.raises(AssertionError, match='traced'):
    update(ts, step_lib.shard_batch(bigger, num_devices))


@pytest.mark.parametrize('num_devices', [1, 2])
def test_device_augmentation_step_traces_once_over_many_steps(num_devices):
  """augment_on='device': the batch carries new draws and waveforms every step (other flips,
  greys, sigmas, sounds), yet augmentation, log-mel and model stay one program: the draws and
  waveforms are data, with fixed shapes."""
  chex.clear_trace_counter()
  c = config_base.base_config()
  c.training.update(batch_size=GLOBAL_BATCH, num_steps=10)
  c.optimizer.update(warmup_steps=1)
  c.data.augment_on = 'device'
  c.data.broad.num_frames = 4  # 0.64 s of audio: a small log-mel, the same program.
  optimizer, schedule = optimizer_lib.make_optimizer(c), optimizer_lib.make_schedule(c)
  model = train_test_double.build_test_double_model('i')
  counted = train_test_double.TestDoubleModel(init=model.init,
                                              loss=chex.assert_max_traces(model.loss, n=1))
  prepare = augment_device.pretraining_batch_preparer(c)
  devices = jax.devices()[:num_devices]

  def batch(step, size=GLOBAL_BATCH):
    return step_lib.shard_batch(
        train_test_double.make_global_batch(step, size, draws=True,
                                            audio_samples=pipeline.audio_num_samples(c)),
        num_devices)
  ts = step_lib.make_init(model, optimizer, devices, prepare_batch=prepare)(
      jax.random.PRNGKey(0), batch(0))
  update = step_lib.make_pmapped_update(counted, optimizer, 'i', devices, schedule,
                                        prepare_batch=chex.assert_max_traces(prepare, n=1))
  for step in range(4):
    ts, _ = update(ts, batch(step))
  assert int(step_lib.unreplicate(ts.step)) == 4
  with pytest.raises(AssertionError, match='traced'):  # Negative control, as above.
    update(ts, batch(9, 2 * GLOBAL_BATCH))


def _embed_counting_traces():
  w_CxD = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)

  def embed(video_BxTxHxWx3):
    return jnp.mean(video_BxTxHxWx3, axis=(1, 2, 3)) @ w_CxD
  return chex.assert_max_traces(embed, n=1)


def _clips(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [{'video': rng.uniform(size=(n, 2, 4, 4, 3)).astype(np.float32),
           'label': np.zeros(n, np.int64)} for n in sizes]


@pytest.mark.parametrize('num_devices', [1, 2])
def test_embedding_loop_compiles_once_across_a_partial_last_batch(num_devices):
  """Train then test split, each ending in a short batch: one trace (rows are padded)."""
  chex.clear_trace_counter()
  embed = _embed_counting_traces()
  for sizes in ((4, 4, 3), (4, 1)):
    out = embeddings_lib.compute_embeddings(embed, iter(_clips(sizes)), num_devices=num_devices,
                                            pad_to=4, show_progress=False)
    assert out['feats'].shape == (sum(sizes), 5)
  # Negative control: without pad_to, a first batch smaller than the next forces a second trace.
  chex.clear_trace_counter()
  embed = _embed_counting_traces()
  with pytest.raises(AssertionError, match='traced'):
    embeddings_lib.compute_embeddings(embed, iter(_clips((2, 4))), num_devices=num_devices,
                                      show_progress=False)


class LossVariantsTest(chex.TestCase):
  """The BraVe regression loss is the same number eagerly, jitted and pmapped (fake_pmap)."""

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_normalized_regression_loss_is_one_minus_cosine(self):
    rng = np.random.default_rng(0)
    pred_BxK = rng.normal(size=(6, 8)).astype(np.float32)
    target_BxK = rng.normal(size=(6, 8)).astype(np.float32)
    cos_B = np.sum(pred_BxK * target_BxK, -1) / (
        np.linalg.norm(pred_BxK, axis=-1) * np.linalg.norm(target_BxK, axis=-1))

    @self.variant
    def loss(pred, target):
      return losses.normalized_regression_loss(pred, target)

    # with_pmap broadcasts the arguments to every device and returns the first device's output.
    got = float(loss(pred_BxK, target_BxK))
    np.testing.assert_allclose(got, np.mean(1 - cos_B), rtol=1e-5)
    shuffled = float(loss(pred_BxK, target_BxK[::-1]))  # Control: other pairs, another loss.
    assert abs(shuffled - got) > 1e-2


def test_cross_replica_update_runs_under_fake_pmap():
  """chex.fake_pmap runs the pmapped update as a vmap: same numbers as the real pmap over 2
  devices, so cross-replica code can be stepped through with a debugger on one device."""
  ts, update = _update_counting_traces(2)
  batch = step_lib.shard_batch(train_test_double.make_global_batch(0, GLOBAL_BATCH), 2)
  ts_real, m_real = update(ts, batch)
  chex.clear_trace_counter()
  ts2, _ = _update_counting_traces(2)
  with chex.fake_pmap():
    c = config_base.base_config()
    c.training.update(batch_size=GLOBAL_BATCH, num_steps=10)
    c.optimizer.update(warmup_steps=1)
    model = train_test_double.build_test_double_model('i')
    fake_update = step_lib.make_pmapped_update(
        model, optimizer_lib.make_optimizer(c), 'i', jax.devices()[:2],
        optimizer_lib.make_schedule(c))
    # The raw pmapped function: the CPU compile-options wrapper needs a real pmap's .lower().
    ts_fake, m_fake = fake_update.pmapped(ts2, batch)
  chex.assert_trees_all_close(step_lib.unreplicate(m_real), step_lib.unreplicate(m_fake),
                              rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(step_lib.unreplicate(ts_real.params),
                              step_lib.unreplicate(ts_fake.params), rtol=1e-5, atol=1e-6)
