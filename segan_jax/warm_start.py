"""Warm start (--init_from): a run's G (and D) from another run's checkpoint,
or its G from a bundled pretrained model.

``--init_from=WORKDIR[:STEP]`` names the checkpoint, ``--init_from=pretrained``
(or ``pretrained:NAME_OR_FOLDER``) a bundle; the parameters are copied leaf
by leaf into this run's fresh train states (``warm_start``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import serialization
from flax import traverse_util

from segan_jax import best_checkpoint
from segan_jax import checkpoints
from segan_jax import pretrained
from segan_jax import systems
from segan_jax.checkpoints import CheckpointError
from segan_jax.config import Config

# The one layer whose kernel may grow: SEGAN's first decoder layer reads the
# code with z concatenated after it ([K, Cin + Cz, Cout]).
_Z_INPUT_LAYER = 'dec_0'


# --init_from=pretrained[:NAME_OR_FOLDER]: a bundle, not a run.
PRETRAINED_PREFIX = 'pretrained'


def bundle_of(spec: str) -> str | None:
  """The bundle (name or folder) that ``spec`` names, or None for a run."""
  if spec == PRETRAINED_PREFIX:
    return pretrained.DEFAULT
  if spec.startswith(PRETRAINED_PREFIX + ':'):
    return spec[len(PRETRAINED_PREFIX) + 1:] or pretrained.DEFAULT
  return None


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
  bundle = bundle_of(spec)
  if bundle is not None:
    try:
      return pretrained.bundle_dir(bundle), None
    except pretrained.PretrainedError as e:
      raise CheckpointError(f'--init_from={spec}: {e}') from None
  workdir, step = parse_init_from(spec)
  if not workdir:
    raise CheckpointError('--init_from is empty; give WORKDIR, WORKDIR:STEP '
                          'or pretrained[:NAME]')
  directory = checkpoints.checkpoint_dir(workdir)
  if not os.path.isdir(workdir):
    raise CheckpointError(f'--init_from={spec}: no such run folder {workdir}')
  steps = checkpoints.steps(workdir)
  if not steps:
    raise CheckpointError(f'--init_from={spec}: no checkpoint in {directory}')
  if step is not None and step not in steps:
    best = best_checkpoint.read_best(workdir)
    if best is not None and best['step'] == step:
      # Rotated out of checkpoints/, but kept as the best (--keep_best).
      return best_checkpoint.best_dir(workdir), step
    raise CheckpointError(
        f'--init_from={spec}: no checkpoint for step {step} in {directory}; '
        f'available: {", ".join(map(str, steps))}')
  return workdir, step


def load_init_params(spec: str, config: Config):
  """The parameters of each network that ``--init_from`` names (host numpy).

  Returns ``(params, source_config, step, where)``: ``params`` maps a
  network ('g', 'd') to its parameters, from the newest readable checkpoint
  of that run (or the one of STEP; ``where`` is its folder and step),
  restored with that run's own config; for a bundle, G's alone and the
  bundle's config.
  Raises CheckpointError when there is none or its model kind cannot start
  this run's.
  """
  folder, step = check_init_from(spec)
  if bundle_of(spec) is not None:
    try:
      bundle = pretrained.load(folder)  # checksum checked
    except pretrained.PretrainedError as e:
      raise CheckpointError(f'--init_from={spec}: {e}') from None
    _check_family(spec, bundle.source, bundle.config, config)
    # G only: a bundle holds no D, which then starts fresh.
    return {'g': bundle.params}, bundle.config, bundle.step, bundle.source
  ckpt = checkpoints.Checkpointer(folder, create=False)

  def load(step):
    source = checkpoints.config_from_meta(ckpt.read_meta(step))
    _check_family(spec, f'{ckpt.directory}/{step}', source, config)
    template = jax.device_get(jax.eval_shape(
        lambda: systems.create_states(source, jax.random.key(0))))
    states, _, _ = ckpt.restore(template, jax.random.key(0), source,
                                step=step)
    params = {name: state.params for name, state in states.items()}
    return params, source, step, f'{ckpt.directory}/{step}'

  try:
    if step is not None:
      return load(step)
    return ckpt.newest_readable(load, move_aside=False)
  finally:
    ckpt.close()


def _check_family(spec: str, where: str, source: Config,
                  config: Config) -> None:
  if (systems.of(source).WARM_START_FAMILY !=
      systems.of(config).WARM_START_FAMILY):
    raise CheckpointError(
        f'--init_from={spec}: {where} holds a {source.model} model, which '
        f'cannot start a {config.model} run (segan and autoencoder start '
        'each other; gan only gan)')


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
  source_params, source_config, step, where = load_init_params(spec, config)
  states = dict(states)
  info = {'checkpoint': where, 'step': int(step),
          'model': source_config.model, 'loaded': {}, 'fresh': []}
  for name in sorted(states):
    if name not in source_params:
      info['fresh'].append(name)
      continue
    state = states[name]
    params, copied, padded = transfer_params(
        state.params, source_params[name], where=spec,
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
