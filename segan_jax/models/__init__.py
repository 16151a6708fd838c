"""Flax modules: SEGAN generator and discriminator."""

from segan_jax.models.discriminator import Discriminator, make_pair
from segan_jax.models.generator import (PAPER_FEATURES, Generator,
                                        decoder_features, latent_shape,
                                        sample_latent)
