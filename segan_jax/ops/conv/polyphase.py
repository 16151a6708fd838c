"""The polyphase form of a transposed conv: one stride-1 conv, no dilation.

``lax.conv_transpose`` convolves the zero-dilated input, so at stride s all
but 1/s of its multiplies hit inserted zeros. Each phase of the output is a
stride-1 conv of the undilated input with some of the taps; one conv whose
``stride * Cout`` output channels hold the phases computes them all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from segan_jax.ops.conv.shapes import conv_transpose_same_padding


def polyphase_taps(kernel_size: int, stride: int
                   ) -> tuple[int, list[list[int | None]]]:
  """How the transposed conv splits into ``stride`` stride-1 convs.

  Output ``u = stride * m + r`` (phase r) sums ``x[m + d] @ kernel[k]`` over
  the taps k with ``stride * d = r + k - pad``. Returns ``(d_min, taps)``
  where ``taps[j][r]`` is the tap k at offset ``d = d_min + j`` of phase r
  (None where phase r has no tap there).
  """
  pad = conv_transpose_same_padding(kernel_size, stride)
  offsets = {}
  for r in range(stride):
    for k in range(kernel_size):
      if (r + k - pad) % stride == 0:
        offsets[(r, (r + k - pad) // stride)] = k
  ds = [d for _, d in offsets]
  d_min, d_max = min(ds), max(ds)
  taps = [[offsets.get((r, d)) for r in range(stride)]
          for d in range(d_min, d_max + 1)]
  return d_min, taps


def polyphase_kernel(kernel: jax.Array, stride: int) -> tuple[int, jax.Array]:
  """The ``[T, Cin, stride * Cout]`` kernel of the phases' stride-1 conv.

  Output channel block r holds phase r; a phase without a tap at some offset
  gets zeros there (the entries of `polyphase_taps`). Built by pad, reshape,
  reverse and transpose, which XLA fuses into one copy; its gradient is the
  same ops reversed (a stack of per-tap pieces had, as gradient, a zero-
  padded copy of the kernel per tap, summed).
  """
  kernel_size, cin, cout = kernel.shape
  d_min, taps = polyphase_taps(kernel_size, stride)
  # Tap k of phase r sits at row j with k = stride * j + first - r, so
  # row-major [T, stride] position (j, stride - 1 - r) of the padded taps
  # holds tap k when the padding puts tap 0 at first - (stride - 1).
  first = stride * d_min + conv_transpose_same_padding(kernel_size, stride)
  front = (stride - 1) - first
  back = stride * len(taps) - front - kernel_size
  padded = lax.pad(kernel, jnp.zeros((), kernel.dtype),
                   ((front, back, 0), (0, 0, 0), (0, 0, 0)))
  phases = padded.reshape(len(taps), stride, cin, cout)[:, ::-1]
  return d_min, phases.transpose(0, 2, 1, 3).reshape(len(taps), cin,
                                                     stride * cout)


def polyphase_padding(d_min: int, taps: int) -> tuple[int, int]:
  """Padding of the phases' stride-1 conv: one output row per input sample."""
  return (-d_min, d_min + taps - 1)


def interleave_phases(y: jax.Array, stride: int) -> jax.Array:
  """``[B, L, stride * Cout]`` phases -> ``[B, L * stride, Cout]`` output."""
  batch, length, channels = y.shape
  return y.reshape(batch, length * stride, channels // stride)
