"""XLA's own convolutions on NWC / WIO layouts: the reference every form equals."""

from __future__ import annotations

import jax
from jax import lax

from segan_jax.ops.conv.prepared import kernel_operand

DIMENSION_NUMBERS = ('NWC', 'WIO', 'NWC')


def xla_conv(x: jax.Array, kernel: jax.Array, stride: int,
             padding: tuple[int, int]) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel_operand('xla', kernel), window_strides=(stride,), padding=(padding,),
      dimension_numbers=DIMENSION_NUMBERS)


def xla_conv_transpose(x: jax.Array, kernel: jax.Array,
                       stride: int) -> jax.Array:
  """``lax.conv_transpose`` with 'SAME' padding: a conv over the zero-dilated
  input (at stride 2, half of its multiplies hit inserted zeros)."""
  return lax.conv_transpose(x, kernel_operand('xla', kernel), strides=(stride,), padding='SAME',
                            dimension_numbers=DIMENSION_NUMBERS)
