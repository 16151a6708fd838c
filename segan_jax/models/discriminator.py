"""SEGAN discriminator: strided convs with virtual batch norm on (signal, noisy) pairs."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segan_jax.models import layers
from segan_jax.models.generator import PAPER_FEATURES


def make_pair(signal: jax.Array, noisy: jax.Array) -> jax.Array:
  """Stacks a clean or enhanced signal with its noisy input: ``[B, T, 2]``."""
  return jnp.stack([signal, noisy], axis=-1)


class Discriminator(nn.Module):
  """Scores ``pairs`` ``[B, T, 2]`` with one logit each, ``[B]``.

  ``reference`` ``[N, T, 2]`` is the fixed virtual-batch-norm reference batch
  of real (clean, noisy) pairs, drawn once at the start of training.
  """

  features: Sequence[int] = PAPER_FEATURES
  kernel_size: int = 31
  stride: int = 2
  negative_slope: float = 0.3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pairs: jax.Array, reference: jax.Array) -> jax.Array:
    num_ref = reference.shape[0]
    # Reference and examples go through each conv together (one bigger batch);
    # only the normalisation treats them differently.
    h = jnp.concatenate([reference, pairs], axis=0).astype(self.dtype)
    for i, features in enumerate(self.features):
      # No bias: VBN subtracts the mean, so a bias would cancel exactly; its
      # gradient would be rounding noise that RMSprop inflates to full steps.
      h = layers.Conv1D(features, kernel_size=self.kernel_size,
                        stride=self.stride, use_bias=False, dtype=self.dtype,
                        name=f'conv_{i}')(h)
      ref_h, x_h = layers.VirtualBatchNorm(name=f'vbn_{i}')(h[:num_ref],
                                                            h[num_ref:])
      h = nn.leaky_relu(jnp.concatenate([ref_h, x_h], axis=0),
                        self.negative_slope)
    h = h[num_ref:]
    h = layers.Conv1D(1, kernel_size=1, stride=1, dtype=self.dtype,
                      name='conv_out')(h)
    h = h.reshape(h.shape[0], -1).astype(jnp.float32)
    return nn.Dense(1, name='logit')(h)[:, 0]
