"""segan_jax.bench runs end to end on the tiny model (no timing assertions)."""

import json
import math

import numpy as np
import pytest
from absl import flags

from segan_jax import systems
from segan_jax import bench
from segan_jax.config import Config


def test_bench_tiny_json(capsys):
  flag_values = flags.FlagValues()
  bench.define_flags(flag_values)
  flag_values(['bench', '--model_size=tiny', '--steps=1', '--warmup=1',
               '--skip_torch', '--json'])
  bench.main(['bench'], flag_values)
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


def test_flop_count_of_paper_generator():
  flops = bench.count_flops(Config(model_size='paper'), batch_size=8)
  assert flops['g_forward'] == pytest.approx(4.315e9, rel=1e-3)
  assert flops['train_step'] > 3 * flops['g_forward']


def test_torch_reference_generator_matches_jax():
  torch = pytest.importorskip('torch')
  import jax  # pylint: disable=g-import-not-at-top
  from segan_jax import torch_reference  # pylint: disable=g-import-not-at-top
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
  first, times = bench._measure(workloads, warmup=1, steps=2, order=order)
  # first call + warm-up + 2 timed repeats per workload.
  assert calls == expected
  assert set(first) == {'a', 'b'}
  assert [len(t) for t in times.values()] == [2, 2]
  with pytest.raises(ValueError, match='order'):
    bench._measure(workloads, 1, 1, order='random')


def test_run_rejects_a_bad_order_before_building_anything(monkeypatch):
  def must_not_run(*args, **kwargs):
    raise AssertionError('built models before checking the order')
  monkeypatch.setattr(bench, '_data', must_not_run)
  with pytest.raises(ValueError, match='order must be one of'):
    bench.run(model_size='tiny', order='random', log=lambda _: None)
