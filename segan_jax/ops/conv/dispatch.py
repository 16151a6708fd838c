"""`conv1d` and `conv_transpose1d`: each call by the form its policy picks."""

from __future__ import annotations

from typing import Sequence

import jax

from segan_jax.ops.conv.im2col import im2col_conv
from segan_jax.ops.conv.phases import phase_grad_conv
from segan_jax.ops.conv.policy import (CONV1D, CONV1D_FORMS,
                                       CONV_TRANSPOSE1D,
                                       CONV_TRANSPOSE1D_FORMS, ConvPolicy,
                                       current_policy, layer_key)
from segan_jax.ops.conv.polyphase import (interleave_phases, polyphase_kernel,
                                          polyphase_padding)
from segan_jax.ops.conv.shapes import (conv_out_length,
                                       conv_transpose_same_padding)
from segan_jax.ops.conv.stride1 import stride1_conv
from segan_jax.ops.conv.taps import grouped_taps
from segan_jax.ops.conv.xla import xla_conv, xla_conv_transpose


def _conv1d_form(x_shape: Sequence[int], kernel_shape: Sequence[int],
                 out_length: int, stride: int, padding: tuple[int, int],
                 dtype, impl: str, policy: ConvPolicy) -> str:
  if impl == 'auto':
    batch = policy.decision_batch(x_shape[0])
    impl = policy.conv1d_form(
        batch, out_length, stride,
        layer_key(CONV1D, batch, x_shape[1], x_shape[2], kernel_shape[2],
                  kernel_shape[0], stride, tuple(padding), dtype))
  if impl not in CONV1D_FORMS:
    raise ValueError(f'unknown conv impl {impl!r}')
  return impl


def _conv_transpose1d_form(x_shape: Sequence[int],
                           kernel_shape: Sequence[int], stride: int, dtype,
                           impl: str, policy: ConvPolicy) -> str:
  if impl == 'auto':
    impl = policy.conv_transpose1d_form(
        x_shape[1],
        layer_key(CONV_TRANSPOSE1D, policy.decision_batch(x_shape[0]),
                  x_shape[1], x_shape[2], kernel_shape[2], kernel_shape[0],
                  stride, None, dtype))
  if impl not in CONV_TRANSPOSE1D_FORMS:
    raise ValueError(f'unknown conv transpose impl {impl!r}')
  return impl


def conv1d(x: jax.Array, kernel: jax.Array, stride: int,
           padding: tuple[int, int], impl: str = 'auto',
           policy: ConvPolicy | None = None) -> jax.Array:
  """``lax.conv_general_dilated`` on NWC/WIO, by one of `CONV1D_FORMS`.

  ``impl``: a form, or 'auto' for the one ``policy`` picks for this shape
  (`ConvPolicy.conv1d_form`). ``policy``: None for `current_policy()`; it
  also tunes the forms (Karatsuba, 'taps' groups).
  """
  policy = current_policy() if policy is None else policy
  kernel_size = kernel.shape[0]
  out_length = conv_out_length(x.shape[1], kernel_size, stride, padding)
  impl = _conv1d_form(x.shape, kernel.shape, out_length, stride, padding,
                      x.dtype, impl, policy)
  if impl == 'xla':
    return xla_conv(x, kernel, stride, padding)
  if impl == 'taps':
    return grouped_taps(x, kernel, stride, padding[0], out_length,
                        transpose=False, max_groups=policy.tap_groups)
  if impl in ('phases', 'xla_phase_grad'):
    return phase_grad_conv(x, kernel, stride, tuple(padding), policy,
                           impl == 'xla_phase_grad')
  return im2col_conv(x, kernel, stride, padding, out_length)


def conv_transpose1d(x: jax.Array, kernel: jax.Array, stride: int,
                     impl: str = 'auto',
                     policy: ConvPolicy | None = None) -> jax.Array:
  """``lax.conv_transpose(x, kernel, (stride,), 'SAME', ('NWC','WIO','NWC'))``
  by one of `CONV_TRANSPOSE1D_FORMS`.

  'polyphase' and 'im2col' run one stride-1 conv over the undilated input
  whose ``stride * Cout`` output channels hold the phases (`polyphase`), by
  `stride1_conv` or as a matmul; they re-lay the kernel out on every call
  (`prepared.kernel_operand` makes that once for inference). 'taps'
  (`grouped_taps`) reads the kernel as stored. ``impl`` and ``policy`` as in
  `conv1d`.
  """
  policy = current_policy() if policy is None else policy
  impl = _conv_transpose1d_form(x.shape, kernel.shape, stride, x.dtype, impl,
                                policy)
  if impl == 'xla':
    return xla_conv_transpose(x, kernel, stride)
  if impl == 'taps':
    return grouped_taps(
        x, kernel, stride,
        conv_transpose_same_padding(kernel.shape[0], stride),
        stride * x.shape[1], transpose=True, max_groups=policy.tap_groups)
  d_min, phase_kernel = polyphase_kernel(kernel, stride)
  padding = polyphase_padding(d_min, phase_kernel.shape[0])
  if impl == 'polyphase':
    y = stride1_conv(x, phase_kernel, padding, policy)
  else:
    y = conv1d(x, phase_kernel, 1, padding, impl='im2col', policy=policy)
  return interleave_phases(y, stride)


def conv1d_form(x_shape: Sequence[int], kernel_shape: Sequence[int],
                stride: int, padding: tuple[int, int], impl: str = 'auto',
                policy: ConvPolicy | None = None, dtype='float32') -> str:
  """The form `conv1d` computes this shape of ``dtype`` by."""
  policy = current_policy() if policy is None else policy
  out_length = conv_out_length(x_shape[1], kernel_shape[0], stride, padding)
  return _conv1d_form(x_shape, kernel_shape, out_length, stride, padding,
                      dtype, impl, policy)

