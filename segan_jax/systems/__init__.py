"""The trainable systems, looked up by name (``Config.model``).

Each system is a module with the same small interface:

  NETWORKS            names of its train states, e.g. ('g', 'd')
  ENHANCES            whether G maps noisy windows to enhanced ones (enhance,
                      evaluate and validation use it), or generates from z
  WARM_START_FAMILY   systems of one family can warm-start each other
  generator(config)   G's Flax module (what inference needs)
  latent_shape(config)  z's shape per example, or None
  signature(config)   what the parameters' shapes depend on; a checkpoint
                      restores only into a run of the same signature
  create_states(config, rng, total_steps=None, train_windows=None)
                      fresh train states ({name: TrainState}); data-dependent
                      parts (SEGAN's VBN reference) come from train_windows
  make_step(config)   step(states, batch, rng, *, axis_name) -> (states,
                      metrics): pure, compiled once by a parallel strategy

This is the one place that maps a model kind to its code.
"""

from __future__ import annotations

from types import ModuleType

from segan_jax.config import Config
from segan_jax.systems import autoencoder
from segan_jax.systems import gan
from segan_jax.systems import segan

SYSTEMS: dict[str, ModuleType] = {
    'segan': segan,
    'autoencoder': autoencoder,
    'gan': gan,
}


def get(name: str) -> ModuleType:
  try:
    return SYSTEMS[name]
  except KeyError:
    raise ValueError(f'unknown model {name!r}; known: '
                     f'{", ".join(SYSTEMS)}') from None


def of(config: Config) -> ModuleType:
  """The system ``config`` trains."""
  return get(config.model)


def create_states(config: Config, rng, total_steps: int | None = None,
                  train_windows=None):
  return of(config).create_states(config, rng, total_steps, train_windows)


def generator(config: Config):
  return of(config).generator(config)


def latent_shape(config: Config):
  return of(config).latent_shape(config)


def signature(config: Config) -> dict:
  return of(config).signature(config)
