"""Inference speed of G through each engine on the same windows: JAX (the
package's CPU-tuned conv forms), the exported StableHLO program (lax's
convolutions) and onnxruntime (its own Conv kernels).

  python -m benchmarks.export_engines --model_size=paper --batch_size=8

Parameters are random: the speed of a conv does not depend on its values.
Each engine's output is checked against JAX's before it is timed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from typing import Callable, Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from segan_jax import enhance
from segan_jax import export
from segan_jax import systems
from segan_jax.config import MODEL_SIZES, Config

_MODEL_SIZE = flags.DEFINE_enum('model_size', 'paper', list(MODEL_SIZES),
                                'Size of G.')
_MODEL = flags.DEFINE_enum('model', 'segan', ['segan', 'autoencoder'],
                           'segan: G with z (an input of the exported graph).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Windows per call.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed calls (median reported).')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object last.')


def random_generator(config: Config, seed: int = 0) -> enhance.TrainedGenerator:
  model = systems.generator(config)
  latent = systems.latent_shape(config)
  noisy = np.zeros((1, config.window), np.float32)
  args = (noisy,) if latent is None else (
      noisy, np.zeros((1, *latent), np.float32))
  params = model.init(jax.random.key(seed), *args)['params']
  return enhance.TrainedGenerator(config, params, 0, 'random G')


def _median_seconds(fn: Callable[[], object], steps: int) -> float:
  fn()  # compile / warm up
  fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(model_size: str, model: str, batch_size: int,
            steps: int) -> dict[str, float | str]:
  config = Config(model=model, model_size=model_size)
  generator = random_generator(config)
  windows = (0.1 * np.random.default_rng(0).standard_normal(
      (batch_size, config.window))).astype(np.float32)
  engines = {'jax': enhance.Enhancer(generator, batch_size=batch_size)}
  with tempfile.TemporaryDirectory() as folder:
    for engine in export.FORMATS:
      path = os.path.join(folder, f'g.{engine}')
      export.export_file(generator, engine, path)
      engines[engine] = export.ExportedEnhancer(path, batch_size=batch_size)
  expected = engines['jax'].enhance_windows(windows)
  row: dict[str, float | str] = {
      'model_size': model_size, 'model': model, 'batch_size': batch_size,
      'cpu': platform.processor() or platform.machine(),
      'cores': os.cpu_count() or 0, 'jax': jax.__version__}
  for name, engine in engines.items():
    got = engine.enhance_windows(windows)
    row[f'{name}_max_abs_diff'] = float(np.abs(got - expected).max())
    seconds = _median_seconds(lambda e=engine: e.enhance_windows(windows),
                              steps)
    row[f'{name}_ms'] = 1e3 * seconds
    # Seconds of 16 kHz audio enhanced per second of compute.
    row[f'{name}_x_realtime'] = batch_size * config.window / 16000 / seconds
  row['onnx_speedup_over_jax'] = row['jax_ms'] / row['onnx_ms']
  row['stablehlo_speedup_over_jax'] = row['jax_ms'] / row['stablehlo_ms']
  return row


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  row = measure(_MODEL_SIZE.value, _MODEL.value, _BATCH_SIZE.value,
                _STEPS.value)
  print(f'G ({row["model"]}, {row["model_size"]}) on {row["batch_size"]} '
        f'windows, {row["cores"]} cores:')
  for name in ('jax', *export.FORMATS):
    print(f'  {name:10s} {row[f"{name}_ms"]:9.1f} ms  '
          f'{row[f"{name}_x_realtime"]:7.1f}x realtime  '
          f'max |diff| to jax {row[f"{name}_max_abs_diff"]:.1e}')
  print(f'  onnxruntime / JAX speed: {row["onnx_speedup_over_jax"]:.2f}x')
  if _JSON.value:
    print(json.dumps(row))


if __name__ == '__main__':
  app.run(main)
