"""The stride-1 conv under the phase and polyphase forms, by how it is used.

Evaluated alone (inference), the form with the fewest multiplies or the
best matmul shape (channels-first, Karatsuba); under differentiation a form
whose forward and gradient together are fastest (``custom_vjp``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from segan_jax.ops.conv.channels_first import channels_first_conv
from segan_jax.ops.conv.karatsuba import karatsuba_or_xla_conv
from segan_jax.ops.conv.policy import ConvPolicy


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def stride1_conv(x: jax.Array, kernel: jax.Array, padding: tuple[int, int],
                 policy: ConvPolicy) -> jax.Array:
  """A stride-1 conv: alone, `channels_first_conv` for few output channels,
  else Karatsuba ``policy.karatsuba_levels`` deep; differentiated,
  ``policy.karatsuba_train_levels`` deep."""
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


stride1_conv.defvjp(_stride1_conv_fwd, _stride1_conv_bwd)
