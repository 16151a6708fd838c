"""The basic GAN of the original student project: G(z) -> waveform, D -> logit.

Unconditional and small: the smallest complete example of the training
machinery (two networks, two optimizers, one compiled step).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segan_jax.models import layers
from segan_jax.models.generator import decoder_features


class GanGenerator(nn.Module):
  """z ``[B, latent]`` -> dense seed ``[B, T/2^L, C_L]`` -> transposed convs -> ``[B, T]``."""

  features: Sequence[int]
  window: int
  kernel_size: int = 25
  dtype: Any = jnp.float32  # of the computation; parameters stay float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    length = self.window // 2**len(self.features)
    h = nn.Dense(length * self.features[-1], dtype=self.dtype,
                 name='project')(z.astype(self.dtype))
    h = layers.PReLU(name='project_prelu')(
        h.reshape(z.shape[0], length, self.features[-1]))
    out = decoder_features(self.features)
    for i, features in enumerate(out):
      h = layers.ConvTranspose1D(features, kernel_size=self.kernel_size,
                                 dtype=self.dtype, name=f'dec_{i}')(h)
      if i < len(out) - 1:
        h = layers.PReLU(name=f'dec_prelu_{i}')(h)
    return jnp.tanh(h[..., 0].astype(jnp.float32))


class GanDiscriminator(nn.Module):
  """Strided convs with LeakyReLU 0.2, dense -> one logit per waveform."""

  features: Sequence[int]
  kernel_size: int = 25
  dtype: Any = jnp.float32  # of the computation; parameters stay float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x[..., None].astype(self.dtype)
    for i, features in enumerate(self.features):
      h = layers.Conv1D(features, kernel_size=self.kernel_size,
                        dtype=self.dtype, name=f'conv_{i}')(h)
      h = nn.leaky_relu(h, 0.2)
    # The logit in float32, like SEGAN's D: the losses are computed in it.
    h = h.reshape(h.shape[0], -1).astype(jnp.float32)
    return nn.Dense(1, name='logit')(h)[:, 0]
