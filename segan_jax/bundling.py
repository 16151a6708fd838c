"""Writing a bundle (segan_jax/pretrained/NAME/) from a training run's
checkpoint, or again from a bundle with other output settings:

  python -m segan_jax --mode=bundle --workdir=workdirs/pretrained \
    --bundle_name=segan_vbd --bundle_version=1

takes the run's best checkpoint (or --checkpoint_step, or the mean of G over
--average_steps) and writes ``{params.npz,manifest.json}`` under
--bundle_root (default: the package's). The model card beside them is written
by hand from the run's figures. --pretrained=NAME_OR_FOLDER instead of
--workdir writes a bundle's G again; the output settings' flags
(output_settings.NAMES) given on the command line override the model's.

The command line (cli.py) is this module's only importer: the loader
(segan_jax/pretrained/) stays below everything that restores a generator.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from segan_jax import generators
from segan_jax import pretrained
from segan_jax.output_settings import OutputSettings


def bundle_run(workdir: str, name: str, version: str, root: str,
               step: int | None = None,
               average_steps: list[int] | None = None,
               **overrides: float | bool | None) -> tuple[str, str]:
  """Bundles G of ``workdir`` (of checkpoint ``step``, or the mean over
  ``average_steps``) with ``overrides`` (output settings by name; None keeps
  the run's); returns (bundle folder, SHA-256)."""
  if average_steps:
    if step is not None:
      raise ValueError('give a checkpoint step or steps to average, not both')
    generator = average_generator(workdir, average_steps)
  else:
    generator = generators.restore_generator(workdir, step)
  return _write(generator, name, version, root, overrides,
                trained_from=generator.source)


def average_generator(workdir: str,
                      steps: list[int]) -> generators.TrainedGenerator:
  """G with the mean parameters of checkpoints ``steps`` of ``workdir``.

  Averaging the weights a run passes through as its learning rate decays
  lands nearer the middle of the minimum it circles, which generalises
  better than any one of them (stochastic weight averaging).
  """
  steps = sorted(set(int(s) for s in steps))
  restored = [generators.restore_generator(workdir, s) for s in steps]
  shapes = [jax.tree.map(np.shape, g.params) for g in restored]
  if any(s != shapes[0] for s in shapes[1:]):
    raise ValueError(f'{workdir}: checkpoints {steps} hold G of different '
                     'shapes; only one run\'s checkpoints can be averaged')
  params = jax.tree.map(
      lambda *leaves: np.mean(np.stack(leaves).astype(np.float32), axis=0),
      *[g.params for g in restored])
  listed = ', '.join(str(s) for s in steps)
  return generators.TrainedGenerator(
      restored[-1].config, params, steps[-1],
      f'mean of G over checkpoint steps {listed}')


def rebundle(source: str, name: str, version: str, root: str,
             **overrides: float | bool | None) -> tuple[str, str]:
  """Bundles the G of bundle ``source`` again (float16 both times, so the
  parameters are unchanged); returns (bundle folder, SHA-256)."""
  loaded = pretrained.load(source)  # checksum checked
  # The provenance that load() does not keep, from the manifest it checked.
  with open(os.path.join(loaded.path, pretrained.MANIFEST_FILE)) as f:
    trained_from = json.load(f).get('trained_from', loaded.source)
  return _write(loaded, name, version, root, overrides,
                trained_from=trained_from, rebundled_from=loaded.source)


def _write(generator: generators.TrainedGenerator | pretrained.Bundle, name,
           version, root, overrides, **extra) -> tuple[str, str]:
  """Writes G's parameters and step with the output settings overridden;
  the model's own fields stay as trained."""
  settings = OutputSettings.from_config(generator.config).with_overrides(
      **overrides)
  config = generator.config.replace(**dataclasses.asdict(settings))
  path = os.path.join(root, name)
  digest = pretrained.write(
      path, name=name, version=version, config=config,
      params=generator.params, step=generator.step, extra=extra)
  return path, digest
