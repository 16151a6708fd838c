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
  return models.Generator(
      encoder_features=config.features, kernel_size=config.kernel,
      use_z=config.use_z,
      skip_preactivation=config.skip_connections == 'preactivation',
      residual=config.residual, kernel_init=config.kernel_init)


def make_discriminator(config: Config) -> nn.Module:
  return models.Discriminator(features=config.d_features,
                              kernel_size=config.kernel,
                              kernel_init=config.kernel_init)


def learning_rate_schedule(config: Config,
                           total_steps: int | None = None) -> optax.Schedule:
  """Linear warm-up, then cosine decay to lr_final_fraction at total_steps."""
  peak = config.learning_rate
  decay = config.lr_final_fraction != 1.0 and total_steps
  if not config.warmup_steps and not decay:
    return optax.constant_schedule(peak)
  if not decay:
    return optax.linear_schedule(0.0, peak, config.warmup_steps)
  return optax.warmup_cosine_decay_schedule(
      0.0 if config.warmup_steps else peak, peak, config.warmup_steps,
      max(total_steps, config.warmup_steps + 1),
      end_value=peak * config.lr_final_fraction)


def make_optimizer(config: Config, total_steps: int | None = None
                   ) -> optax.GradientTransformation:
  """The optimizer of G and D.

  rmsprop is TensorFlow 1's RMSPropOptimizer, which the paper's code uses:
  decay 0.9, epsilon 1e-10 added inside the square root, and accumulators
  that start at 1 rather than 0 (so the first steps are small: a built-in
  warm-up). optax's defaults (eps 1e-8, accumulators at 0) take full-size
  steps from the first update and put a floor under small gradients.
  """
  learning_rate = learning_rate_schedule(config, total_steps)
  if config.optimizer == 'adam':
    return optax.adam(learning_rate, b1=config.adam_b1)
  return optax.rmsprop(learning_rate, decay=0.9, eps=1e-10, initial_scale=1.0,
                       eps_in_sqrt=True)


def latent_shape(config: Config) -> tuple[int, int]:
  return models.latent_shape(config.window, config.features)


def create_states(config: Config, rng: jax.Array,
                  reference: np.ndarray | None = None,
                  total_steps: int | None = None
                  ) -> dict[str, train_state.TrainState]:
  """Initialises the networks of ``config.model`` from ``rng``.

  Returns ``{'g': ..., 'd': ...}`` (``{'g': ...}`` for the autoencoder). For
  SEGAN, ``reference`` is D's VBN reference batch ``[N, T, 2]`` (zeros of
  the configured shape when None, e.g. to restore a checkpoint into).
  ``total_steps`` is the length of the run, for a decaying learning rate.
  """
  tx = make_optimizer(config, total_steps)
  g_rng, d_rng = jax.random.split(rng)
  if config.model == 'gan':
    return _create_gan_states(config, g_rng, d_rng, tx)
  noisy = jnp.zeros((1, config.window), jnp.float32)
  z = jnp.zeros((1,) + latent_shape(config), jnp.float32) if config.use_z else None
  generator = make_generator(config)
  g_params = jax.jit(generator.init)(g_rng, noisy, z)['params']
  states = {'g': train_state.TrainState.create(
      apply_fn=generator.apply, params=g_params, tx=tx)}
  if config.model == 'autoencoder':
    return states
  if reference is None:
    reference = np.zeros((config.vbn_reference_size, config.window, 2),
                         np.float32)
  discriminator = make_discriminator(config)
  pair = jnp.zeros((1, config.window, 2), jnp.float32)
  d_params = jax.jit(discriminator.init)(d_rng, pair, pair)['params']
  states['d'] = DiscriminatorState.create(
      apply_fn=discriminator.apply, params=d_params, tx=tx,
      reference=jnp.asarray(reference, jnp.float32))
  return states


def _create_gan_states(config: Config, g_rng: jax.Array, d_rng: jax.Array,
                       tx: optax.GradientTransformation):
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
                                         tx=tx),
      'd': train_state.TrainState.create(apply_fn=discriminator.apply,
                                         params=d_params,
                                         tx=tx),
  }
