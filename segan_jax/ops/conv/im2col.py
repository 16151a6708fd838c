"""The im2col form: a conv as strided slices and one matmul.

For short signals, where XLA:CPU's conv and above all its input gradient
leave their fast path; one big matmul, some of whose products multiply
padding (the 'taps' form skips those, at the price of several matmuls).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from segan_jax.ops.conv.prepared import kernel_operand


def im2col(x: jax.Array, kernel_size: int, stride: int,
           padding: tuple[int, int], out_length: int) -> jax.Array:
  """Patches ``[B, out_length, kernel_size * C]``, tap-major like a WIO kernel."""
  lo, hi = padding
  xp = jnp.pad(x, ((0, 0), (max(lo, 0), max(hi, 0)), (0, 0)))
  start = max(lo, 0) - lo  # > 0 only for negative (cropping) padding.
  span = stride * (out_length - 1) + 1
  cols = [lax.slice_in_dim(xp, start + k, start + k + span, stride, axis=1)
          for k in range(kernel_size)]
  patches = jnp.stack(cols, axis=2)
  return patches.reshape(x.shape[0], out_length, kernel_size * x.shape[-1])


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int,
                padding: tuple[int, int], out_length: int) -> jax.Array:
  """``[B*Lout, K*Cin] @ [K*Cin, Cout]``: the conv of ``out_length`` samples."""
  patches = im2col(x, kernel.shape[0], stride, padding, out_length)
  return lax.dot_general(
      patches, kernel_operand('im2col', kernel.reshape(-1, kernel.shape[-1])),
      (((2,), (0,)), ((), ())))
