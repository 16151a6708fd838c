"""Train states of the two networks and their creation from a Config."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from segan_jax import models
from segan_jax.config import Config


class DiscriminatorState(train_state.TrainState):
  """D's train state plus its virtual-batch-norm reference batch [N, T, 2].

  The reference batch is data, not a parameter: drawn once when training
  starts, never updated, and checkpointed so that a resumed run uses the same.
  """

  reference: jax.Array


def make_generator(config: Config) -> nn.Module:
  return models.Generator(encoder_features=config.features,
                          kernel_size=config.kernel, use_z=config.use_z)


def make_discriminator(config: Config) -> nn.Module:
  return models.Discriminator(features=config.features,
                              kernel_size=config.kernel)


def make_optimizer(config: Config) -> optax.GradientTransformation:
  # RMSprop as in the paper (decay 0.9, TensorFlow's default).
  return optax.rmsprop(config.learning_rate, decay=0.9)


def latent_shape(config: Config) -> tuple[int, int]:
  return models.latent_shape(config.window, config.features)


def create_states(config: Config, rng: jax.Array,
                  reference: np.ndarray | None = None
                  ) -> dict[str, train_state.TrainState]:
  """Initialises the networks of ``config.model`` from ``rng``.

  Returns ``{'g': ..., 'd': ...}`` (``{'g': ...}`` for the autoencoder). For
  SEGAN, ``reference`` is D's VBN reference batch ``[N, T, 2]`` (zeros of
  the configured shape when None, e.g. to restore a checkpoint into).
  """
  g_rng, d_rng = jax.random.split(rng)
  if config.model == 'gan':
    return _create_gan_states(config, g_rng, d_rng)
  noisy = jnp.zeros((1, config.window), jnp.float32)
  z = jnp.zeros((1,) + latent_shape(config), jnp.float32) if config.use_z else None
  generator = make_generator(config)
  g_params = jax.jit(generator.init)(g_rng, noisy, z)['params']
  states = {'g': train_state.TrainState.create(
      apply_fn=generator.apply, params=g_params, tx=make_optimizer(config))}
  if config.model == 'autoencoder':
    return states
  if reference is None:
    reference = np.zeros((config.vbn_reference_size, config.window, 2),
                         np.float32)
  discriminator = make_discriminator(config)
  pair = jnp.zeros((1, config.window, 2), jnp.float32)
  d_params = jax.jit(discriminator.init)(d_rng, pair, pair)['params']
  states['d'] = DiscriminatorState.create(
      apply_fn=discriminator.apply, params=d_params, tx=make_optimizer(config),
      reference=jnp.asarray(reference, jnp.float32))
  return states


def _create_gan_states(config: Config, g_rng: jax.Array, d_rng: jax.Array):
  generator = models.GanGenerator(config.features, config.window,
                                  config.kernel)
  discriminator = models.GanDiscriminator(config.features, config.kernel)
  g_params = jax.jit(generator.init)(
      g_rng, jnp.zeros((1, config.latent_dim)))['params']
  d_params = jax.jit(discriminator.init)(
      d_rng, jnp.zeros((1, config.window)))['params']
  return {
      'g': train_state.TrainState.create(apply_fn=generator.apply,
                                         params=g_params,
                                         tx=make_optimizer(config)),
      'd': train_state.TrainState.create(apply_fn=discriminator.apply,
                                         params=d_params,
                                         tx=make_optimizer(config)),
  }
