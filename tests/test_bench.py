"""benchmarks.throughput runs end to end on the tiny model (no timing
assertions); benchmarks.gpu's peaks and MFU; benchmarks.torch_reference."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from benchmarks import gpu
from benchmarks import throughput
from segan_jax import systems
from segan_jax.config import Config
from segan_jax.ops import conv


def test_bench_tiny_json(capsys):
  flag_values = flags.FlagValues()
  throughput.define_flags(flag_values)
  flag_values(['bench', '--model_size=tiny', '--steps=1', '--warmup=1',
               '--skip_torch', '--json'])
  throughput.main(['bench'], flag_values)
  out = capsys.readouterr().out.strip().splitlines()
  result = json.loads(out[-1])
  for key in ('jax_inference_examples_per_s', 'jax_train_examples_per_s',
              'inference_rtf', 'jax_inference_gflops', 'jax_train_gflops',
              'jax_inference_compile_s', 'jax_train_compile_s',
              'g_forward_gflop_per_example', 'train_step_gflop_per_example'):
    assert math.isfinite(result[key]) and result[key] >= 0, key
  assert result['jax_train_examples_per_s'] > 0
  assert result['inference_rtf'] > 0
  assert result['train_ratio_vs_torch'] is None
  assert result['inference_ratio_vs_torch'] is None
  assert result['model_size'] == 'tiny' and result['batch_size'] == 8
  assert result['cpu_model'] and result['versions']['jax']
  # Compilation and the first step are fields of their own, apart from the
  # steady state; a first call (as before) is the two together.
  for name in ('jax_inference', 'jax_train'):
    compile_s = result[f'{name}_compile_s']
    first_step = result[f'{name}_first_step_s']
    assert compile_s > 0 and first_step > 0, name
    assert result[f'{name}_first_call_s'] == pytest.approx(
        compile_s + first_step), name
  assert 'compile()' in result['jax_compile_s_measures']
  # XLA's FLOP count of the train step, near the one counted from the layer
  # shapes (the conv forms and element-wise ops make the difference).
  assert result['jax_train_gflop_source'] == 'xla cost_analysis'
  analytic = result['train_step_gflop_per_example'] * result['batch_size']
  assert 0.5 < result['jax_train_gflop_per_step'] / analytic < 3
  # This CPU: float32 only, no known peak, so no MFU.
  if result['jax_backend'] == 'cpu':
    assert result['device'] == 'cpu' and result['dtypes'] == ['float32']
    assert result['train_mfu'] is None and result['jax_train_mfu'] is None
    assert not any(key.endswith('_bf16') for key in result)


def test_flop_count_of_paper_generator():
  flops = throughput.count_flops(Config(model_size='paper'), batch_size=8)
  assert flops['g_forward'] == pytest.approx(4.315e9, rel=1e-3)
  assert flops['train_step'] > 3 * flops['g_forward']


def test_torch_reference_generator_matches_jax():
  torch = pytest.importorskip('torch')
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  config = Config(model_size='tiny')
  g, d = torch_reference.make_models(config)
  rng = np.random.default_rng(0)
  noisy = rng.normal(size=(2, config.window)).astype(np.float32)
  z = rng.normal(size=(2,) + systems.latent_shape(config)).astype(
      np.float32)
  z_t = torch.from_numpy(z).permute(0, 2, 1)
  assert tuple(z_t.shape[1:]) == torch_reference.latent_shape(config)
  with torch.no_grad():
    assert tuple(g(torch.from_numpy(noisy), z_t).shape) == (2, config.window)
  # Same parameters -> same outputs as the Flax networks.
  g_jax = systems.generator(config)
  d_jax = systems.segan.discriminator(config)
  g_params = g_jax.init(jax.random.key(0), noisy, z)['params']
  g_params = jax.tree_util.tree_map_with_path(
      lambda path, p: p + 0.25 if 'alpha' in str(path) else p, g_params)
  pairs = rng.normal(size=(2, config.window, 2)).astype(np.float32)
  reference = rng.normal(size=(3, config.window, 2)).astype(np.float32)
  d_params = d_jax.init(jax.random.key(1), pairs, reference)['params']
  torch_reference.load_flax_params(g, d, g_params, d_params)
  with torch.no_grad():
    y = g(torch.from_numpy(noisy), z_t).numpy()
    logits = d(torch.from_numpy(pairs).permute(0, 2, 1),
               torch.from_numpy(reference).permute(0, 2, 1)).numpy()
  np.testing.assert_allclose(y, g_jax.apply({'params': g_params}, noisy, z),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      logits, d_jax.apply({'params': d_params}, pairs, reference),
      rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('order,expected', [
    ('alternate', ['a', 'b', 'a', 'b', 'a', 'b', 'a', 'b']),
    ('blocked', ['a', 'a', 'a', 'a', 'b', 'b', 'b', 'b']),
])
def test_measure_order(order, expected):
  calls = []
  workloads = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
  first, times = throughput._measure(workloads, warmup=1, steps=2,
                                     order=order)
  # first call + warm-up + 2 timed repeats per workload.
  assert calls == expected
  assert set(first) == {'a', 'b'}
  assert [len(t) for t in times.values()] == [2, 2]
  with pytest.raises(ValueError, match='order'):
    throughput._measure(workloads, 1, 1, order='random')


def test_run_rejects_a_bad_order_before_building_anything(monkeypatch):
  def must_not_run(*args, **kwargs):
    raise AssertionError('built models before checking the order')
  monkeypatch.setattr(throughput, '_data', must_not_run)
  with pytest.raises(ValueError, match='order must be one of'):
    throughput.run(model_size='tiny', order='random', log=lambda _: None)


@pytest.mark.parametrize('requested,jax_platform,torch_cuda,expected', [
    ('auto', 'cpu', False, 'cpu'),
    ('auto', 'cpu', None, 'cpu'),
    ('auto', 'gpu', True, 'gpu'),
    ('auto', 'gpu', None, 'gpu'),  # PyTorch not measured
    ('auto', 'gpu', False, 'cpu'),  # PyTorch without CUDA
    ('auto', 'tpu', False, 'cpu'),
    ('cpu', 'gpu', True, 'cpu'),
    ('gpu', 'gpu', True, 'gpu'),
    ('gpu', 'gpu', None, 'gpu'),
])
def test_resolve_device(requested, jax_platform, torch_cuda, expected):
  assert throughput.resolve_device(requested, jax_platform,
                                   torch_cuda) == expected


@pytest.mark.parametrize('jax_platform,torch_cuda,message', [
    ('cpu', True, 'JAX has no GPU'),
    ('cpu', None, 'JAX has no GPU'),
    ('gpu', False, 'PyTorch build has no CUDA'),
])
def test_resolve_device_gpu_missing(jax_platform, torch_cuda, message):
  with pytest.raises(throughput.DeviceError, match=message):
    throughput.resolve_device('gpu', jax_platform, torch_cuda)
  with pytest.raises(ValueError, match='device must be one of'):
    throughput.resolve_device('cuda', jax_platform, torch_cuda)


def test_auto_device_here():
  import jax  # pylint: disable=g-import-not-at-top
  if jax.devices()[0].platform == 'gpu':
    pytest.skip('this machine has a GPU')
  torch_cuda = throughput._torch_cuda(throughput._import_torch())
  assert throughput.resolve_device('auto', jax.devices()[0].platform,
                                   torch_cuda) == 'cpu'


def test_device_gpu_without_a_gpu_is_a_one_line_error(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  if jax.devices()[0].platform == 'gpu':
    pytest.skip('this machine has a GPU')
  def must_not_run(*args, **kwargs):
    raise AssertionError('built models before checking the device')
  monkeypatch.setattr(throughput, '_data', must_not_run)
  flag_values = flags.FlagValues()
  throughput.define_flags(flag_values)
  flag_values(['bench', '--model_size=tiny', '--device=gpu'])
  with pytest.raises(SystemExit) as exit_info:
    throughput.main(['bench'], flag_values)
  message = str(exit_info.value.code)
  assert message.startswith('benchmarks.throughput: --device=gpu: ')
  assert '\n' not in message and 'GPU' in message


def test_mfu_arithmetic():
  # 494.5 TFLOP in one second on a 989 TFLOP/s chip: half its peak.
  assert gpu.mfu(494.5e12, 1.0, 989.0) == pytest.approx(0.5)
  assert gpu.mfu(3e12, 2.0, 6.0) == pytest.approx(0.25)
  assert gpu.mfu(1e12, 1.0, None) is None
  assert gpu.mfu(None, 1.0, 989.0) is None


def test_step_flops_falls_back_when_xla_misses_the_convs():
  # On an H200 XLA counted 0.197 GFLOP for a G forward whose layers hold
  # 276 GFLOP: cuDNN's convolutions are library calls it does not see.
  assert gpu.step_flops(0.197e9, 276e9) == (276e9, 'count_flops')
  # On CPU its count is lower only by Karatsuba's saved multiplies: kept.
  assert gpu.step_flops(23.7e9, 34.5e9) == (23.7e9, 'xla cost_analysis')
  assert gpu.step_flops(None, 34.5e9) == (34.5e9, 'count_flops')


@pytest.mark.parametrize('device_kind,tflops', [
    ('NVIDIA H100 80GB HBM3', 989.0),
    ('NVIDIA H200', 989.0),
    ('NVIDIA A100-SXM4-80GB', 312.0),
    ('NVIDIA L4', 121.0),
    ('TPU v4', 275.0),
    ('TPU v5 lite', 197.0),
    ('TPU v5p', 459.0),
    ('TPU v6 lite', 918.0),
    # Unknown, or a variant whose peak differs from its family's.
    ('cpu', None),
    ('NVIDIA L40S', None),
    ('NVIDIA H100 PCIe', None),
])
def test_peak_by_device_kind(device_kind, tflops):
  assert gpu.peak_bf16_tflops(device_kind) == tflops
  if tflops is None:
    assert gpu.mfu(1e12, 1.0, gpu.peak_bf16_tflops(device_kind)) is None


class _FakeCompiled:
  def __init__(self, analysis):
    self.analysis = analysis

  def cost_analysis(self):
    if isinstance(self.analysis, Exception):
      raise self.analysis
    return self.analysis


@pytest.mark.parametrize('analysis,expected', [
    ({'flops': 12.0, 'bytes accessed': 3.0}, 12.0),  # jax >= 0.4.3x
    ([{'flops': 12.0}], 12.0),  # older: one dict per computation
    ({}, None),
    ([], None),
    (None, None),
    (NotImplementedError('no cost model'), None),
])
def test_xla_flops_shapes(analysis, expected):
  assert gpu.xla_flops(_FakeCompiled(analysis)) == expected


def test_xla_flop_count_of_tiny_generator():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config = Config(model_size='tiny')
  g = systems.generator(config)
  noisy = jnp.zeros((8, config.window))
  z = jnp.zeros((8,) + systems.latent_shape(config))
  variables = g.init(jax.random.key(0), noisy, z)
  _, (seconds, flops) = throughput._aot(jax.jit(g.apply), variables, noisy, z)
  assert seconds > 0
  analytic = throughput.count_flops(config, 8)['g_forward'] * 8
  assert 0.5 < flops / analytic < 3


def test_torch_bf16_autocast_train_step():
  torch = pytest.importorskip('torch')
  config = Config(model_size='tiny', batch_size=2)
  data = throughput._data(config, 2)
  runner = throughput._TorchRunner(torch, config, data, 'cpu', 'bfloat16')
  assert runner.autocast_dtype == torch.bfloat16
  losses = runner.step(runner.noisy, runner.clean, runner.z)
  assert all(torch.isfinite(v) and v.dtype == torch.float32
             for v in losses.values())
  # Parameters stay float32 (autocast computes in bfloat16).
  assert all(p.dtype == torch.float32 for p in runner.g.parameters())
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  with torch.inference_mode(), torch_reference.autocast('cpu', torch.bfloat16):
    out = runner.g(runner.noisy, runner.z)
  assert out.dtype == torch.bfloat16


def test_gpu_bench_script_runs_cold_cached_and_paper_batch(tmp_path):
  # experiments/gpu_bench.sh is for minutes on a lent GPU: it must not fail
  # there on a typo, so it runs here on the CPU with a tiny model.
  script = (pathlib.Path(throughput.__file__).parents[1] / 'experiments' /
            'gpu_bench.sh')
  env = dict(os.environ, OUT=str(tmp_path), DEVICE='cpu', MODEL_SIZE='tiny',
             PYTHON=sys.executable, LIMIT_S='300',
             BENCH_FLAGS='--skip_train --skip_torch --steps=1 --warmup=0',
             # A few layers of the forms table, one form besides 'xla'.
             FORMS_FLAGS='--forms=im2col --repeats=1', FORMS_LIMIT_S='30')
  # Only the script's own cache: not the one conftest.py gives the session.
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  env.pop('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', None)
  done = subprocess.run(['bash', str(script)], env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  runs = {name: json.loads((tmp_path / f'{name}.json').read_text())
          for name in ('batch64_cold', 'batch64_cached', 'batch400')}
  assert [r['batch_size'] for r in runs.values()] == [64, 64, 400]
  # The forms table, as the policy reads it, and the bench run with it.
  table = str(tmp_path / 'conv_forms.json')
  assert conv.load_forms_table(table)
  with_table = json.loads((tmp_path / 'batch64_forms.json').read_text())
  assert with_table['conv_forms_table'] == table
  report = json.loads((tmp_path / 'memory400.json').read_text())
  assert (report['batch_size'], report['conv_backend']) == (400, 'gpu')
  assert report['planned_bytes'] > 0 and report['top_buffers']
  assert len(list(tmp_path.iterdir())) <= 8  # The device tool's limit.
  assert all(r['device'] == 'cpu' and r['model_size'] == 'tiny'
             for r in runs.values())
  # The second run loads the first one's programs from the cache (a fresh
  # compile would take about as long as the first run's).
  assert (runs['batch64_cached']['jax_inference_compile_s'] <
          0.5 * runs['batch64_cold']['jax_inference_compile_s'])
