"""SEGAN (Pascual et al. 2017): G enhances noisy windows, D judges
(clean or enhanced, noisy) pairs; G's loss is LSGAN plus weighted L1 (and an
optional multi-resolution STFT term)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segan_jax import audio
from segan_jax import input_pipeline
from segan_jax import losses
from segan_jax import models
from segan_jax import optimizers
from segan_jax.config import Config
from segan_jax.systems import common

NETWORKS = ('g', 'd')
ENHANCES = True
# SEGAN's G is the autoencoder's plus z: either can warm-start the other.
WARM_START_FAMILY = 'encoder_decoder'


# A fold_in constant of this step's key that z does not use.
_INSTANCE_NOISE_STREAM = 0x5e6a


def generator(config: Config, use_z: bool | None = None) -> nn.Module:
  """G; ``use_z`` overrides the config's (the autoencoder has no z)."""
  return models.Generator(
      encoder_features=config.features, kernel_size=config.kernel,
      use_z=config.use_z if use_z is None else use_z,
      skip_preactivation=config.skip_connections == 'preactivation',
      residual=config.residual, kernel_init=config.kernel_init,
      dtype=jnp.dtype(config.dtype))


def discriminator(config: Config) -> nn.Module:
  return models.Discriminator(features=config.d_features,
                              kernel_size=config.kernel,
                              kernel_init=config.kernel_init,
                              dtype=jnp.dtype(config.dtype))


def latent_shape(config: Config) -> tuple[int, int] | None:
  """z's shape per window, or None for a G without z."""
  if not config.use_z:
    return None
  return models.latent_shape(config.window, config.features)


def generator_signature(config: Config, use_z: bool) -> dict:
  """What G's parameter shapes depend on; the autoencoder's G shares it."""
  return dict(model=config.model, features=list(config.features),
              kernel=config.kernel, window=config.window, use_z=use_z,
              skip_connections=config.skip_connections,
              residual=config.residual)


def signature(config: Config) -> dict:
  """What the parameters' shapes depend on (checked when restoring)."""
  return dict(generator_signature(config, config.use_z),
              discriminator_features=list(config.d_features))


def init_generator(config: Config, rng: jax.Array, module: nn.Module,
                   latent: tuple[int, int] | None):
  noisy = jnp.zeros((1, config.window), jnp.float32)
  z = None if latent is None else jnp.zeros((1,) + latent, jnp.float32)
  return common.init_params(module, rng, noisy, z)


def create_states(config: Config, rng: jax.Array, total_steps: int | None = None,
                  train_windows: input_pipeline.WindowedPairs | None = None):
  """``{'g', 'd'}`` train states; D carries its VBN reference batch.

  The reference is drawn from ``train_windows`` (zeros of its shape without
  them, e.g. as a template to restore a checkpoint into).
  """
  tx = optimizers.make_optimizer(config, total_steps)
  g_rng, d_rng = jax.random.split(rng)
  g_module = generator(config)
  g_params = init_generator(config, g_rng, g_module, latent_shape(config))
  if train_windows is not None:
    reference = input_pipeline.vbn_reference(
        train_windows, config.vbn_reference_size, config.seed)
  else:
    reference = np.zeros((config.vbn_reference_size, config.window, 2),
                         np.float32)
  d_module = discriminator(config)
  pair = jnp.zeros((1, config.window, 2), jnp.float32)
  d_params = common.init_params(d_module, d_rng, pair, pair)
  return {
      'g': common.new_state(g_module, g_params, tx),
      'd': common.new_state(d_module, d_params, tx,
                            optimizers.DiscriminatorState,
                            reference=jnp.asarray(reference, jnp.float32)),
  }


def train_step(g_state, d_state: optimizers.DiscriminatorState,
               batch: dict[str, jax.Array], rng: jax.Array, *,
               l1_weight: float, latent_shape: tuple[int, int] | None,
               adversarial_weight: float = 1.0, stft_weight: float = 0.0,
               feature_matching_weight: float = 0.0,
               d_input_noise: float = 0.0,
               mask_loss_weight: float = 0.0, mask_floor: float = 0.0,
               axis_name: str | None = None):
  """One SEGAN update: D on (clean, noisy) vs (G(noisy), noisy), then G.

  Args:
    g_state, d_state: the two train states (same step count).
    batch: ``noisy`` and ``clean`` pre-emphasised windows ``[B, T]`` (the
      per-device part of the global batch under pmap).
    rng: the run's base key; this step uses ``fold_in(rng, step)``.
    l1_weight: lambda of the L1 term of G's loss.
    adversarial_weight, stft_weight: weights of the LSGAN term and of the
      multi-resolution STFT loss in G's loss.
    feature_matching_weight: weight of the L1 distance between D's
      activations for (enhanced, noisy) and for (clean, noisy) in G's loss.
    mask_loss_weight, mask_floor: weight of the loss of the masked output
      (losses.masked_output_loss) in G's loss, and the mask's least gain.
    d_input_noise: std of the instance noise added to the first signal of
      every pair D sees (the same draw for a window in D's and G's update).
    latent_shape: shape of z per example, or None for a G without z.
    axis_name: the pmap axis to average gradients over, or None.

  Returns:
    (g_state, d_state, metrics): flat dict of scalars, averaged over devices.
  """
  noisy, clean = batch['noisy'], batch['clean']
  local_batch = noisy.shape[0]
  z = None
  if latent_shape is not None:
    z = models.sample_latent(jax.random.fold_in(rng, g_state.step),
                             common.example_indices(local_batch, axis_name),
                             latent_shape)

  def generate(g_params):
    return g_state.apply_fn({'params': g_params}, noisy, z)

  instance_noise = None
  if d_input_noise:
    # Keyed by the step and the example, as z: independent of the devices.
    noise_rng = jax.random.fold_in(jax.random.fold_in(rng, g_state.step),
                                   _INSTANCE_NOISE_STREAM)
    instance_noise = d_input_noise * models.sample_latent(
        noise_rng, common.example_indices(local_batch, axis_name),
        noisy.shape[1:])

  def blur(signals):
    if instance_noise is None:
      return signals
    return signals + jnp.tile(instance_noise,
                              (signals.shape[0] // local_batch, 1))

  def discriminate(d_params, signals, noisy_pairs, split_reference=False,
                   return_features=False):
    signals = blur(signals)
    return d_state.apply_fn({'params': d_params},
                            models.make_pair(signals, noisy_pairs),
                            d_state.reference, split_reference=split_reference,
                            return_features=return_features)

  def d_loss_fn(d_params, enhanced):
    # Real and fake pairs in one call: VBN makes each logit independent of
    # the rest of the batch, so this equals two separate calls.
    logits = discriminate(d_params,
                          jnp.concatenate([clean, enhanced], axis=0),
                          jnp.concatenate([noisy, noisy], axis=0))
    real, fake = logits[:local_batch], logits[local_batch:]
    return losses.lsgan_discriminator_loss(real, fake), {
        'd_real': jnp.mean(real), 'd_fake': jnp.mean(fake)}

  def g_loss_fn(d_params, signal):
    # Only `signal` is differentiated here, so the reference batch goes
    # through D on its own, without a backward pass.
    logits, fake_features = discriminate(d_params, signal, noisy,
                                         split_reference=True,
                                         return_features=True)
    adversarial = losses.lsgan_generator_loss(logits)
    l1 = losses.l1_loss(signal, clean)
    metrics = {'g_adv': adversarial, 'g_l1': l1}
    total = adversarial_weight * adversarial + l1_weight * l1
    if feature_matching_weight:
      # D's activations for the clean pair are fixed targets (they do not
      # depend on G), so this adds a forward pass of D and no backward one.
      _, real_features = discriminate(d_params, clean, noisy,
                                      split_reference=True,
                                      return_features=True)
      matching = losses.feature_matching_loss(fake_features, real_features)
      metrics['g_feature_matching'] = matching
      total = total + feature_matching_weight * matching
    total = common.add_mask_term(total, signal, noisy, clean,
                                 mask_loss_weight, mask_floor, metrics)
    return common.add_stft_term(total, signal, clean, stft_weight,
                                metrics), metrics

  g_state, d_state, metrics = common.adversarial_update(
      g_state, d_state, generate, d_loss_fn, g_loss_fn, axis_name)
  return g_state, d_state, common.device_mean(metrics, axis_name)


def step(states, batch, rng, *, axis_name=None, **kwargs):
  """train_step on the states dict the training loop carries."""
  g_state, d_state, metrics = train_step(states['g'], states['d'], batch, rng,
                                         axis_name=axis_name, **kwargs)
  return {'g': g_state, 'd': d_state}, metrics


def make_step(config: Config):
  return functools.partial(
      step, l1_weight=config.l1_weight,
      adversarial_weight=config.adversarial_weight,
      stft_weight=config.stft_weight,
      feature_matching_weight=config.feature_matching_weight,
      d_input_noise=config.d_input_noise,
      mask_loss_weight=config.mask_loss_weight,
      mask_floor=audio.attenuation_floor(config.attenuation_limit_db),
      latent_shape=latent_shape(config))
