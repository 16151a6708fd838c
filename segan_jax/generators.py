"""G, trained, ready to apply: restored from a run's checkpoint (its best,
its latest, or a given step) or loaded from a bundled pretrained model."""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging

from segan_jax import best_checkpoint
from segan_jax import checkpoints
from segan_jax import pretrained
from segan_jax import systems
from segan_jax.config import Config


@dataclasses.dataclass
class TrainedGenerator:
  """A trained generator ready to apply: config, parameters and step.

  ``source`` says which checkpoint it came from, for messages, e.g.
  ``best checkpoint (step 1200, val_pesq 2.31)``.
  """

  config: Config
  params: Any
  step: int
  source: str = ''


def restore_generator(workdir: str, step: int | None = None,
                      prefer_best: bool = True) -> TrainedGenerator:
  """Loads G's parameters from a checkpoint of ``workdir``.

  ``step`` picks that checkpoint (also when only the copy kept as the best
  is left of it). Without it: the run's best checkpoint (``WORKDIR/best``,
  kept by --keep_best) when there is one and ``prefer_best``, else the
  latest (or the newest one before it that can be read). The model is
  rebuilt from the config saved in the checkpoint, so no model flags are
  needed. ``TrainedGenerator.source`` (also logged) says which checkpoint was used.
  """
  if prefer_best or step is not None:
    generator = _restore_best(workdir, step)
    if generator is not None:
      return generator
  ckpt = checkpoints.Checkpointer(workdir, create=False)
  try:
    if step is not None:
      generator = _load_generator(ckpt, ckpt.resolve_step(step))
      generator.source = f'checkpoint step {generator.step}'
    else:
      # The latest, or the newest one before it that can be read.
      generator = ckpt.newest_readable(
          lambda s: _load_generator(ckpt, s), move_aside=False)
      generator.source = f'latest checkpoint (step {generator.step})'
  finally:
    ckpt.close()
  logging.info('Restored G from the %s of %s.', generator.source, workdir)
  return generator


def restore_pretrained(name: str | None = None) -> TrainedGenerator:
  """G of a bundled pretrained model (segan_jax/pretrained/; None: the
  default one), checksum checked; ``name`` may also be a bundle folder."""
  bundle = pretrained.load(name or pretrained.DEFAULT)
  logging.info('Loaded G from the %s.', bundle.source)
  return TrainedGenerator(bundle.config, bundle.params, bundle.step,
                          bundle.source)


def _restore_best(workdir: str, step: int | None) -> TrainedGenerator | None:
  """G of WORKDIR/best (when ``step`` is None or the best's), else None."""
  kept = best_checkpoint.best_checkpointer(workdir)
  if kept is None:
    return None
  ckpt, best = kept
  try:
    if step is not None and (step != best['step'] or
                             step in checkpoints.steps(workdir)):
      return None  # another step, or the run's own copy of it
    generator = _load_generator(ckpt, best['step'])
  except checkpoints.UnreadableCheckpointError as e:
    logging.warning('%s; not using it.', e)
    return None
  finally:
    ckpt.close()
  generator.source = best_checkpoint.describe_best(best)
  logging.info('Restored G from the %s of %s.', generator.source, workdir)
  return generator


def _load_generator(ckpt: checkpoints.Checkpointer, step: int) -> TrainedGenerator:
  config = checkpoints.config_from_meta(ckpt.read_meta(step))
  if not systems.of(config).ENHANCES:
    raise checkpoints.CheckpointError(
        f'{ckpt.directory}/{step} holds a {config.model} model, which '
        'generates rather than enhances; use a segan or autoencoder run')
  return TrainedGenerator(config, ckpt.restore_params(config, 'g', step), step)
