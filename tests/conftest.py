"""Test-wide setup: two simulated CPU devices, so pmap code is tested as it runs on a pod.

XLA reads the flag once, when the backend starts, so it must be set before any
test imports jax.
"""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

TESTDATA = pathlib.Path(__file__).parent / 'testdata'
REPO_ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def cli_logging():
  """brave_jax's log lines printed as the command-line tools print them, so capsys sees them;
  records still reach the root logger, so caplog sees them too."""
  from brave_jax import log  # pylint: disable=g-import-not-at-top
  log.configure_cli(propagate=True)


@pytest.fixture
def testdata_dir() -> pathlib.Path:
  return TESTDATA


def write_clip_shards(directory: pathlib.Path, clips, prefix: str = 'train',
                      num_shards: int = 2) -> str:
  """`clips` (dmvr_format.Clip) written as `num_shards` DMVR shards under `directory`; its path."""
  from brave_jax.data import dmvr_format  # pylint: disable=g-import-not-at-top
  dmvr_format.write_shards([dmvr_format.encode_clip(c) for c in clips], str(directory), prefix,
                           num_shards)
  return str(directory)


def config_path(name: str, variant: str | None = 'tiny') -> str:
  """'configs/<name>.py:<variant>', absolute, for `config_base.load` and CLIs."""
  path = REPO_ROOT / 'configs' / f'{name}.py'
  return f'{path}:{variant}' if variant else str(path)


@pytest.fixture
def tiny_va_config():
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  return config_base.load(config_path('brave_rgb_audio', 'tiny'))


@pytest.fixture
def tiny_vv_config():
  from brave_jax import config_base  # pylint: disable=g-import-not-at-top
  return config_base.load(config_path('brave_rgb_rgb', 'tiny'))


# The fast tier (`pytest tests -m "not slow"`, for everyday work) leaves out whole files whose
# tests start, kill or join processes or compile full-size models, and the single tests that took
# over 5 s in a full run on the 2-core machine (2026-12-06, measured with --durations=0 under a
# load of about 5, docs/testing.md); the full suite (`pytest tests`, the README's command 2 and
# CI) runs everything. A new slow test goes in SLOW_TESTS or carries @pytest.mark.slow.
SLOW_FILES = frozenset({
    'test_faults.py',  # kill -9 and restart of real training processes.
    'test_multihost.py',  # Two processes joined by jax.distributed (gloo), each compiling.
    'test_published_train_step.py',  # Full-size V/A and V/V steps against the golden.
    'test_resume_data.py',  # A training process killed and resumed mid-epoch.
})

SLOW_TESTS = {  # file: test ids (class::name, without parameters), matched as prefixes.
    'test_augment_device.py': (
        'ChainTest::test_uint8_clips_under_pmap_equal_augment_clip',
        'ChainTest::test_view_chain_equals_augment_clip_(40,',
        'OpsTest::test_blur_equals_host_(11)__with_jit',
        'OpsTest::test_blur_equals_host_(23)__with_jit',
        'OpsTest::test_color_jitter_equals_host_in_the_published_order__without_jit',
        'OpsTest::test_random_convolve_equals_host__with_jit',
    ),
    'test_augment_on_device.py': (
        'test_bad_rows_are_refilled_with_their_draws',
        'test_device_augmented_train_batch_equals_host_batch',
        'test_uint8_frames_are_the_float32_frames_rounded',
    ),
    'test_checkpointing.py': (
        'test_roundtrip_is_exact',
    ),
    'test_convert.py': (
        'test_csv_input_with_relative_paths_and_parallel_workers',
    ),
    'test_data_faults.py': (
        'test_bad_record_budget',
        'test_shard_folder_with_other_files_reads_only_shards',
        'test_shards_of_undecodable_records_stop_training_quickly',
    ),
    'test_data_pipeline.py': (
        'test_bad_records_are_skipped_and_counted',
        'test_eval_test_mode_groups_crops_of_a_video',
        'test_hosts_read_disjoint_clips_that_together_cover_the_dataset',
        'test_independent_minimal_writer_is_read',
        'test_train_batch_structure_vv_and_per_host_batch',
        'test_train_is_deterministic_given_seed_and_start_step_moves_it',
    ),
    'test_eval_audio.py': (
        'test_run_folds_end_to_end',
    ),
    'test_eval_cli.py': (
        'test_cli_knn_protocol_on_tiny_shards',
        'test_cli_published_checkpoint_matches_workdir',
        'test_cli_workdir_on_tiny_shards',
        'test_evaluate_after_training_compares_random_init',
    ),
    'test_eval_finetune.py': (
        'test_finetune_augments_on_the_device_as_on_the_host',
        'test_finetune_end_to_end_keeps_a_frozen_backbone',
        'test_finetune_resumes_through_the_cli',
        'test_loop_initial_variables_replace_fresh_ones',
    ),
    'test_eval_knn.py': (
        'test_loop_runs_hooks_and_writes_their_scalars',
        'test_monitor_reports_top1_and_draws_curve',
    ),
    'test_eval_retrieval.py': (
        'test_cli_ranks_cut_clips_with_random_init_and_chance_beside',
    ),
    'test_flow.py': (
        'test_pipeline_yields_every_broad_modality_rc_always_convolved',
        'test_vfa_training_step_reports_four_loss_terms',
    ),
    'test_loop.py': (
        'test_crash_then_resume_is_bit_identical',
        'test_device_augmentation_trains_and_resumes_bit_identical',
        'test_non_finite_loss_raises_and_keeps_last_checkpoint',
        'test_resume_with_another_augment_on_is_refused',
        'test_says_it_is_compiling_before_the_first_step',
        'test_stop_and_resume_is_bit_identical',
    ),
    'test_models.py': (
        'test_bfloat16_with_remat_is_close_to_float32',
        'test_cross_replica_batch_norm_shares_statistics_over_different_data',
        'test_embed_functions_use_inference_batch_norm',
        'test_model_outside_pmap_equals_the_model_inside_pmap',
        'test_model_runs_outside_pmap',
        'test_model_under_pmap_matches_single_device',
        'test_remat_keeps_names_and_loss',
    ),
    'test_published.py': (
        'test_manifest_shaped_checkpoint_loads_and_embeds_video_and_audio',
    ),
    'test_published_forward.py': (
        'test_published_checkpoint_gives_the_published_embeddings',
    ),
    'test_tf_startup.py': (
        'test_banners_printed_once_at_most',
    ),
    'test_tfds.py': (
        'test_linear_cli_end_to_end_on_tfds',
    ),
    'test_traces.py': (
        'test_cross_replica_update_runs_under_fake_pmap',
        'test_device_augmentation_step_traces_once_over_many_steps',
        'test_training_step_traces_once_over_many_steps',
    ),
    'test_train_step.py': (
        'test_two_devices_match_one_device',
    ),
}


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: minutes on 2 CPU cores; left out of the fast tier '
                          '(-m "not slow"), always in the full suite')


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    test_id = item.nodeid.split('::', 1)[-1].split('[')[0]
    if item.path.name in SLOW_FILES or any(
        test_id.startswith(prefix) for prefix in SLOW_TESTS.get(item.path.name, ())):
      item.add_marker(pytest.mark.slow)
