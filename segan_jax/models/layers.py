"""Building blocks shared by the SEGAN generator, discriminator and autoencoder.

All layers work on channels-last 1-D signals, shaped ``[batch, time, channels]``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

# Xavier/Glorot initialisation, as santi-pdp/segan uses for its 1-D convolutions.
default_kernel_init = nn.initializers.xavier_uniform()


def same_padding(kernel_size: int) -> tuple[int, int]:
  """'Same' padding for an odd kernel: a stride-s conv maps length L to L / s."""
  return ((kernel_size - 1) // 2, kernel_size // 2)


class Conv1D(nn.Module):
  """Strided 1-D convolution with 'same' padding (length L -> L / stride)."""

  features: int
  kernel_size: int = 31
  stride: int = 2
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', default_kernel_init,
                        (self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    y = lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=(self.stride,),
        padding=(same_padding(self.kernel_size),),
        dimension_numbers=('NWC', 'WIO', 'NWC'))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class ConvTranspose1D(nn.Module):
  """Strided 1-D transposed convolution (length L -> L * stride)."""

  features: int
  kernel_size: int = 31
  stride: int = 2
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', default_kernel_init,
                        (self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    y = lax.conv_transpose(
        x.astype(self.dtype), kernel.astype(self.dtype),
        strides=(self.stride,), padding='SAME',
        dimension_numbers=('NWC', 'WIO', 'NWC'))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel, initialised to 0 as in SEGAN."""

  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param('alpha', nn.initializers.zeros, (x.shape[-1],),
                       self.param_dtype)
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


class VirtualBatchNorm(nn.Module):
  """Virtual batch normalisation (Salimans et al. 2016, "Improved techniques").

  Each example is normalised with statistics of a fixed reference batch
  combined with its own, so an example's output never depends on the other
  examples of its minibatch (unlike batch norm): the discriminator's output
  for a pair is a function of that pair alone, which also makes data
  parallelism exact. The reference batch's own activations are normalised
  with the reference statistics only.

  Call with ``reference`` (activations of the reference batch at this layer,
  ``[N, T, C]``) and ``x`` (``[B, T, C]``); returns both normalised.
  """

  epsilon: float = 1e-5
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, reference: jax.Array,
               x: jax.Array) -> tuple[jax.Array, jax.Array]:
    features = x.shape[-1]
    gamma = self.param('scale', nn.initializers.ones, (features,),
                       self.param_dtype)
    beta = self.param('bias', nn.initializers.zeros, (features,),
                      self.param_dtype)
    # Statistics in float32 even when the activations are bfloat16.
    ref32 = reference.astype(jnp.float32)
    x32 = x.astype(jnp.float32)
    ref_mean = jnp.mean(ref32, axis=(0, 1))
    ref_mean_sq = jnp.mean(jnp.square(ref32), axis=(0, 1))
    # Each example joins the reference batch as one more member.
    new_coeff = 1.0 / (reference.shape[0] + 1.0)
    mean = new_coeff * jnp.mean(x32, axis=1, keepdims=True) + (
        1.0 - new_coeff) * ref_mean
    mean_sq = new_coeff * jnp.mean(jnp.square(x32), axis=1, keepdims=True) + (
        1.0 - new_coeff) * ref_mean_sq

    def normalize(h, mu, mu_sq):
      var = jnp.maximum(mu_sq - jnp.square(mu), 0.0)
      return (h - mu) * lax.rsqrt(var + self.epsilon) * gamma + beta

    return (normalize(ref32, ref_mean, ref_mean_sq).astype(reference.dtype),
            normalize(x32, mean, mean_sq).astype(x.dtype))
