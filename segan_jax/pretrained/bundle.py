"""Writes a bundle from a training run's checkpoint.

  python -m segan_jax.pretrained.bundle --workdir=workdirs/pretrained \
    --name=segan_vbd --version=1

takes the run's best checkpoint (or --checkpoint_step) and writes
``segan_jax/pretrained/NAME/{params.npz,manifest.json}`` (or under --root).
The model card beside them is written by hand from the run's figures.
--from_bundle=NAME_OR_FOLDER instead of --workdir writes a bundle's G again
with other output settings (--output_highpass_hz, --attenuation_limit_db).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags

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
HIGHPASS = flags.DEFINE_float(
    'output_highpass_hz', None, "Override the run's output high-pass (Hz; 0: "
    'off) in the bundle, e.g. as chosen on a validation folder.')
LIMIT = flags.DEFINE_float(
    'attenuation_limit_db', None, "Override the run's --attenuation_limit_db "
    '(dB; 0: no limit) in the bundle, e.g. as chosen on a validation folder.')
ROOT = flags.DEFINE_string('root', pretrained.ROOT,
                           'Folder the bundle folder is written into.')


def bundle_run(workdir: str, name: str, version: str, root: str,
               step: int | None = None,
               output_highpass_hz: float | None = None,
               attenuation_limit_db: float | None = None) -> tuple[str, str]:
  """Bundles G of ``workdir``; returns (bundle folder, SHA-256)."""
  generator = enhance.restore_generator(workdir, step)
  return _write(generator, name, version, root, output_highpass_hz,
                attenuation_limit_db, trained_from=generator.source)


def rebundle(source: str, name: str, version: str, root: str,
             output_highpass_hz: float | None = None,
             attenuation_limit_db: float | None = None) -> tuple[str, str]:
  """Bundles the G of bundle ``source`` again (float16 both times, so the
  parameters are unchanged); returns (bundle folder, SHA-256)."""
  loaded = pretrained.load(source)  # checksum checked
  # The provenance that load() does not keep, from the manifest it checked.
  with open(os.path.join(loaded.path, pretrained.MANIFEST_FILE)) as f:
    trained_from = json.load(f).get('trained_from', loaded.source)
  return _write(loaded, name, version, root, output_highpass_hz,
                attenuation_limit_db, trained_from=trained_from,
                rebundled_from=loaded.source)


def _write(generator: enhance.TrainedGenerator | pretrained.Bundle, name,
           version, root, output_highpass_hz, attenuation_limit_db,
           **extra) -> tuple[str, str]:
  """Writes G's parameters and step with the config's overrides."""
  config = generator.config
  if output_highpass_hz is not None:
    config = dataclasses.replace(config, output_highpass_hz=output_highpass_hz)
  if attenuation_limit_db is not None:
    config = dataclasses.replace(config,
                                 attenuation_limit_db=attenuation_limit_db)
  path = os.path.join(root, name)
  digest = pretrained.write(
      path, name=name, version=version, config=config,
      params=generator.params, step=generator.step, extra=extra)
  return path, digest


def main(argv):
  del argv
  if bool(WORKDIR.value) == bool(FROM_BUNDLE.value):
    raise app.UsageError('give --workdir (a run) or --from_bundle (a bundle)')
  try:
    if WORKDIR.value:
      path, digest = bundle_run(WORKDIR.value, NAME.value, VERSION.value,
                                ROOT.value, STEP.value, HIGHPASS.value,
                                LIMIT.value)
    else:
      path, digest = rebundle(FROM_BUNDLE.value, NAME.value, VERSION.value,
                              ROOT.value, HIGHPASS.value, LIMIT.value)
  except (ValueError, checkpoints.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'Wrote {path} (params sha256 {digest}).')


if __name__ == '__main__':
  app.run(main)
