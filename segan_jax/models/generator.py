"""SEGAN generator: a skip-connected 1-D conv encoder-decoder (Pascual et al. 2017).

With ``use_z=False`` the same network is the denoising autoencoder baseline.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segan_jax.model_sizes import PAPER_FEATURES
from segan_jax.models import layers


def decoder_features(encoder_features: Sequence[int]) -> tuple[int, ...]:
  """Decoder widths mirror the encoder's; the last layer gives one channel."""
  return tuple(reversed(encoder_features[:-1])) + (1,)


def latent_shape(window_size: int, encoder_features: Sequence[int],
                 stride: int = 2) -> tuple[int, int]:
  """Shape of z (and of the encoder's code) for one example: [time, channels]."""
  downsampling = stride**len(encoder_features)
  if window_size % downsampling:
    raise ValueError(
        f'window_size {window_size} must be a multiple of stride**num_layers '
        f'= {downsampling}')
  return (window_size // downsampling, encoder_features[-1])


def sample_latent(rng: jax.Array, example_index: jax.Array,
                  shape: tuple[int, ...]) -> jax.Array:
  """z ~ N(0, 1) per example, keyed by the example's global index.

  Keying by index (not by position in a device's batch) gives every example
  the same z however a batch is split over devices or a signal over blocks.
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(example_index)
  return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


class Generator(nn.Module):
  """Maps a noisy waveform ``[B, T]`` (and z ``[B, T/2^L, C_L]``) to ``[B, T]``.

  ``skip_preactivation``: the skip connections carry the encoder's conv
  outputs before its PReLU, as in santi-pdp/segan; a PReLU's slope starts at
  0, so after it a skip would pass only the positive half of each feature.
  ``residual``: the output is ``noisy + correction`` with the last layer
  initialised to zero, so G starts as the identity and learns what to take
  away, instead of ``tanh`` of the last layer as in the paper.
  """

  encoder_features: Sequence[int] = PAPER_FEATURES
  kernel_size: int = 31
  stride: int = 2
  use_z: bool = True
  skip_preactivation: bool = True
  residual: bool = False
  kernel_init: str = 'truncated_normal'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, noisy: jax.Array, z: jax.Array | None = None) -> jax.Array:
    if self.use_z and z is None:
      raise ValueError('this generator uses a latent z; pass one of shape '
                       '[batch, *latent_shape(...)]')
    conv_kwargs = dict(kernel_size=self.kernel_size, stride=self.stride,
                       dtype=self.dtype,
                       kernel_init=layers.KERNEL_INITS[self.kernel_init])
    h = noisy[..., None].astype(self.dtype)
    skips = []
    for i, features in enumerate(self.encoder_features):
      h = layers.Conv1D(features, name=f'enc_{i}', **conv_kwargs)(h)
      if self.skip_preactivation:
        skips.append(h)
      h = layers.PReLU(name=f'enc_prelu_{i}')(h)
      if not self.skip_preactivation:
        skips.append(h)
    if self.use_z:
      h = jnp.concatenate([h, z.astype(self.dtype)], axis=-1)
    # The code itself (deepest encoder output) is not re-used as a skip.
    skips.pop()
    out_features = decoder_features(self.encoder_features)
    last = len(out_features) - 1
    for i, features in enumerate(out_features):
      kwargs = conv_kwargs
      if i == last and self.residual:
        kwargs = dict(conv_kwargs, kernel_init=nn.initializers.zeros)
      h = layers.ConvTranspose1D(features, name=f'dec_{i}', **kwargs)(h)
      if i < last:
        h = layers.PReLU(name=f'dec_prelu_{i}')(h)
        h = jnp.concatenate([h, skips.pop()], axis=-1)
    if self.residual:
      return noisy.astype(jnp.float32) + h[..., 0].astype(jnp.float32)
    return jnp.tanh(h[..., 0]).astype(jnp.float32)
