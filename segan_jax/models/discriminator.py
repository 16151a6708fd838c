"""SEGAN discriminator: strided convs with virtual batch norm on (signal, noisy) pairs."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segan_jax.model_sizes import PAPER_FEATURES
from segan_jax.models import layers


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
  kernel_init: str = 'truncated_normal'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pairs: jax.Array, reference: jax.Array,
               split_reference: bool = False, return_features: bool = False):
    """Logits of ``pairs`` (with ``return_features``: and the activations
    of ``pairs`` after each conv layer, for a feature-matching loss).

    By default the reference batch and the pairs go through each conv
    together (one bigger batch); only the normalisation treats them
    differently. ``split_reference`` convolves them separately instead: the
    same numbers, for callers that differentiate with respect to the pairs
    only (G's update): then the backward pass covers the pairs alone, not
    the reference batch (4 times as many windows by default).
    """
    num_ref = reference.shape[0]
    ref_h, x_h = reference.astype(self.dtype), pairs.astype(self.dtype)
    features_out = []
    for i, features in enumerate(self.features):
      # No bias: VBN subtracts the mean, so a bias would cancel exactly; its
      # gradient would be rounding noise that RMSprop inflates to full steps.
      conv = layers.Conv1D(features, kernel_size=self.kernel_size,
                           stride=self.stride, use_bias=False,
                           dtype=self.dtype,
                           kernel_init=layers.KERNEL_INITS[self.kernel_init],
                           name=f'conv_{i}')
      if split_reference:
        ref_h, x_h = conv(ref_h), conv(x_h)
      else:
        h = conv(jnp.concatenate([ref_h, x_h], axis=0))
        ref_h, x_h = h[:num_ref], h[num_ref:]
      ref_h, x_h = layers.VirtualBatchNorm(name=f'vbn_{i}')(ref_h, x_h)
      ref_h = nn.leaky_relu(ref_h, self.negative_slope)
      x_h = nn.leaky_relu(x_h, self.negative_slope)
      features_out.append(x_h)
    h = layers.Conv1D(1, kernel_size=1, stride=1, dtype=self.dtype,
                      kernel_init=layers.KERNEL_INITS[self.kernel_init],
                      name='conv_out')(x_h)
    h = h.reshape(h.shape[0], -1).astype(jnp.float32)
    logits = nn.Dense(1, name='logit')(h)[:, 0]
    return (logits, features_out) if return_features else logits
