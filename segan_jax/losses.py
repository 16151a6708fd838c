"""Loss functions: pure, batch-averaged, float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lsgan_discriminator_loss(real_logits: jax.Array,
                             fake_logits: jax.Array) -> jax.Array:
  """Least-squares GAN loss of D: mean (D(real) - 1)^2 + mean D(fake)^2."""
  return jnp.mean(jnp.square(real_logits - 1.0)) + jnp.mean(
      jnp.square(fake_logits))


def lsgan_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Least-squares GAN loss of G: mean (D(fake) - 1)^2."""
  return jnp.mean(jnp.square(fake_logits - 1.0))


def l1_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error over every sample (SEGAN's L1 term, before its weight)."""
  return jnp.mean(jnp.abs(prediction - target))


def l2_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over every sample."""
  return jnp.mean(jnp.square(prediction - target))


def bce_discriminator_loss(real_logits: jax.Array,
                           fake_logits: jax.Array) -> jax.Array:
  """Classic GAN loss of D: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(
      jax.nn.softplus(fake_logits))


def nonsaturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating G loss: -log sigmoid(D(fake)) (strong gradients early)."""
  return jnp.mean(jax.nn.softplus(-fake_logits))
