"""brave_jax.plan: TPU topology planning.

The arithmetic, topology names, cache keys, batch search and CLI errors are tested
without libtpu (with a fake compile function). The tests that compile the real
`:tiny` step for a TPU topology need libtpu (`pip install -e .[tpu-plan]`) and are
skipped without it: installing libtpu into the main test environment could change
JAX's backend selection for every other test.
"""
import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, config_path
from brave_jax import config_base
from brave_jax import errors
from brave_jax import plan

GIB = 1024**3
VERSIONS = {'jax': '0.10.2', 'jaxlib': '0.10.2', 'libtpu': '0.0.42.1'}


def _has_libtpu() -> bool:
  try:
    importlib.metadata.version('libtpu')
    return True
  except importlib.metadata.PackageNotFoundError:
    return False


needs_libtpu = pytest.mark.skipif(
    not _has_libtpu(), reason="libtpu not installed (pip install -e '.[tpu-plan]' in a separate "
    'virtualenv; CI leaves it out so JAX backend selection stays as it is for other tests)')


# --- Chip table and topology names ----------------------------------------------------------

def test_chip_table_names_its_sources_and_counts_per_chip():
  for name, chip in plan.CHIPS.items():
    assert chip.name == name
    assert f'"TPU {name}" page' in chip.source and 'Cloud TPU docs' in chip.source
    assert chip.hbm_gib > 0 and chip.bf16_tflops > 0 and chip.tensorcores in (1, 2)
    assert f'{chip.bf16_tflops:g} TFLOP/s' in chip.source
  # Two TensorCores per chip: v4 must be asked for megacore to get one device per chip.
  assert plan.CHIPS['v4'].chip_config_name == 'megacore'
  assert plan.CHIPS['v5e'].tensorcores == 1 and plan.CHIPS['v5p'].tensorcores == 2


@pytest.mark.parametrize('name, chips', [('v5e:2x2', 4), ('v5e:4x8', 32), ('v4:2x2x1', 4),
                                         ('v4:2x2x2', 8), ('v5p:4x4x4', 64), ('v6e:2x2', 4)])
def test_topology_names_parse_to_chip_counts(name, chips):
  topology = plan.parse_topology(name)
  assert topology.chips == chips and topology.chip is plan.CHIPS[name.split(':')[0]]


@pytest.mark.parametrize('name, says', [
    ('v5e', 'not a TPU topology name'),
    ('v5e-8', 'not a TPU topology name'),
    ('v3:2x2', "unknown TPU generation 'v3'"),
    ('v5e:2x2x1', 'v5e topologies have 2 positive dimensions'),
    ('v4:2x2', 'v4 topologies have 3 positive dimensions'),
    ('v5p:0x2x2', 'positive dimensions'),
])
def test_wrong_topology_names_fail_listing_the_accepted_forms(name, says):
  with pytest.raises(plan.PlanError) as info:
    plan.parse_topology(name)
  message = str(info.value)
  assert says in message and plan.TOPOLOGY_EXAMPLES in message and '\n' not in message
  assert isinstance(info.value, errors.UsageError)


# --- Arithmetic -----------------------------------------------------------------------------

def test_throughput_and_host_cores_arithmetic():
  # 4e12 FLOPs per chip step at 40 % of 197 TFLOP/s: 4e12 / 78.8e12 s = 50.76 ms.
  t = plan.throughput(4e12, 8, 197, 0.4)
  assert t['step_s'] == pytest.approx(4e12 / 78.8e12)
  assert t['clips_per_s'] == pytest.approx(8 * 78.8e12 / 4e12)  # 157.6
  assert plan.host_cores(157.6, 71.8) == pytest.approx(11.31568)
  with pytest.raises(ValueError):
    plan.throughput(4e12, 8, 197, 1.5)


def test_peak_is_arguments_plus_outputs_less_aliased_plus_temporaries():
  memory = {'argument': 5, 'output': 4, 'alias': 4, 'temp': 10, 'generated_code': 100}
  assert plan.peak_bytes(memory) == 15


def test_resnet50_hand_count_matches_the_published_size():
  forward, stem = plan.resnet50_conv_flops(224, 224, 3)
  assert stem == 2 * 112 * 112 * 7 * 7 * 3 * 64
  # ResNet-50 at 224 px is the well-known ~4.1 G multiply-adds (8.2 GFLOP).
  assert 8.0e9 < forward < 8.3e9
  assert plan.training_flops(forward, stem) == pytest.approx(3 * forward - stem)
  # Without the zero border: a 3x3 'SAME' conv over n positions has 3n - 2 taps inside.
  assert plan._taps(56, 3, 1, count_padding=False) == (3 * 56 - 2, 56)
  assert plan._taps(7, 1, 1, count_padding=False) == (7, 7)
  inside, inside_stem = plan.resnet50_conv_flops(224, 224, 3, count_padding=False)
  assert 0.95 * forward < inside < forward and inside_stem < stem


def test_pipeline_cost_prefers_the_flag_then_the_measured_table():
  assert plan.pipeline_cost('configs/brave_rgb_audio.py', None)[0] == pytest.approx(
      plan.PIPELINE_CPU_MS_PER_CLIP['brave_rgb_audio'][0])
  assert plan.pipeline_cost('configs/brave_rgb_audio.py', 12.5) == (
      12.5, '--pipeline_cpu_ms_per_clip')
  ms, why = plan.pipeline_cost('configs/brave_rgb_rc.py', None)
  assert ms is None and '--pipeline_cpu_ms_per_clip' in why
  assert plan.pipeline_cost('configs/brave_rgb_audio.py:tiny', None)[0] is None
  with pytest.raises(plan.PlanError):
    plan.pipeline_cost('configs/brave_rgb_audio.py', 0.0)


# --- Largest batch search -------------------------------------------------------------------

@pytest.mark.parametrize('threshold', [0, 1, 2, 7, 8, 13, 100, 1024, 5000])
@pytest.mark.parametrize('start', [1, 8, 1024])
@pytest.mark.parametrize('guess', [None, lambda lo, hi: 13, lambda lo, hi: 1,
                                   lambda lo, hi: 10**9])
def test_largest_fitting_finds_the_threshold_whatever_the_guess(threshold, start, guess):
  best, tried = plan.largest_fitting(lambda b: b <= threshold, start, 1024, guess)
  assert best == min(threshold, 1024)
  assert len(tried) == len(set(tried)) <= 24  # Never the same compile twice.


def test_largest_fitting_with_an_accurate_guess_takes_three_compiles():
  best, tried = plan.largest_fitting(lambda b: b <= 13, 8, 1024, lambda lo, hi: 13)
  assert (best, tried) == (13, [8, 13, 14])
  best, tried = plan.largest_fitting(lambda b: b <= 13, 8, 1024)
  assert best == 13 and tried == [8, 16, 12, 14, 13]


def _fake_compile(fixed_gib: float, per_clip_gib: float, calls: list,
                  recompute_per_clip: float = 0.0):
  """A compile function whose memory grows linearly with the batch, like the real step's;
  `recompute_per_clip`: the fraction by which FLOPs per clip grow with each clip (the TPU
  compiler rematerialises under memory pressure)."""
  def compile_fn(config, batch):
    calls.append((config.model.remat, batch))
    temp = int(per_clip_gib * GIB * batch)
    memory = {'argument': int(fixed_gib * GIB), 'output': int(fixed_gib * GIB),
              'alias': int(fixed_gib * GIB), 'temp': temp, 'generated_code': 1 << 20}
    flops_per_clip = 500e9 * (1 + recompute_per_clip * batch)
    return {'fits': True, 'memory': memory, 'peak_bytes': plan.peak_bytes(memory),
            'flops_per_device_step': flops_per_clip * batch, 'num_params': 57_000_000}
  return compile_fn


def test_find_max_batch_names_the_fastest_batch_when_larger_ones_recompute(tmp_path):
  """With FLOPs per clip rising with the batch, the largest batch that fits is not the fastest:
  the plan says which compiled batch trains the most clips/s per chip; with flat FLOPs per clip
  (negative control) the fastest is the largest."""
  config = config_base.load(config_path('brave_rgb_audio', None))
  kwargs = dict(find_max=True, max_batch_limit=1024, utilisation=0.4, cpu_ms_override=None,
                version_info=VERSIONS)
  result = plan.run(config, 'configs/brave_rgb_audio.py', 'v5e:2x2', batch_per_chip=8,
                    cache_dir=str(tmp_path / 'a'),
                    compile_fn=_fake_compile(0.5, 1.1, [], recompute_per_clip=0.01), **kwargs)
  assert result['max_batch_per_chip'] == 14 and result['fastest_batch_per_chip'] == 8
  compiled = result['max_batch_compiles']
  assert compiled['8']['gflop_per_clip'] == pytest.approx(540)
  assert compiled['8']['clips_per_s'] > compiled['14']['clips_per_s']
  assert 'fastest of those per chip at 40% of bf16 peak: batch 8' in plan.format_report(result)
  flat = plan.run(config, 'configs/brave_rgb_audio.py', 'v5e:2x2', batch_per_chip=8,
                  cache_dir=str(tmp_path / 'b'), compile_fn=_fake_compile(0.5, 1.1, []), **kwargs)
  assert flat['fastest_batch_per_chip'] == flat['max_batch_per_chip'] == 14


def test_find_max_batch_against_the_chip_hbm_with_a_fake_compiler(tmp_path):
  config = config_base.load(config_path('brave_rgb_audio', None))
  calls = []
  # 0.5 GiB fixed + 1.1 GiB per clip: 13 clips = 14.8 GiB fit v5e's 16, 14 = 15.9 fit, 15 not.
  result = plan.run(config, 'configs/brave_rgb_audio.py', 'v5e:2x2', batch_per_chip=8,
                    find_max=True, max_batch_limit=1024, utilisation=0.4, cpu_ms_override=None,
                    cache_dir=str(tmp_path), compile_fn=_fake_compile(0.5, 1.1, calls),
                    version_info=VERSIONS)
  assert result['max_batch_per_chip'] == 14 and result['batch_per_chip'] == 14
  assert [b for _, b in calls] == [8, 14, 15]  # The linear guess lands on the answer.
  assert result['fits'] and result['memory_gib']['peak'] == pytest.approx(0.5 + 1.1 * 14)
  assert result['gflop_per_clip'] == pytest.approx(500)
  at_40 = result['throughput_per_chip']['bf16_40pct']
  assert at_40['clips_per_s'] == pytest.approx(197e12 * 0.4 / 500e9)
  ms = plan.PIPELINE_CPU_MS_PER_CLIP['brave_rgb_audio'][0]
  assert result['host_cores_per_chip'] == pytest.approx(at_40['clips_per_s'] * ms / 1000)
  assert result['host_cores_per_host'] == pytest.approx(4 * result['host_cores_per_chip'])
  text = plan.format_report(result)
  assert 'largest batch per chip that fits: 14' in text and 'TPU v5e" page' in text


def test_a_batch_that_does_not_compile_is_reported_as_not_fitting(tmp_path):
  config = config_base.load(config_path('brave_rgb_audio', None))
  oom = lambda c, b: {'fits': False, 'error': 'RESOURCE_EXHAUSTED: Ran out of memory in hbm'}
  result = plan.run(config, 'configs/brave_rgb_audio.py', 'v5e:2x2', batch_per_chip=64,
                    find_max=False, max_batch_limit=1024, utilisation=0.4, cpu_ms_override=None,
                    cache_dir=str(tmp_path), compile_fn=oom, version_info=VERSIONS)
  assert not result['fits'] and 'Ran out of memory' in result['error']
  assert 'does NOT fit' in plan.format_report(result)


def test_default_batch_is_the_configs_global_batch_over_the_chips(tmp_path):
  config = config_base.load(config_path('brave_rgb_audio', None))  # Global batch 512.
  calls = []
  result = plan.run(config, 'configs/brave_rgb_audio.py', 'v4:4x4x4', batch_per_chip=None,
                    find_max=False, max_batch_limit=1024, utilisation=0.4, cpu_ms_override=None,
                    cache_dir=None, compile_fn=_fake_compile(0.5, 1.0, calls),
                    version_info=VERSIONS)
  assert calls == [(False, 8)] and result['global_batch'] == 512


# --- Cache ----------------------------------------------------------------------------------

def _key(config, topology='v5e:2x2', batch=8, versions=None):
  return plan.cache_key(config, topology, batch, None, versions or VERSIONS)


def test_cache_key_changes_with_everything_the_step_depends_on(tiny_va_config):
  base = _key(tiny_va_config)
  assert base == _key(tiny_va_config.copy_and_resolve_references())
  changed = []
  for field, value in (('model.remat', True), ('model.compute_dtype', 'bfloat16'),
                       ('data.narrow.image_size', 64), ('optimizer.name', 'adamw')):
    c = tiny_va_config.copy_and_resolve_references()
    with c.unlocked():
      section, name = field.rsplit('.', 1)
      setattr(eval(f'c.{section}'), name, value)  # pylint: disable=eval-used
    changed.append(_key(c))
  changed += [_key(tiny_va_config, topology='v5e:4x8'), _key(tiny_va_config, batch=16),
              _key(tiny_va_config, versions={**VERSIONS, 'libtpu': '0.0.43'})]
  assert base not in changed and len(set(changed)) == len(changed)
  # The global batch is not part of the step: the per-chip batch is.
  c = tiny_va_config.copy_and_resolve_references()
  with c.unlocked():
    c.training.batch_size = 4096
  assert _key(c) == base


def test_second_call_is_served_from_the_cache(tiny_va_config, tmp_path):
  topology = plan.parse_topology('v5e:2x2')
  calls = []
  fake = _fake_compile(0.1, 0.2, calls)
  args = dict(cache_dir=str(tmp_path), version_info=VERSIONS)
  first = plan.analyse(tiny_va_config, topology, 4, fake, **args)
  second = plan.analyse(tiny_va_config, topology, 4, fake, **args)
  assert len(calls) == 1 and second['peak_bytes'] == first['peak_bytes']
  plan.analyse(tiny_va_config, topology, 6, fake, **args)  # Another batch: compiled.
  remat = tiny_va_config.copy_and_resolve_references()
  with remat.unlocked():
    remat.model.remat = True
  plan.analyse(remat, topology, 4, fake, **args)  # Another config: compiled.
  assert [b for _, b in calls] == [4, 6, 4]
  for path in tmp_path.iterdir():  # A torn or foreign entry is recompiled, not trusted.
    path.write_text('{not json')
  plan.analyse(tiny_va_config, topology, 4, fake, **args)
  assert len(calls) == 4
  plan.analyse(tiny_va_config, topology, 4, fake, cache_dir=None, version_info=VERSIONS)
  assert len(calls) == 5


# --- Command line ---------------------------------------------------------------------------

def _plan_cli(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
  env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'}
  return subprocess.run([python, '-m', 'brave_jax.plan', *args], capture_output=True, text=True,
                        timeout=1800, env=env, cwd=REPO_ROOT)


def _error_line(result: subprocess.CompletedProcess) -> str:
  lines = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, result.stderr
  return lines[0]


def test_cli_wrong_topology_is_one_line_with_the_accepted_forms():
  result = _plan_cli(f'--config={config_path("brave_rgb_audio")}', '--topology=v5e-8')
  assert result.returncode == errors.EXIT_USAGE
  line = _error_line(result)
  assert "--topology='v5e-8'" in line and plan.TOPOLOGY_EXAMPLES in line


def test_cli_config_overrides_go_through_the_same_parser_as_main():
  result = _plan_cli(f'--config={config_path("brave_rgb_audio")}', '--topology=v5e:2x2',
                     '--config.model.rematt=True')
  assert result.returncode == errors.EXIT_USAGE
  assert "the config has no field 'model.rematt'" in _error_line(result)


@pytest.mark.skipif(_has_libtpu(), reason='libtpu is installed here')
def test_cli_without_libtpu_says_how_to_install_it():
  result = _plan_cli(f'--config={config_path("brave_rgb_audio")}', '--topology=v5e:2x2')
  assert result.returncode == errors.EXIT_USAGE
  assert 'libtpu is not installed' in _error_line(result) and 'tpu-plan' in _error_line(result)


# --- With libtpu: the real :tiny step compiled for TPU --------------------------------------

@needs_libtpu
@pytest.mark.parametrize('name, chips', [('v4:2x2x1', 4), ('v5e:2x2', 4), ('v5p:2x2x1', 4)])
def test_topology_devices_are_chips(name, chips):
  devices = plan.topology_devices(plan.parse_topology(name))
  assert len(devices) == chips and devices[0].platform == 'tpu'


@needs_libtpu
def test_a_topology_libtpu_refuses_is_one_line():
  with pytest.raises(plan.PlanError, match=r"v5e:3x3.*libtpu refused it.*v5e:2x2"):
    plan.topology_devices(plan.parse_topology('v5e:3x3'))


@needs_libtpu
def test_cli_compiles_tiny_for_v5e_then_answers_from_the_cache(tmp_path):
  args = (f'--config={config_path("brave_rgb_audio")}', '--topology=v5e:2x2',
          '--batch_per_chip=2', f'--cache_dir={tmp_path / "cache"}',
          f'--json={tmp_path / "plan.json"}', '--pipeline_cpu_ms_per_clip=10')
  first = _plan_cli(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'compiling for v5e:2x2 at batch 2 per chip' in first.stdout
  result = json.loads((tmp_path / 'plan.json').read_text())
  m = result['memory_gib']
  assert m['peak'] == pytest.approx(m['argument'] + m['output'] - m['alias'] + m['temp'])
  assert 0 < m['peak'] < 1 and m['alias'] > 0  # The donated state is aliased.
  assert result['fits'] and result['gflop_per_clip'] > 0.1 and result['chips'] == 4
  assert result['host_cores_per_chip'] == pytest.approx(
      result['throughput_per_chip']['bf16_40pct']['clips_per_s'] * 0.010)
  second = _plan_cli(*args)
  assert second.returncode == 0 and 'from the cache' in second.stdout
  assert json.loads((tmp_path / 'plan.json').read_text())['gflop_per_clip'] == (
      result['gflop_per_clip'])


def test_hand_count_of_the_full_size_configs():
  va = config_base.load(config_path('brave_rgb_audio', None))
  fa = config_base.load(config_path('brave_rgb_flow_audio', None))
  narrow = 16 * plan.training_flops(*plan.resnet50_conv_flops(224, 224, 3))
  audio = plan.training_flops(*plan.resnet50_conv_flops(3072, 80, 1))  # 10.24 s of log-mel.
  assert plan.hand_count_flops_per_clip(va) == pytest.approx(narrow + audio)
  flow = 64 * plan.training_flops(*plan.resnet50_conv_flops(112, 112, 2))
  assert plan.hand_count_flops_per_clip(fa) == pytest.approx(narrow + flow + audio)
  assert plan.hand_count_flops_per_clip(
      config_base.load(config_path('brave_rgb_audio', 'tiny'))) is None  # Not ResNet-50 x1.
