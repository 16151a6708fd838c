"""Loss functions: pure, batch-averaged, float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from segan_jax import audio


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


def feature_matching_loss(fake_features, real_features) -> jax.Array:
  """Mean over D's layers of the L1 distance between its activations for
  enhanced and for clean pairs (Salimans et al. 2016; MelGAN's form).

  Each layer's distance is a mean, so wide and narrow layers weigh alike.
  The clean pairs' activations are targets: no gradient flows into them.
  """
  distances = [jnp.mean(jnp.abs(fake.astype(jnp.float32) -
                                jax.lax.stop_gradient(real).astype(jnp.float32)))
               for fake, real in zip(fake_features, real_features, strict=True)]
  return sum(distances) / len(distances)


def bce_discriminator_loss(real_logits: jax.Array,
                           fake_logits: jax.Array) -> jax.Array:
  """Classic GAN loss of D: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(
      jax.nn.softplus(fake_logits))


def nonsaturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating G loss: -log sigmoid(D(fake)) (strong gradients early)."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


# (FFT size, hop) of the multi-resolution STFT loss (Yamamoto et al. 2020,
# Parallel WaveGAN), Hann windows of the FFT size: short frames resolve
# onsets, long ones harmonics.
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


def stft_magnitude(signal: jax.Array, fft_size: int, hop: int) -> jax.Array:
  """|STFT| of ``signal`` ``[B, T]``: ``[B, frames, fft_size // 2 + 1]``.

  Frames start every ``hop`` samples from the start of the zero-padded
  signal (``fft_size // 2`` zeros each side, so every sample is in as many
  frames). The small constant inside the square root keeps the gradient
  finite in silent bins.
  """
  half = fft_size // 2
  padded = jnp.pad(signal, ((0, 0), (half, half)))
  num_frames = (padded.shape[-1] - fft_size) // hop + 1
  index = (jnp.arange(num_frames)[:, None] * hop
           + jnp.arange(fft_size)[None, :])
  window = jnp.hanning(fft_size + 1)[:-1].astype(signal.dtype)
  spectrum = jnp.fft.rfft(padded[:, index] * window, axis=-1)
  return jnp.sqrt(jnp.real(spectrum)**2 + jnp.imag(spectrum)**2 + 1e-7)


def spectral_distance(predicted: jax.Array, wanted: jax.Array) -> jax.Array:
  """Spectral convergence + log-magnitude L1 between two |STFT|s."""
  convergence = (jnp.linalg.norm(wanted - predicted) /
                 (jnp.linalg.norm(wanted) + 1e-7))
  log_magnitude = jnp.mean(jnp.abs(jnp.log(wanted) - jnp.log(predicted)))
  return convergence + log_magnitude


def multi_resolution_stft_loss(prediction: jax.Array, target: jax.Array,
                               resolutions=STFT_RESOLUTIONS) -> jax.Array:
  """Spectral convergence + log-magnitude L1, averaged over resolutions.

  Matches the magnitudes' shape over time and frequency, which a
  sample-wise L1 does not weigh: a small L1 can hide a smeared spectrum
  that PESQ punishes.
  """
  total = 0.0
  for fft_size, hop in resolutions:
    predicted = stft_magnitude(prediction.astype(jnp.float32), fft_size, hop)
    wanted = stft_magnitude(target.astype(jnp.float32), fft_size, hop)
    total = total + spectral_distance(predicted, wanted)
  return total / len(resolutions)


def masked_output_loss(enhanced: jax.Array, noisy: jax.Array,
                       clean: jax.Array, floor: float,
                       fft_size: int = audio.MASK_FFT,
                       hop: int = audio.MASK_FFT // 4) -> jax.Array:
  """Spectral convergence + log-magnitude L1 of what ``--output_mask`` plays.

  The mask filters the input by min(1, |E| / |X|), at least ``floor``, per
  bin: the played magnitude is |E| clipped to [floor |X|, |X|]. That is
  scored against |clean|, so G learns the gain it is used for; where |E|
  leaves the range the gain is clipped and the term has no gradient (the
  STFT term still pulls |E| toward |clean| there). The default frames are
  the mask's (``output_settings.mask_with``: Hann, 75 % overlap).
  """
  def magnitude(signal):
    return stft_magnitude(signal.astype(jnp.float32), fft_size, hop)

  input_magnitude = magnitude(noisy)
  played = jnp.clip(magnitude(enhanced), floor * input_magnitude,
                    input_magnitude)
  return spectral_distance(played, magnitude(clean))
