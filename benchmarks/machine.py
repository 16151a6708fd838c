"""What a benchmark's JSON records about the machine it ran on: the CPU
model and the versions of the libraries measured."""

from __future__ import annotations

import platform

import flax
import jax
import jaxlib
import numpy as np


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def versions(torch_module=None) -> dict[str, str]:
  out = {'python': platform.python_version(), 'jax': jax.__version__,
         'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
         'numpy': np.__version__}
  if torch_module is not None:
    out['torch'] = torch_module.__version__
  return out
