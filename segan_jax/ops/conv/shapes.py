"""Output lengths and paddings shared by the conv forms."""

from __future__ import annotations

import numpy as np


def conv_out_length(length: int, kernel_size: int, stride: int,
                    padding: tuple[int, int]) -> int:
  """Output samples of a conv over ``length`` samples padded by ``padding``."""
  return (length + padding[0] + padding[1] - kernel_size) // stride + 1


def conv_transpose_same_padding(kernel_size: int, stride: int) -> int:
  """Left padding of the dilated input in ``lax.conv_transpose(..., 'SAME')``."""
  pad_len = kernel_size + stride - 2
  if stride > kernel_size - 1:
    return kernel_size - 1
  return int(np.ceil(pad_len / 2))
