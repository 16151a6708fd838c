"""The basic GAN of the original student project: G(z) -> waveform, D judges
real clean windows against G's; BCE (non-saturating) or LSGAN losses. It
generates rather than enhances."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from segan_jax import input_pipeline
from segan_jax import losses
from segan_jax import models
from segan_jax import optimizers
from segan_jax.config import Config
from segan_jax.systems import common

NETWORKS = ('g', 'd')
ENHANCES = False
WARM_START_FAMILY = 'gan'

_LOSSES = {
    'bce': (losses.bce_discriminator_loss, losses.nonsaturating_generator_loss),
    'lsgan': (losses.lsgan_discriminator_loss, losses.lsgan_generator_loss),
}


def generator(config: Config) -> nn.Module:
  return models.GanGenerator(config.features, config.window, config.kernel,
                             dtype=jnp.dtype(config.dtype))


def discriminator(config: Config) -> nn.Module:
  return models.GanDiscriminator(config.features, config.kernel,
                                 dtype=jnp.dtype(config.dtype))


def latent_shape(config: Config) -> tuple[int]:
  return (config.latent_dim,)


def signature(config: Config) -> dict:
  return dict(model=config.model, features=list(config.features),
              kernel=config.kernel, window=config.window,
              latent_dim=config.latent_dim)


def create_states(config: Config, rng: jax.Array, total_steps: int | None = None,
                  train_windows: input_pipeline.WindowedPairs | None = None):
  """``{'g', 'd'}`` train states."""
  del train_windows  # nothing drawn from the data
  tx = optimizers.make_optimizer(config, total_steps)
  g_rng, d_rng = jax.random.split(rng)
  g_module, d_module = generator(config), discriminator(config)
  g_params = common.init_params(g_module, g_rng,
                                jnp.zeros((1, config.latent_dim)))
  d_params = common.init_params(d_module, d_rng, jnp.zeros((1, config.window)))
  return {'g': common.new_state(g_module, g_params, tx),
          'd': common.new_state(d_module, d_params, tx)}


def step(states, batch, rng, *, latent_dim: int, gan_loss: str,
         remat: str = 'none', axis_name: str | None = None):
  """One update of the basic GAN: D on real clean windows vs G(z), then G."""
  g_state, d_state = states['g'], states['d']
  real = batch['clean']
  local_batch = real.shape[0]
  z = models.sample_latent(jax.random.fold_in(rng, g_state.step),
                           common.example_indices(local_batch, axis_name),
                           (latent_dim,))
  d_loss, g_loss = _LOSSES[gan_loss]
  discriminate = common.rematerialized(
      lambda d_params, x: d_state.apply_fn({'params': d_params}, x), remat)
  generate = common.rematerialized(
      lambda p: g_state.apply_fn({'params': p}, z), remat)

  def d_loss_fn(d_params, fake):
    logits = discriminate(d_params, jnp.concatenate([real, fake], axis=0))
    real_logits, fake_logits = logits[:local_batch], logits[local_batch:]
    return d_loss(real_logits, fake_logits), {
        'd_real': jnp.mean(real_logits), 'd_fake': jnp.mean(fake_logits)}

  def g_loss_fn(d_params, fake):
    return g_loss(discriminate(d_params, fake)), {}

  g_state, d_state, metrics = common.adversarial_update(
      g_state, d_state, generate, d_loss_fn, g_loss_fn, axis_name)
  return {'g': g_state, 'd': d_state}, common.device_mean(metrics, axis_name)


def make_step(config: Config):
  if config.mask_loss_weight:
    raise ValueError('mask_loss_weight needs a model that enhances (segan '
                     'or autoencoder); gan generates from z')
  if config.metric_discriminator:
    raise ValueError('metric_discriminator is a segan option; gan generates '
                     'from z, with no clean reference to score')
  return functools.partial(step, latent_dim=config.latent_dim,
                           gan_loss=config.gan_loss, remat=config.remat)
