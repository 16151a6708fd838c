"""The channels-first form of a stride-1 conv with few output channels.

XLA:CPU's conv runs such convs (SEGAN's 2-channel polyphase output layer)
far below its rate on wider ones; one matmul over the input channels, then
shifted sums, does the same work at matmul speed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from segan_jax.ops.conv.prepared import kernel_operand
from segan_jax.ops.conv.shapes import conv_out_length


def channels_first_conv(x: jax.Array, kernel: jax.Array,
                        padding: tuple[int, int]) -> jax.Array:
  """A stride-1 conv with few output channels: one matmul, then shifted sums.

  ``z[t, k] = x[t] @ w[k]`` for all taps at once (a ``[B*L, Cin] @ [Cin,
  K*Cout]`` matmul), then ``y[m] = sum_k z[m + k - pad, k]``, one fused
  pass.
  """
  batch, length, cin = x.shape
  kernel_size, _, cout = kernel.shape
  out_length = conv_out_length(length, kernel_size, 1, padding)
  z = lax.dot_general(
      x, kernel_operand('channels_first', kernel.transpose(1, 0, 2).reshape(
          cin, kernel_size * cout)),
      (((2,), (0,)), ((), ())))
  z = lax.pad(z.reshape(batch, length, kernel_size, cout),
              jnp.zeros((), z.dtype),
              ((0, 0, 0), (padding[0], padding[1], 0), (0, 0, 0), (0, 0, 0)))
  return sum(z[:, k:k + out_length, k] for k in range(kernel_size))
