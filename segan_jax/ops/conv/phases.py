"""The phase form of a strided conv, and XLA's conv with its gradient.

The gradient of a strided conv is slow in XLA (its input gradient is a conv
over the zero-dilated cotangent). The same conv written over the input's
phases is a stride-1 conv, whose gradients are stride-1 convs too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from segan_jax.ops.conv import prepared
from segan_jax.ops.conv.policy import ConvPolicy
from segan_jax.ops.conv.shapes import conv_out_length
from segan_jax.ops.conv.stride1 import stride1_conv
from segan_jax.ops.conv.xla import xla_conv


def phase_conv(x: jax.Array, kernel: jax.Array, stride: int,
               padding: tuple[int, int], policy: ConvPolicy) -> jax.Array:
  """The strided conv as one stride-1 conv over the input's phases.

  ``y[t] = sum_k xp[stride*t + k] @ w[k]``; with ``k = stride*j + p`` this is
  ``sum_j x2[t + j] @ w2[j]`` where ``x2[m]`` stacks the ``stride`` samples
  ``xp[stride*m + p]`` as channels (a free reshape) and ``w2[j]`` stacks the
  taps ``w[stride*j + p]`` the same way (zero taps pad K to a multiple of
  the stride). Same numbers as the strided conv, but its gradients are
  stride-1 convs (`stride1_conv`).
  """
  batch, length, cin = x.shape
  kernel_size, _, cout = kernel.shape
  out_length = conv_out_length(length, kernel_size, stride, padding)
  taps = -(-kernel_size // stride)
  kernel = jnp.pad(kernel, ((0, taps * stride - kernel_size), (0, 0), (0, 0)))
  padded_length = stride * (out_length - 1 + taps)
  lo = padding[0]
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (lo, padded_length - length - lo, 0), (0, 0, 0)))
  return stride1_conv(xp.reshape(batch, padded_length // stride,
                                 stride * cin),
                      kernel.reshape(taps, stride * cin, cout), (0, 0),
                      policy)


def phase_grad_conv(x: jax.Array, kernel: jax.Array, stride: int,
                    padding: tuple[int, int], policy: ConvPolicy,
                    xla_forward: bool) -> jax.Array:
  """A strided conv whose gradient is the phase form's.

  Under differentiation: XLA's strided conv forward (the phase form's
  forward and backward together were slower over the train step), and the
  gradient of `phase_conv`. Evaluated alone (inference, or a forward no
  gradient flows through): XLA's conv if ``xla_forward`` (the
  'xla_phase_grad' form), else `phase_conv` (the 'phases' form, whose
  Karatsuba stride-1 convs do fewer multiplies).
  """
  if prepared.active():  # Inference with prepared kernels: no gradient.
    return _conv_alone(x, kernel, stride, padding, policy, xla_forward)
  return _phase_grad_conv(x, kernel, stride, padding, policy, xla_forward)


def _conv_alone(x, kernel, stride, padding, policy, xla_forward):
  if xla_forward:
    return xla_conv(x, kernel, stride, padding)
  return phase_conv(x, kernel, stride, padding, policy)


def _phase_grad_conv_fwd(x, kernel, stride, padding, policy, xla_forward):
  del xla_forward  # XLA's conv either way.
  return xla_conv(x, kernel, stride, padding), (x, kernel)


def _phase_grad_conv_bwd(stride, padding, policy, xla_forward, residuals,
                         cotangent):
  del xla_forward
  x, kernel = residuals
  # The phase form's forward is not needed here and is removed by XLA.
  _, vjp = jax.vjp(lambda x, w: phase_conv(x, w, stride, padding, policy),
                   x, kernel)
  return vjp(cotangent)


_phase_grad_conv = jax.custom_vjp(_conv_alone, nondiff_argnums=(2, 3, 4, 5))
_phase_grad_conv.defvjp(_phase_grad_conv_fwd, _phase_grad_conv_bwd)
