"""The metric discriminator (MetricGAN, Fu et al. 2019/2021): a small 2-D CNN
that predicts the normalised PESQ of a (signal, clean) pair of windows.

Why 2-D convolutions on log-magnitude spectrograms: PESQ compares the two
signals' loudness frame by frame and band by band (a time-frequency grid),
and its score is dominated by where and how much their log spectra differ.
Stacking the two log spectrograms as channels gives every conv the aligned
evidence of both at once; a 1-D conv over waveforms would have to learn the
filterbank first, which a network this small and this briefly trained does
not. No normalisation of activations (MetricGAN+ normalises its weights,
spectrally, instead): instance norm
before the global mean leaves every channel zero-mean, so the pooled
features hardly see how far the two spectra differ (with it, this network
fitted three fixed labels to a loss of 0.13 in 40 Adam steps; without, to
0.001). Without batch statistics each pair's score is a function of that
pair alone, so data parallelism stays exact. The global mean over time and
frequency makes the score independent of the window length; a sigmoid
bounds it to [0, 1], the range of the labels.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segan_jax import losses

# STFT of the spectrograms: 32 ms Hann frames every 16 ms (16 kHz), what
# PESQ's own frames are.
METRIC_FFT = 512
METRIC_HOP = 256


def log_spectrogram(signal: jax.Array) -> jax.Array:
  """``log |STFT|`` of windows ``[B, T]``: ``[B, frames, METRIC_FFT/2 + 1]``."""
  magnitude = losses.stft_magnitude(signal.astype(jnp.float32), METRIC_FFT,
                                    METRIC_HOP)
  return jnp.log(magnitude + 1e-5)


class MetricDiscriminator(nn.Module):
  """Scores (signal, clean) window pairs ``[B, T]`` each with one number in
  [0, 1], ``[B]``: its prediction of (PESQ(signal, clean) - 1) / 3.5."""

  features: Sequence[int] = (16, 32, 32, 64)
  kernel_size: int = 5
  negative_slope: float = 0.3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, signal: jax.Array, clean: jax.Array) -> jax.Array:
    h = jnp.stack([log_spectrogram(signal), log_spectrogram(clean)],
                  axis=-1).astype(self.dtype)
    for i, features in enumerate(self.features):
      h = nn.Conv(features, (self.kernel_size, self.kernel_size),
                  strides=(2, 2), padding='SAME', dtype=self.dtype,
                  name=f'conv_{i}')(h)
      h = nn.leaky_relu(h, self.negative_slope)
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    h = nn.leaky_relu(nn.Dense(self.features[-1], name='hidden')(h),
                      self.negative_slope)
    return jax.nn.sigmoid(nn.Dense(1, name='score')(h)[:, 0])
