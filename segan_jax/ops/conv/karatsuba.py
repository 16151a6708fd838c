"""The Karatsuba form of a long stride-1 conv: three half-size convs.

XLA:CPU runs the half-size convs at the same rate as the full one, so the
multiplies saved (a quarter per level) are time saved.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from segan_jax.ops.conv.policy import ConvPolicy
from segan_jax.ops.conv.shapes import conv_out_length
from segan_jax.ops.conv.xla import xla_conv


def karatsuba_conv(x: jax.Array, kernel: jax.Array, padding: tuple[int, int],
                   levels: int, policy: ConvPolicy) -> jax.Array:
  """A stride-1 conv (NWC/WIO) from three half-size convs: 3/4 of the FLOPs.

  Karatsuba's product of two polynomials split into even and odd
  coefficients, applied to the correlation ``y[m] = sum_j x[m + j] @ w[j]``:
  with the even/odd samples and taps ``x_e, x_o, w_e, w_o`` and ``A = x_e *
  w_e``, ``B = x_o * w_o``, ``C = (x_o + x_e[1:]) * (w_e + w_o)`` (stride-1
  correlations of half the length with half the taps, each 1/4 of the
  work), ``y_even = A + B`` and ``y_odd = C - B - A[1:]``. Exact in real
  arithmetic; in float32 it differs from one conv by rounding (~1e-6
  relative, tested). Its gradients are the same three convs transposed.
  The half-size convs split again (`karatsuba_or_xla_conv`) while
  ``levels`` allows and they are long and big enough (``policy``): 9/16 of
  the FLOPs at two levels.
  """
  batch, length, cin = x.shape
  kernel_size, _, cout = kernel.shape
  out_length = conv_out_length(length, kernel_size, 1, padding)
  half_out, half_taps = -(-out_length // 2), -(-kernel_size // 2)
  # An even number of taps (a zero tap last), and x cropped or padded to
  # exactly the 2 * (half_out + half_taps) samples the halves read.
  kernel = jnp.pad(kernel, ((0, 2 * half_taps - kernel_size), (0, 0), (0, 0)))
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0),
               (padding[0], 2 * (half_out + half_taps) - length - padding[0],
                0),
               (0, 0, 0)))
  x = x.reshape(batch, half_out + half_taps, 2, cin)
  x_even, x_odd = x[:, :, 0], x[:, :, 1]
  kernel = kernel.reshape(half_taps, 2, cin, cout)
  w_even, w_odd = kernel[:, 0], kernel[:, 1]

  def half_conv(x, w):
    return karatsuba_or_xla_conv(x, w, (0, 0), levels - 1, policy)

  a = half_conv(x_even, w_even)    # half_out + 1 samples
  b = half_conv(x_odd[:, :-1], w_odd)
  c = half_conv(x_odd[:, :-1] + x_even[:, 1:], w_even + w_odd)
  y_even = a[:, :-1] + b
  y_odd = c - b - a[:, 1:]
  y = jnp.stack([y_even, y_odd], axis=2).reshape(batch, 2 * half_out, cout)
  return y[:, :out_length]


def karatsuba_or_xla_conv(x: jax.Array, kernel: jax.Array,
                          padding: tuple[int, int], levels: int,
                          policy: ConvPolicy) -> jax.Array:
  """`karatsuba_conv` where ``policy`` deems the conv long and big enough,
  else XLA's conv.

  float32 only: in bfloat16 the rounding of the sums (and of A, B, C before
  ``C - B - A``) would add error a plain conv does not have, and bfloat16 is
  for accelerators, whose convs are fast as they are.
  """
  kernel_size, cin, cout = kernel.shape
  out_length = conv_out_length(x.shape[1], kernel_size, 1, padding)
  macs = (policy.decision_batch(x.shape[0]) * out_length * kernel_size * cin *
          cout)
  if (levels > 0 and kernel_size > 1 and
      out_length >= policy.karatsuba_min_out_length and
      macs >= policy.karatsuba_min_macs and
      x.dtype == jnp.float32 and kernel.dtype == jnp.float32):
    return karatsuba_conv(x, kernel, padding, levels, policy)
  return xla_conv(x, kernel, 1, padding)
