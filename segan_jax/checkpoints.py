"""Orbax checkpoints of both train states, the run's key, progress and config.

A checkpoint directory ``<workdir>/checkpoints/<step>/`` holds two items:
``state`` (the train states of the run's networks — G and D for SEGAN and the
basic GAN, G for the autoencoder — with optimizer states, and the PRNG key)
and ``meta`` (JSON: step, epoch, the run's config). Orbax writes each
checkpoint under a temporary name and renames it when complete, so a crash
mid-save never leaves a checkpoint that looks finished.

The best checkpoint of a run (--keep_best) is kept by best_checkpoint.py;
--init_from warm starts a run from another run's (warm_start.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from flax import serialization

from segan_jax import systems
from segan_jax.config import Config


class CheckpointError(Exception):
  """A checkpoint is missing or does not fit the run (one-line message)."""


class UnreadableCheckpointError(CheckpointError):
  """A checkpoint's files are damaged (truncated, corrupted, missing)."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def steps(workdir: str) -> list[int]:
  """The steps of WORKDIR's finished checkpoints, oldest first (none: [])."""
  folder = checkpoint_dir(workdir)
  if not os.path.isdir(folder):
    return []
  # Orbax's temporary folders have non-numeric names until they are renamed.
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


class Checkpointer:
  """Saves and restores ``({'g': ..., 'd': ...}, rng)`` with their metadata."""

  def __init__(self, workdir: str, keep: int = 0, create: bool = True):
    """``create=False`` (enhance, evaluate) only reads: a workdir without
    checkpoints is an error, not a new empty folder."""
    self.directory = checkpoint_dir(workdir)
    if not create and not os.path.isdir(self.directory):
      raise CheckpointError(f'no checkpoint in {self.directory}')
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep or None, create=create)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('state', 'meta'))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, states: dict[str, Any], rng: jax.Array,
           epoch: int, config: Config) -> None:
    state = _state_tree(states, rng)
    meta = {'step': int(step), 'epoch': int(epoch), 'config': config.to_dict()}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def resolve_step(self, step: int | None = None) -> int:
    """``step`` if it exists (default: the latest), else CheckpointError."""
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f'no checkpoint in {self.directory}')
    if step is None:
      return steps[-1]
    if step not in steps:
      raise CheckpointError(
          f'no checkpoint for step {step} in {self.directory}; available: '
          f'{", ".join(map(str, steps))}')
    return step

  def read_meta(self, step: int) -> dict[str, Any]:
    with self._reading(step):
      restored = self.manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      return restored['meta']

  @contextlib.contextmanager
  def _reading(self, step: int):
    """Turns any failure to read checkpoint ``step`` into one error type."""
    try:
      yield
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # Orbax, TensorStore and JSON report damage with many exception types;
      # whatever it was, this checkpoint cannot be used.
      reason = ' '.join(str(e).split())[:300] or type(e).__name__
      raise UnreadableCheckpointError(
          f'checkpoint {self.directory}/{step} is unreadable: {reason}') from e

  def restore(self, states: dict[str, Any], rng: jax.Array, config: Config,
              step: int | None = None):
    """Restores into the structure of the given (host) states.

    Returns ``(states, rng, meta)``. Raises CheckpointError when there is no
    such checkpoint or it was written for another model.
    """
    step = self.resolve_step(step)
    meta = self._read_matching_meta(step, config)
    with self._reading(step):
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_state_tree(states, rng))))['state']
    states = {name: serialization.from_state_dict(s, restored[name])
              for name, s in states.items()}
    rng = jax.random.wrap_key_data(np.asarray(restored['rng']))
    return states, rng, meta

  def restore_params(self, config: Config, network: str, step: int) -> Any:
    """Only ``network``'s parameters of checkpoint ``step`` (host numpy).

    What inference needs: the other networks and the optimizer states stay
    on disk.
    """
    self._read_matching_meta(step, config)
    shapes = jax.eval_shape(
        lambda: systems.create_states(config, jax.random.key(0)))
    template = {network: {'params': shapes[network].params}}
    with self._reading(step):
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              item=template, partial_restore=True,
              restore_args=jax.tree.map(
                  lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                  template))))['state']
    return restored[network]['params']

  def _read_matching_meta(self, step: int, config: Config) -> dict[str, Any]:
    """Checkpoint ``step``'s metadata; CheckpointError unless it was
    written for a model of ``config``'s signature."""
    meta = self.read_meta(step)
    saved = systems.signature(config_from_meta(meta))
    if saved != systems.signature(config):
      raise CheckpointError(
          f'checkpoint {self.directory}/{step} was written for model '
          f'{saved}, but this run builds {systems.signature(config)}')
    return meta

  def newest_readable(self, load, move_aside: bool):
    """``load(step)`` of the newest checkpoint that can be read.

    A checkpoint that cannot be read (truncated or corrupted files, e.g. a
    disk that filled up or a copy that was cut short) is reported and the
    one before it is tried. With ``move_aside`` (training, which will write
    that step again) it is moved to ``<workdir>/checkpoints_unreadable/``,
    kept for inspection, never deleted. A checkpoint written for another
    model is not "unreadable": that stops with CheckpointError.
    """
    self.resolve_step()  # CheckpointError when there is none at all
    for step in reversed(self.all_steps()):
      try:
        return load(step)
      except UnreadableCheckpointError as e:
        if move_aside:
          self._move_aside(step, str(e))
        else:
          logging.warning('%s; trying the one before.', e)
    raise CheckpointError(f'no readable checkpoint left in {self.directory}' +
                          (f' (the unreadable ones are in '
                           f'{self._unreadable_dir()})' if move_aside else ''))

  def restore_latest_readable(self, states: dict[str, Any], rng: jax.Array,
                              config: Config):
    """``restore`` of the newest readable checkpoint, for resuming."""
    return self.newest_readable(
        lambda step: self.restore(states, rng, config, step), move_aside=True)

  def _unreadable_dir(self) -> str:
    return self.directory + '_unreadable'

  def _move_aside(self, step: int, reason: str) -> None:
    target = os.path.join(self._unreadable_dir(), str(step))
    if jax.process_index() == 0:  # every process found it unreadable
      os.makedirs(self._unreadable_dir(), exist_ok=True)
      if os.path.exists(target):
        target += f'.{len(os.listdir(self._unreadable_dir()))}'
      os.replace(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint {step} moved aside')
    self.manager.reload()
    logging.warning('%s; moved it to %s and trying the one before.', reason,
                    target)

  def close(self) -> None:
    self.manager.close()


def _state_tree(states: dict[str, Any], rng: jax.Array) -> dict[str, Any]:
  tree = {name: serialization.to_state_dict(s) for name, s in states.items()}
  tree['rng'] = np.asarray(jax.random.key_data(rng))
  return tree


def config_from_meta(meta: dict[str, Any]) -> Config:
  """The run's Config as saved in a checkpoint's metadata."""
  fields = dict(meta['config'])
  # JSON turns tuples into lists; Config wants its feature tuple back.
  if fields.get('encoder_features') is not None:
    fields['encoder_features'] = tuple(fields['encoder_features'])
  # Fields added to Config after the checkpoint was written take defaults.
  known = {f.name for f in dataclasses.fields(Config)}
  return Config(**{k: v for k, v in fields.items() if k in known})
