"""The denoising autoencoder baseline: SEGAN's G without z or D, trained on
a reconstruction loss (L1 or L2, plus an optional multi-resolution STFT
term)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from segan_jax import audio
from segan_jax import input_pipeline
from segan_jax import losses
from segan_jax import optimizers
from segan_jax.config import Config
from segan_jax.systems import common
from segan_jax.systems import segan

NETWORKS = ('g',)
ENHANCES = True
WARM_START_FAMILY = segan.WARM_START_FAMILY

_RECONSTRUCTION_LOSSES = {'l1': losses.l1_loss, 'l2': losses.l2_loss}


def generator(config: Config) -> nn.Module:
  return segan.generator(config, use_z=False)


def latent_shape(config: Config) -> None:
  del config  # never a z
  return None


def signature(config: Config) -> dict:
  return segan.generator_signature(config, use_z=False)


def create_states(config: Config, rng: jax.Array, total_steps: int | None = None,
                  train_windows: input_pipeline.WindowedPairs | None = None):
  """``{'g'}``: G's train state."""
  del train_windows  # nothing drawn from the data
  tx = optimizers.make_optimizer(config, total_steps)
  g_rng, _ = jax.random.split(rng)  # G gets the key SEGAN's G gets
  module = generator(config)
  params = segan.init_generator(config, g_rng, module, None)
  return {'g': common.new_state(module, params, tx)}


def step(states, batch, rng, *, reconstruction: str, stft_weight: float = 0.0,
         mask_loss_weight: float = 0.0, mask_floor: float = 0.0,
         remat: str = 'none', axis_name: str | None = None):
  """One update of the denoising autoencoder."""
  del rng  # deterministic: no z, no dropout
  g_state = states['g']
  loss_fn = _RECONSTRUCTION_LOSSES[reconstruction]

  generate = common.rematerialized(
      lambda params: g_state.apply_fn({'params': params}, batch['noisy']),
      remat)

  def loss(params):
    enhanced = generate(params)
    metrics = {'g_l1': losses.l1_loss(enhanced, batch['clean'])}
    value = common.add_mask_term(loss_fn(enhanced, batch['clean']), enhanced,
                                 batch['noisy'], batch['clean'],
                                 mask_loss_weight, mask_floor, metrics)
    value = common.add_stft_term(value, enhanced, batch['clean'], stft_weight,
                                 metrics)
    return value, metrics

  (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(
      g_state.params)
  grads = common.device_mean(grads, axis_name)
  metrics = {'loss': value, **metrics, 'g_grad_norm': common.global_norm(grads)}
  return ({'g': g_state.apply_gradients(grads=grads)},
          common.device_mean(metrics, axis_name))


def make_step(config: Config):
  if config.metric_discriminator:
    raise ValueError('metric_discriminator is a segan option; the '
                     'autoencoder has no discriminator')
  return functools.partial(
      step, reconstruction=config.reconstruction_loss,
      stft_weight=config.stft_weight,
      mask_loss_weight=config.mask_loss_weight,
      mask_floor=audio.attenuation_floor(config.attenuation_limit_db),
      remat=config.remat)
