"""The stride-1 conv under the phase and polyphase forms, by how it is used.

Evaluated alone (inference), the form with the fewest multiplies or the
best matmul shape (channels-first, Karatsuba); under differentiation a form
whose forward and gradient together are fastest (``custom_vjp``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from segan_jax.ops.conv import prepared
from segan_jax.ops.conv.channels_first import channels_first_conv
from segan_jax.ops.conv.karatsuba import karatsuba_or_xla_conv
from segan_jax.ops.conv.policy import ConvPolicy


def stride1_conv(x: jax.Array, kernel: jax.Array, padding: tuple[int, int],
                 policy: ConvPolicy) -> jax.Array:
  """A stride-1 conv: alone, `channels_first_conv` for few output channels,
  else Karatsuba ``policy.karatsuba_levels`` deep; differentiated,
  ``policy.karatsuba_train_levels`` deep."""
  if prepared.active():  # Inference with prepared kernels: no gradient.
    return _conv_alone(x, kernel, padding, policy)
  return _stride1_conv(x, kernel, padding, policy)


def _conv_alone(x, kernel, padding, policy):
  if (kernel.shape[-1] <= policy.channels_first_max_features and
      kernel.shape[0] > 1 and x.dtype == jnp.float32):
    return channels_first_conv(x, kernel, padding)
  return karatsuba_or_xla_conv(x, kernel, padding, policy.karatsuba_levels,
                               policy)


def _train_conv(x, kernel, padding, policy):
  return karatsuba_or_xla_conv(x, kernel, padding,
                               policy.karatsuba_train_levels, policy)


def _stride1_conv_fwd(x, kernel, padding, policy):
  return _train_conv(x, kernel, padding, policy), (x, kernel)


def _stride1_conv_bwd(padding, policy, residuals, cotangent):
  x, kernel = residuals
  # Only the gradient is used; XLA removes the recomputed forward.
  _, vjp = jax.vjp(lambda x, w: _train_conv(x, w, padding, policy), x, kernel)
  return vjp(cotangent)


_stride1_conv = jax.custom_vjp(_conv_alone, nondiff_argnums=(2, 3))
_stride1_conv.defvjp(_stride1_conv_fwd, _stride1_conv_bwd)
