"""SEGAN (Pascual et al. 2017): G enhances noisy windows, D judges
(clean or enhanced, noisy) pairs; G's loss is LSGAN plus weighted L1 (and an
optional multi-resolution STFT term). With --metric_discriminator a second D,
D_metric (MetricGAN+), learns the normalised PESQ of (signal, clean) pairs
and G's loss gains a term toward its maximum."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segan_jax import audio
from segan_jax import input_pipeline
from segan_jax import losses
from segan_jax import metric_labels
from segan_jax import models
from segan_jax import optimizers
from segan_jax.config import Config
from segan_jax.systems import common

# With --metric_discriminator the states hold 'dm' (D_metric) too.
NETWORKS = ('g', 'd')
ENHANCES = True
# SEGAN's G is the autoencoder's plus z: either can warm-start the other.
WARM_START_FAMILY = 'encoder_decoder'


# A fold_in constant of this step's key that z does not use.
_INSTANCE_NOISE_STREAM = 0x5e6a
# A fold_in constant of the init key for D_metric's parameters.
_METRIC_STREAM = 0x3e7c


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


def metric_discriminator(config: Config) -> nn.Module:
  return models.MetricDiscriminator(features=config.metric_features,
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
  signature_ = dict(generator_signature(config, config.use_z),
                    discriminator_features=list(config.d_features))
  if config.metric_discriminator:
    # Only when on: runs without it keep the signature they always had.
    signature_['metric_discriminator'] = dict(
        features=list(config.metric_features),
        windows_per_step=config.metric_windows_per_step)
  return signature_


def init_generator(config: Config, rng: jax.Array, module: nn.Module,
                   latent: tuple[int, int] | None):
  noisy = jnp.zeros((1, config.window), jnp.float32)
  z = None if latent is None else jnp.zeros((1,) + latent, jnp.float32)
  return common.init_params(module, rng, noisy, z)


def create_states(config: Config, rng: jax.Array, total_steps: int | None = None,
                  train_windows: input_pipeline.WindowedPairs | None = None):
  """``{'g', 'd'}`` train states (and 'dm', D_metric's, with
  --metric_discriminator); D carries its VBN reference batch.

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
  states = {
      'g': common.new_state(g_module, g_params, tx),
      'd': common.new_state(d_module, d_params, tx,
                            optimizers.DiscriminatorState,
                            reference=jnp.asarray(reference, jnp.float32)),
  }
  if config.metric_discriminator:
    # Its own key stream: G's and D's initial parameters stay those of a run
    # without it.
    dm_module = metric_discriminator(config)
    window = jnp.zeros((1, config.window), jnp.float32)
    dm_params = common.init_params(
        dm_module, jax.random.fold_in(rng, _METRIC_STREAM), window, window)
    states['dm'] = common.new_state(
        dm_module, dm_params, optimizers.make_metric_optimizer(config),
        optimizers.MetricDiscriminatorState,
        queue=jax.tree.map(jnp.asarray, metric_labels.empty_queue(
            config.metric_windows_per_step, config.window)))
  return states


def train_step(g_state, d_state: optimizers.DiscriminatorState,
               batch: dict[str, jax.Array], rng: jax.Array, *,
               l1_weight: float, latent_shape: tuple[int, int] | None,
               adversarial_weight: float = 1.0, stft_weight: float = 0.0,
               feature_matching_weight: float = 0.0,
               d_input_noise: float = 0.0,
               mask_loss_weight: float = 0.0, mask_floor: float = 0.0,
               dm_state: optimizers.MetricDiscriminatorState | None = None,
               metric_weight: float = 0.0, remat: str = 'none',
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
    dm_state, metric_weight: D_metric's state (already updated this step),
      or None; the weight of its term in G's loss. With it, the metrics
      also hold the probe (metric_labels.PROBE_KEYS): G's output, clean
      and noisy for the first ``len(batch['metric_labels'])`` windows, to
      be labelled on the host.
    remat: what the backward passes keep of G's and D's forward passes
      (common.rematerialized).
    axis_name: the pmap axis to average gradients over, or None.

  Returns:
    (g_state, d_state, metrics): flat dict of scalars, averaged over devices
    (and the probe's windows, per device).
  """
  noisy, clean = batch['noisy'], batch['clean']
  local_batch = noisy.shape[0]
  z = None
  if latent_shape is not None:
    z = models.sample_latent(jax.random.fold_in(rng, g_state.step),
                             common.example_indices(local_batch, axis_name),
                             latent_shape)

  @functools.partial(common.rematerialized, remat=remat)
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
    def apply(d_params, signals, noisy_pairs):
      return d_state.apply_fn({'params': d_params},
                              models.make_pair(blur(signals), noisy_pairs),
                              d_state.reference,
                              split_reference=split_reference,
                              return_features=return_features)
    return common.rematerialized(apply, remat)(d_params, signals, noisy_pairs)

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
    if dm_state is not None:
      # D_metric's parameters are constants here: only `signal` is
      # differentiated.
      scores = dm_state.apply_fn({'params': dm_state.params}, signal, clean)
      metric_term = losses.lsgan_generator_loss(scores)
      metrics['g_metric'] = metric_term
      metrics['g_metric_score'] = jnp.mean(scores)
      total = total + metric_weight * metric_term
      probed = batch['metric_labels'].shape[0]
      metrics.update(zip(metric_labels.PROBE_KEYS, (
          jax.lax.stop_gradient(signal[:probed]), clean[:probed],
          noisy[:probed])))
    total = common.add_mask_term(total, signal, noisy, clean,
                                 mask_loss_weight, mask_floor, metrics)
    return common.add_stft_term(total, signal, clean, stft_weight,
                                metrics), metrics

  g_state, d_state, metrics = common.adversarial_update(
      g_state, d_state, generate, d_loss_fn, g_loss_fn, axis_name)
  # The probe is windows, one set per device: not averaged.
  probe = {k: metrics.pop(k) for k in metric_labels.PROBE_KEYS if k in metrics}
  return g_state, d_state, {**common.device_mean(metrics, axis_name), **probe}


def _device_sum(tree, axis_name: str | None):
  return jax.lax.psum(tree, axis_name) if axis_name else tree


def metric_update(dm_state: optimizers.MetricDiscriminatorState,
                  batch: dict[str, jax.Array], axis_name: str | None = None):
  """D_metric's update on the labelled windows of two steps before.

  ``batch`` holds metric_labels.INPUT_KEYS: the enhanced, clean and noisy
  windows ``[M, T]``, their labels and validity ``[M, 3]``. The loss is the
  mean squared error of the predictions over the valid labels of the whole
  global batch (so the same for any split over devices); with none (the
  first two steps) it is 0 and so is the update's gradient.

  Returns (dm_state, metrics): dm_loss, the mean prediction and label of
  each column (dm_pred_enhanced, dm_label_enhanced, ...), the fraction of
  labels that are valid, and the gradient norm.
  """
  columns = [batch[f'metric_{c}'] for c in metric_labels.COLUMNS]
  signals = jnp.concatenate(columns, axis=0)
  references = jnp.tile(batch['metric_clean'], (len(columns), 1))
  # [M, 3] -> [3 M], column after column, as `signals`.
  labels = batch['metric_labels'].T.reshape(-1)
  valid = batch['metric_valid'].T.reshape(-1)
  count = jnp.maximum(_device_sum(jnp.sum(valid), axis_name), 1.0)

  def loss_fn(params):
    predictions = dm_state.apply_fn({'params': params}, signals, references)
    return (jnp.sum(valid * jnp.square(predictions - labels)) / count,
            predictions)

  (loss, predictions), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      dm_state.params)
  # Each device's loss is its share of the global mean: sums, not means.
  loss, grads = _device_sum((loss, grads), axis_name)
  dm_state = dm_state.apply_gradients(grads=grads)
  metrics = {'dm_loss': loss, 'dm_grad_norm': common.global_norm(grads),
             'dm_labelled': _device_sum(jnp.sum(valid), axis_name) /
                            _device_sum(valid.size, axis_name)}
  per_column = [x.reshape(len(columns), -1)
                for x in (predictions, labels, valid)]
  for name, column_predictions, column_labels, column_valid in zip(
      metric_labels.COLUMNS, *per_column):
    column_count = jnp.maximum(
        _device_sum(jnp.sum(column_valid), axis_name), 1.0)
    for kind, values in (('pred', column_predictions),
                         ('label', column_labels)):
      metrics[f'dm_{kind}_{name}'] = _device_sum(
          jnp.sum(column_valid * values), axis_name) / column_count
  return dm_state, metrics


def step(states, batch, rng, *, axis_name=None, **kwargs):
  """train_step on the states dict the training loop carries; D_metric's
  update first when it is there."""
  dm_state, dm_metrics = states.get('dm'), {}
  if dm_state is not None:
    dm_state, dm_metrics = metric_update(dm_state, batch, axis_name)
  g_state, d_state, metrics = train_step(states['g'], states['d'], batch, rng,
                                         dm_state=dm_state,
                                         axis_name=axis_name, **kwargs)
  new_states = {'g': g_state, 'd': d_state}
  if dm_state is not None:
    new_states['dm'] = dm_state
  return new_states, {**metrics, **dm_metrics}


def make_step(config: Config):
  return functools.partial(
      step, l1_weight=config.l1_weight,
      adversarial_weight=config.adversarial_weight,
      stft_weight=config.stft_weight,
      feature_matching_weight=config.feature_matching_weight,
      d_input_noise=config.d_input_noise,
      mask_loss_weight=config.mask_loss_weight,
      mask_floor=audio.attenuation_floor(config.attenuation_limit_db),
      metric_weight=config.metric_weight, remat=config.remat,
      latent_shape=latent_shape(config))
