"""Peak memory of enhancing long files: it does not grow with their length.

  python -m benchmarks.throughput --enhance_memory --model_size=demo --json

For each of --enhance_minutes (default 1, 4, 16; add 60 for an hour, which
needs about 700 MB of disk for the 48 kHz stereo file) a synthetic
--enhance_rate / --enhance_channels 16-bit WAV is written to a temporary
folder and enhanced by a fresh child process (random G weights of
--model_size: memory does not depend on their values), which reports its
peak resident set (VmHWM) after compiling on a 2 s file and after the long
one. The growth between the two is the memory the file's length costs.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import soundfile

from benchmarks import machine
from segan_jax import enhance
from segan_jax import systems
from segan_jax.config import Config

# The folder that holds the benchmarks package: the child processes import
# it from there (it is not part of the installed package).
REPO = pathlib.Path(__file__).resolve().parents[1]


def write_long_file(path: str, minutes: float, rate: int, channels: int
                    ) -> int:
  """Speech-like 16-bit WAV of ``minutes``, written in blocks (the writer's
  memory stays small too); returns its frames."""
  frames = int(round(minutes * 60 * rate))
  rng = np.random.default_rng(0)
  block = 10 * rate
  with soundfile.SoundFile(path, 'w', samplerate=rate, channels=channels,
                           subtype='PCM_16') as f:
    for start in range(0, frames, block):
      t = np.arange(start, min(start + block, frames)) / rate
      x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
      x = x[:, None] / 2 + 0.02 * rng.standard_normal((t.size, channels))
      f.write(x.astype(np.float32))
  return frames


def _peak_rss_mb() -> float:
  """This process's peak resident set so far (VmHWM), MB."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError('no VmHWM in /proc/self/status')


def _enhance_memory_child(path: str, model_size: str) -> None:
  """Runs in a fresh process: compile on a short file, then the long one."""
  config = Config(model_size=model_size, parallelism='none')
  model = systems.generator(config)
  z = jnp.zeros((1,) + systems.latent_shape(config))
  params = jax.jit(model.init)(jax.random.key(0),
                               jnp.zeros((1, config.window)), z)['params']
  enhancer = enhance.Enhancer(enhance.TrainedGenerator(config, params, 0))
  info = soundfile.info(path)
  with tempfile.TemporaryDirectory() as scratch:
    warm = os.path.join(scratch, 'warm.wav')
    write_long_file(warm, 2 / 60, info.samplerate, info.channels)
    enhance.enhance_file(enhancer, warm, os.path.join(scratch, 'warm_out.wav'))
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    enhance.enhance_file(enhancer, path, os.path.join(scratch, 'out.wav'))
    seconds = time.perf_counter() - start
  print(json.dumps({'baseline_mb': baseline, 'peak_mb': _peak_rss_mb(),
                    'enhance_s': seconds}), flush=True)


def enhance_memory(minutes: Sequence[float], model_size: str = 'demo',
                   rate: int = 48000, channels: int = 2,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Peak RSS of enhancing files of each length, one child process each."""
  rows = []
  for length in minutes:
    with tempfile.TemporaryDirectory(prefix='segan_enhance_memory_') as tmp:
      path = os.path.join(tmp, 'long.wav')
      frames = write_long_file(path, float(length), rate, channels)
      code = ('import sys; from benchmarks import enhance_memory; '
              'enhance_memory._enhance_memory_child(sys.argv[1], sys.argv[2])')
      # From REPO, whose folder `python -c` puts first on sys.path; the
      # file's path is absolute.
      result = subprocess.run([sys.executable, '-c', code, path, model_size],
                              capture_output=True, text=True, check=False,
                              cwd=REPO)
      if result.returncode != 0:
        raise RuntimeError(f'enhance memory child failed for {length} min: '
                           f'{result.stderr[-2000:]}')
      row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(minutes=float(length), frames=frames,
               file_mb=frames * channels * 2 / 2**20,
               growth_mb=row['peak_mb'] - row['baseline_mb'])
    rows.append(row)
    log(f'{float(length):6.1f} min ({row["file_mb"]:7.1f} MB of 16-bit '
        f'audio): peak RSS {row["peak_mb"]:7.1f} MB, {row["growth_mb"]:+6.1f} '
        f'MB over the compiled model ({row["baseline_mb"]:.1f} MB), '
        f'{row["enhance_s"]:.1f} s')
  return {'model_size': model_size, 'rate': rate, 'channels': channels,
          'enhance_memory': rows,
          'cpu_model': machine.cpu_model(), 'versions': machine.versions()}
