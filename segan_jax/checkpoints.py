"""Orbax checkpoints of both train states, the run's key, progress and config.

A checkpoint directory ``<workdir>/checkpoints/<step>/`` holds two items:
``state`` (the train states of the run's networks — G and D for SEGAN and the
basic GAN, G for the autoencoder — with optimizer states, and the PRNG key)
and ``meta`` (JSON: step, epoch, the run's config). Orbax writes each
checkpoint under a temporary name and renames it when complete, so a crash
mid-save never leaves a checkpoint that looks finished.

With --keep_best, ``<workdir>/best/`` holds a copy of the best validated
checkpoint (``best/checkpoints/<step>/``, the same layout) and
``best/best.json`` ({metric, value, step}); --init_from warm starts a run
from another run's checkpoint (``warm_start``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from flax import serialization
from flax import traverse_util

from segan_jax import files
from segan_jax import systems
from segan_jax.config import Config


class CheckpointError(Exception):
  """A checkpoint is missing or does not fit the run (one-line message)."""


class UnreadableCheckpointError(CheckpointError):
  """A checkpoint's files are damaged (truncated, corrupted, missing)."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


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


# --- Warm start: G (and D) from another run's checkpoint ----------------------

# The one layer whose kernel may grow: SEGAN's first decoder layer reads the
# code with z concatenated after it ([K, Cin + Cz, Cout]).
_Z_INPUT_LAYER = 'dec_0'


def parse_init_from(spec: str) -> tuple[str, int | None]:
  """``'WORKDIR'`` or ``'WORKDIR:STEP'`` -> (workdir, step or None)."""
  workdir, sep, step = spec.rpartition(':')
  if sep and workdir and step.isdigit():
    return workdir, int(step)
  return spec, None


def check_init_from(spec: str) -> tuple[str, int | None]:
  """Cheap checks, before any data is loaded: that run has the checkpoint.

  Returns ``(folder, step or None)``, folder being the run's workdir or,
  for a STEP only kept as its best, ``WORKDIR/best``; raises
  CheckpointError (one line).
  """
  workdir, step = parse_init_from(spec)
  if not workdir:
    raise CheckpointError('--init_from is empty; give WORKDIR or WORKDIR:STEP')
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(workdir):
    raise CheckpointError(f'--init_from={spec}: no such run folder {workdir}')
  steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit()) if (
      os.path.isdir(directory)) else []
  if not steps:
    raise CheckpointError(f'--init_from={spec}: no checkpoint in {directory}')
  if step is not None and step not in steps:
    best = read_best(workdir)
    if best is not None and best['step'] == step:
      # Rotated out of checkpoints/, but kept as the best (--keep_best).
      return best_dir(workdir), step
    raise CheckpointError(
        f'--init_from={spec}: no checkpoint for step {step} in {directory}; '
        f'available: {", ".join(map(str, steps))}')
  return workdir, step


def load_init_states(spec: str, config: Config):
  """The train states of the run named by ``--init_from`` (host numpy).

  Returns ``(states, source_config, step, directory)``: the newest readable
  checkpoint of that run (or the one of STEP; ``directory`` holds it),
  restored with that run's own config.
  Raises CheckpointError when there is none or its model kind cannot start
  this run's.
  """
  folder, step = check_init_from(spec)
  ckpt = Checkpointer(folder, create=False)

  def load(step):
    source = config_from_meta(ckpt.read_meta(step))
    if (systems.of(source).WARM_START_FAMILY !=
        systems.of(config).WARM_START_FAMILY):
      raise CheckpointError(
          f'--init_from={spec}: {ckpt.directory}/{step} holds a '
          f'{source.model} model, which cannot start a {config.model} run '
          '(segan and autoencoder start each other; gan only gan)')
    template = jax.device_get(jax.eval_shape(
        lambda: systems.create_states(source, jax.random.key(0))))
    states, _, _ = ckpt.restore(template, jax.random.key(0), source,
                                step=step)
    return states, source, step, ckpt.directory

  try:
    if step is not None:
      return load(step)
    return ckpt.newest_readable(load, move_aside=False)
  finally:
    ckpt.close()


def transfer_params(target: Any, source: Any, *, where: str,
                    network: str) -> tuple[Any, list[str], list[str]]:
  """``target``'s parameter tree with every leaf taken from ``source``.

  Leaves are matched by path. A leaf of the same shape is copied. The kernel
  of SEGAN's first decoder layer may have more input channels here (z,
  concatenated after the code): the source kernel fills the first ones and
  the rest are zero, so the network computes what the source did whatever z
  is. Any other missing, extra or mismatched leaf raises CheckpointError
  naming ``where`` and the path. Returns ``(params, copied, padded)``.
  """
  flat_target = traverse_util.flatten_dict(
      serialization.to_state_dict(target), sep='/')
  flat_source = traverse_util.flatten_dict(
      serialization.to_state_dict(source), sep='/')
  extra = sorted(set(flat_source) - set(flat_target))
  if extra:
    raise CheckpointError(
        f'--init_from={where}: parameter {network}/{extra[0]} of that run '
        f'has no counterpart in this one' +
        (f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''))
  out, copied, padded = {}, [], []
  for path, leaf in flat_target.items():
    if path not in flat_source:
      raise CheckpointError(f'--init_from={where}: parameter {network}/{path} '
                            'of this run is missing there')
    old = np.asarray(flat_source[path])
    want = tuple(np.shape(leaf))
    dtype = getattr(leaf, 'dtype', old.dtype)
    if old.shape == want:
      out[path] = old.astype(dtype)
      copied.append(path)
    elif (path.split('/')[-2:] == [_Z_INPUT_LAYER, 'kernel'] and
          old.ndim == 3 and len(want) == 3 and old.shape[0] == want[0] and
          old.shape[2] == want[2] and old.shape[1] < want[1]):
      grown = np.zeros(want, dtype)
      grown[:, :old.shape[1], :] = old
      out[path] = grown
      padded.append(f'{path} (input channels {old.shape[1]} -> {want[1]}, '
                    'the new ones for z at zero)')
    else:
      raise CheckpointError(
          f'--init_from={where}: parameter {network}/{path} has shape '
          f'{old.shape} there but {want} in this run')
  params = serialization.from_state_dict(
      target, traverse_util.unflatten_dict(out, sep='/'))
  return params, copied, padded


def warm_start(states: dict[str, Any], config: Config
               ) -> tuple[dict[str, Any], dict[str, Any]]:
  """This run's fresh ``states`` with G's (and D's) parameters taken from
  the checkpoint named by ``config.init_from``.

  Optimizer states are re-initialised for the new parameters and step
  counts stay 0; D's VBN reference batch stays this run's. Returns
  ``(states, info)``, info saying what was loaded from where.
  """
  spec = config.init_from
  source_states, source_config, step, directory = load_init_states(spec,
                                                                   config)
  states = dict(states)
  info = {'checkpoint': f'{directory}/{step}', 'step': int(step),
          'model': source_config.model, 'loaded': {}, 'fresh': []}
  for name in sorted(states):
    if name not in source_states:
      info['fresh'].append(name)
      continue
    state = states[name]
    params, copied, padded = transfer_params(
        state.params, source_states[name].params, where=spec,
        network=name.upper())
    states[name] = state.replace(params=params,
                                 opt_state=state.tx.init(params))
    info['loaded'][name] = {'copied': copied, 'padded': padded}
  for name, loaded in info['loaded'].items():
    logging.info('Warm start: %s from %s (%s): %d arrays copied (%s)%s.',
                 name.upper(), info['checkpoint'], source_config.model,
                 len(loaded['copied']),
                 ', '.join(loaded['copied']),
                 ''.join(f'; {p}' for p in loaded['padded']))
  for name in info['fresh']:
    logging.info('Warm start: %s starts fresh (%s has none).', name.upper(),
                 info['checkpoint'])
  return states, info


# --- The best checkpoint: WORKDIR/best ----------------------------------------

BEST_DIR = 'best'
BEST_JSON = 'best.json'


def best_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), BEST_DIR)


def read_best(workdir: str) -> dict[str, Any] | None:
  """``{'metric', 'value', 'step'}`` of WORKDIR/best/best.json, or None."""
  path = os.path.join(best_dir(workdir), BEST_JSON)
  try:
    with open(path) as f:
      best = json.load(f)
    return {'metric': str(best['metric']), 'value': float(best['value']),
            'step': int(best['step'])}
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    logging.warning('Ignoring %s: %s', path, e)
    return None


def describe_best(best: dict[str, Any]) -> str:
  return (f'best checkpoint (step {best["step"]}, {best["metric"]} '
          f'{best["value"]:.4g})')


def save_best(workdir: str, step: int, metric: str, value: float) -> dict:
  """Keeps checkpoint ``step`` of ``workdir`` as its best.

  Its files are hard-linked (copied where links are not possible) into
  ``WORKDIR/best/checkpoints/<step>`` under a temporary name and renamed
  when complete; then ``best.json`` is replaced atomically: it is what
  names the best, so a crash at any point leaves the previous best (or the
  new one) whole. Older copies are removed last. Rotation by
  --keep_checkpoints never touches WORKDIR/best.
  """
  src = os.path.join(checkpoint_dir(workdir), str(step))
  root = best_dir(workdir)
  kept = checkpoint_dir(root)
  os.makedirs(kept, exist_ok=True)
  target = os.path.join(kept, str(step))
  partial = os.path.join(root, f'.partial-{step}')
  if os.path.exists(partial):
    shutil.rmtree(partial)
  shutil.copytree(src, partial, copy_function=_link_or_copy)
  if os.path.exists(target):  # an older copy of that step: set it aside
    old = os.path.join(root, f'.partial-old-{step}')
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
  os.replace(partial, target)
  best = {'metric': metric, 'value': float(value), 'step': int(step)}
  with files.atomic_open(os.path.join(root, BEST_JSON)) as f:
    f.write(json.dumps(best, indent=1, sort_keys=True) + '\n')
  for name in os.listdir(kept):
    if name != str(step):
      shutil.rmtree(os.path.join(kept, name), ignore_errors=True)
  for name in os.listdir(root):
    if name.startswith('.partial-'):
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)
  return best


def _link_or_copy(src: str, dst: str) -> None:
  # Orbax never rewrites a finished checkpoint's files, so a hard link is a
  # copy that costs no space; other file systems get a real copy.
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)


def best_checkpointer(workdir: str) -> tuple[Checkpointer, dict] | None:
  """A read-only Checkpointer of WORKDIR/best and best.json, or None."""
  best = read_best(workdir)
  if best is None:
    return None
  try:
    ckpt = Checkpointer(best_dir(workdir), create=False)
  except CheckpointError:
    return None
  if best['step'] not in ckpt.all_steps():
    logging.warning('%s names step %d, which is missing there; ignoring it.',
                    os.path.join(best_dir(workdir), BEST_JSON), best['step'])
    ckpt.close()
    return None
  return ckpt, best
