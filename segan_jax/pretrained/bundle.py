"""Writes a bundle from a training run's checkpoint.

  python -m segan_jax.pretrained.bundle --workdir=workdirs/pretrained \
    --name=segan_vbd --version=1

takes the run's best checkpoint (or --checkpoint_step, or the mean of G over
--average_steps) and writes
``segan_jax/pretrained/NAME/{params.npz,manifest.json}`` (or under --root).
The model card beside them is written by hand from the run's figures.
--from_bundle=NAME_OR_FOLDER instead of --workdir writes a bundle's G again
with other output settings (--output_highpass_hz, --attenuation_limit_db,
--output_mask, --mask_oversubtraction, --mask_noise_frames).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np

from segan_jax import checkpoints
from segan_jax import enhance
from segan_jax import pretrained

WORKDIR = flags.DEFINE_string('workdir', None, 'The training run to bundle.')
FROM_BUNDLE = flags.DEFINE_string(
    'from_bundle', None, 'Instead of --workdir: a bundle (name or folder) '
    'whose G is bundled again, with the overrides below.')
NAME = flags.DEFINE_string('name', pretrained.DEFAULT, 'Bundle name.')
VERSION = flags.DEFINE_string('version', '1', 'Bundle version.')
STEP = flags.DEFINE_integer('checkpoint_step', None,
                            'Checkpoint to bundle (default: the best one, '
                            'else the latest).')
AVERAGE = flags.DEFINE_list(
    'average_steps', None, 'Instead of --checkpoint_step: checkpoints whose '
    "G parameters are averaged into the bundle, e.g. the last few of a run's "
    'decay (weight averaging, Izmailov et al. 2018).')
flags.DEFINE_float(
    'output_highpass_hz', None, "Override the run's output high-pass (Hz; 0: "
    'off) in the bundle, e.g. as chosen on a validation folder.')
flags.DEFINE_float(
    'attenuation_limit_db', None, "Override the run's --attenuation_limit_db "
    '(dB; 0: no limit) in the bundle, e.g. as chosen on a validation folder.')
flags.DEFINE_bool(
    'output_mask', None, "Override the run's --output_mask in the bundle.")
flags.DEFINE_float(
    'mask_oversubtraction', None, "Override the run's --mask_oversubtraction "
    '(0: the ratio gain; a > 0: the Wiener gain) in the bundle.')
flags.DEFINE_integer(
    'mask_noise_frames', None, "Override the run's --mask_noise_frames (odd; "
    '1: no smoothing of the Wiener gain\'s noise estimate) in the bundle.')
ROOT = flags.DEFINE_string('root', pretrained.ROOT,
                           'Folder the bundle folder is written into.')


# Settings of how G's output becomes audio, which a bundle may change (None:
# keep the run's); the model's own fields stay as trained.
OUTPUT_SETTINGS = ('output_highpass_hz',) + enhance.OUTPUT_OVERRIDES


def bundle_run(workdir: str, name: str, version: str, root: str,
               step: int | None = None,
               average_steps: list[int] | None = None,
               **output_settings: float | bool | None) -> tuple[str, str]:
  """Bundles G of ``workdir`` (of checkpoint ``step``, or the mean over
  ``average_steps``) with ``output_settings`` (of `OUTPUT_SETTINGS`)
  overriding the run's; returns (bundle folder, SHA-256)."""
  if average_steps:
    if step is not None:
      raise ValueError('give a checkpoint step or steps to average, not both')
    generator = average_generator(workdir, average_steps)
  else:
    generator = enhance.restore_generator(workdir, step)
  return _write(generator, name, version, root, output_settings,
                trained_from=generator.source)


def average_generator(workdir: str,
                      steps: list[int]) -> enhance.TrainedGenerator:
  """G with the mean parameters of checkpoints ``steps`` of ``workdir``.

  Averaging the weights a run passes through as its learning rate decays
  lands nearer the middle of the minimum it circles, which generalises
  better than any one of them (stochastic weight averaging).
  """
  steps = sorted(set(int(s) for s in steps))
  generators = [enhance.restore_generator(workdir, s) for s in steps]
  shapes = [jax.tree.map(np.shape, g.params) for g in generators]
  if any(s != shapes[0] for s in shapes[1:]):
    raise ValueError(f'{workdir}: checkpoints {steps} hold G of different '
                     'shapes; only one run\'s checkpoints can be averaged')
  params = jax.tree.map(
      lambda *leaves: np.mean(np.stack(leaves).astype(np.float32), axis=0),
      *[g.params for g in generators])
  listed = ', '.join(str(s) for s in steps)
  return enhance.TrainedGenerator(
      generators[-1].config, params, steps[-1],
      f'mean of G over checkpoint steps {listed}')


def rebundle(source: str, name: str, version: str, root: str,
             **output_settings: float | bool | None) -> tuple[str, str]:
  """Bundles the G of bundle ``source`` again (float16 both times, so the
  parameters are unchanged); returns (bundle folder, SHA-256)."""
  loaded = pretrained.load(source)  # checksum checked
  # The provenance that load() does not keep, from the manifest it checked.
  with open(os.path.join(loaded.path, pretrained.MANIFEST_FILE)) as f:
    trained_from = json.load(f).get('trained_from', loaded.source)
  return _write(loaded, name, version, root, output_settings,
                trained_from=trained_from, rebundled_from=loaded.source)


def _write(generator: enhance.TrainedGenerator | pretrained.Bundle, name,
           version, root, output_settings, **extra) -> tuple[str, str]:
  """Writes G's parameters and step with the config's overrides."""
  unknown = set(output_settings) - set(OUTPUT_SETTINGS)
  if unknown:
    raise ValueError(f'a bundle can override {", ".join(OUTPUT_SETTINGS)}, '
                     f'not {", ".join(sorted(unknown))}')
  config = dataclasses.replace(generator.config, **{
      k: v for k, v in output_settings.items() if v is not None})
  path = os.path.join(root, name)
  digest = pretrained.write(
      path, name=name, version=version, config=config,
      params=generator.params, step=generator.step, extra=extra)
  return path, digest


def _steps(values: list[str] | None) -> list[int] | None:
  if not values:
    return None
  try:
    return [int(v) for v in values]
  except ValueError:
    raise app.UsageError(
        f'--average_steps: {",".join(values)} is not a list of steps') from None


def main(argv):
  del argv
  if bool(WORKDIR.value) == bool(FROM_BUNDLE.value):
    raise app.UsageError('give --workdir (a run) or --from_bundle (a bundle)')
  if FROM_BUNDLE.value and (AVERAGE.value or STEP.value is not None):
    raise app.UsageError('--checkpoint_step and --average_steps pick '
                         'checkpoints of a --workdir, not of a bundle')
  # The override flags are named as the settings they override.
  settings = {name: flags.FLAGS[name].value for name in OUTPUT_SETTINGS}
  try:
    if WORKDIR.value:
      path, digest = bundle_run(WORKDIR.value, NAME.value, VERSION.value,
                                ROOT.value, STEP.value, _steps(AVERAGE.value),
                                **settings)
    else:
      path, digest = rebundle(FROM_BUNDLE.value, NAME.value, VERSION.value,
                              ROOT.value, **settings)
  except (ValueError, checkpoints.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'Wrote {path} (params sha256 {digest}).')


if __name__ == '__main__':
  app.run(main)
