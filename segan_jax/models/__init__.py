"""Flax modules: SEGAN generator and discriminator, the metric
discriminator, the basic GAN's pair."""

from segan_jax.models.discriminator import Discriminator, make_pair
from segan_jax.models.generator import (PAPER_FEATURES, Generator,
                                        decoder_features, latent_shape,
                                        sample_latent)
from segan_jax.models.gan import GanDiscriminator, GanGenerator
from segan_jax.models.layers import PREPARED, prepare_inference
from segan_jax.models.metric_discriminator import MetricDiscriminator
