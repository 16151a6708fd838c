"""How much of a chip's peak a benchmarked step uses: the dense bfloat16 peak
per device kind, XLA's FLOP count of a compiled program, and MFU.

benchmarks.throughput reports MFU for each workload (BENCHMARKS.md,
"On a GPU").
"""

from __future__ import annotations

import re

# Vendor dense (no sparsity) bfloat16 peaks per chip, TFLOP/s, from the
# makers' datasheets, by jax.devices()[0].device_kind: the first pattern that
# matches wins. None: a variant whose peak differs from its family's and is
# not in this table (MFU is omitted; --peak_tflops gives one).
PEAK_BF16_TFLOPS = (
    (r'H100 (PCIe|NVL)|H200 NVL', None),
    (r'\bH100\b|\bH200\b', 989.0),  # SXM
    (r'\bA100\b', 312.0),
    (r'\bL4\b', 121.0),
    (r'TPU v4 lite', None),
    (r'TPU v4\b', 275.0),
    (r'TPU v5 ?lite|TPU v5e', 197.0),
    (r'TPU v5p?$', 459.0),
    (r'TPU v6 ?lite|TPU v6e', 918.0),
)


def xla_flops(compiled) -> float | None:
  """XLA's own FLOP count of a compiled computation, or None.

  ``Compiled.cost_analysis()`` is a dict in jax 0.10 and was a list of one
  dict per computation before; some backends do not implement it.
  """
  try:
    analysis = compiled.cost_analysis()
  except (NotImplementedError, RuntimeError):
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def step_flops(counted: float | None, analytic: float) -> tuple[float, str]:
  """The FLOPs per step that MFU is computed from, and their source.

  XLA's count (``counted``, `xla_flops`) where it covers the program;
  otherwise the count from the layer shapes (``analytic``). XLA's cost
  analysis does not see into library calls (cuDNN's convolutions on GPU),
  so a count below half the layers' own is one that missed the convs. On
  CPU it is lower only by the multiplies the Karatsuba form saves.
  """
  if counted is not None and counted >= 0.5 * analytic:
    return counted, 'xla cost_analysis'
  return analytic, 'count_flops'


def peak_bf16_tflops(device_kind: str) -> float | None:
  """The dense bfloat16 peak of ``device_kind`` (PEAK_BF16_TFLOPS), or None."""
  for pattern, tflops in PEAK_BF16_TFLOPS:
    if re.search(pattern, device_kind.strip(), re.IGNORECASE):
      return tflops
  return None


def mfu(flops: float | None, seconds: float, peak_tflops: float | None
        ) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s over the peak (a fraction), or
  None when the FLOPs or the peak are unknown."""
  if flops is None or peak_tflops is None or seconds <= 0:
    return None
  return flops / seconds / (peak_tflops * 1e12)
