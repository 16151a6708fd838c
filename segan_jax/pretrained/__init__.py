"""Generators bundled with the package: G's parameters, its run's config and
a model card, loaded without a training run.

A bundle is a folder here (``segan_jax/pretrained/NAME/``) holding

- ``params.npz``: G's parameters, one float16 array per '/'-joined path
  (half the bytes of float32; the loader casts them back to float32);
- ``manifest.json``: name, version, the training step, the run's Config and
  the SHA-256 of ``params.npz``, which loading checks;
- ``MODEL_CARD.md``: how it was trained and how it scores.

``python -m segan_jax --mode=bundle --workdir=W --bundle_name=NAME`` writes
one from a training run (segan_jax/bundling.py, which no module of this
package imports).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Any

import numpy as np
from flax import traverse_util

from segan_jax import checkpoints
from segan_jax import files
from segan_jax.config import Config

# The bundle `Enhancer.from_pretrained()` and a workdir-less enhance use.
DEFAULT = 'segan_vbd'
PARAMS_FILE = 'params.npz'
MANIFEST_FILE = 'manifest.json'
CARD_FILE = 'MODEL_CARD.md'
ROOT = os.path.dirname(os.path.abspath(__file__))


class PretrainedError(checkpoints.CheckpointError):
  """A bundle that is missing, damaged or altered (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Bundle:
  """A loaded bundle: what enhance needs, and where it came from."""

  name: str
  version: str
  config: Config
  params: Any
  step: int
  path: str

  @property
  def source(self) -> str:
    return (f'bundled pretrained model {self.name} v{self.version} '
            f'(step {self.step})')


def available(root: str = ROOT) -> list[str]:
  """Names of the bundles under ``root``."""
  return sorted(name for name in os.listdir(root)
                if os.path.isfile(os.path.join(root, name, MANIFEST_FILE)))


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def bundle_dir(name: str, root: str = ROOT) -> str:
  """The folder of bundle ``name``, or a one-line error naming the choices.

  ``name`` may also be the path of a bundle folder.
  """
  if os.path.isfile(os.path.join(name, MANIFEST_FILE)):
    return name
  path = os.path.join(root, name)
  if not os.path.isfile(os.path.join(path, MANIFEST_FILE)):
    known = ', '.join(available(root)) or 'none'
    raise PretrainedError(f'no pretrained model {name!r} in {root} '
                          f'(bundled: {known})')
  return path


def load(name: str = DEFAULT, root: str = ROOT) -> Bundle:
  """Loads bundle ``name`` (a bundled name or a bundle folder).

  Raises PretrainedError, with the file and the problem in one line, when
  the manifest is unreadable or ``params.npz`` is missing, unreadable or not
  the file whose SHA-256 the manifest records.
  """
  path = bundle_dir(name, root)
  manifest_path = os.path.join(path, MANIFEST_FILE)
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
    config = checkpoints.config_from_meta(manifest)
    expected = manifest['sha256']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise PretrainedError(f'{manifest_path}: not a readable bundle manifest '
                          f'({type(e).__name__}: {e})') from e
  params_path = os.path.join(path, manifest.get('params', PARAMS_FILE))
  if not os.path.isfile(params_path):
    raise PretrainedError(f'{params_path}: missing')
  actual = sha256(params_path)
  if actual != expected:
    raise PretrainedError(
        f'{params_path}: SHA-256 {actual[:16]}… does not match '
        f'{expected[:16]}… in {MANIFEST_FILE}; the file is damaged or was '
        'replaced (reinstall the package or re-export the bundle)')
  try:
    with np.load(params_path) as arrays:
      flat = {tuple(key.split('/')): np.asarray(arrays[key], np.float32)
              for key in arrays.files}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise PretrainedError(f'{params_path}: unreadable ({e})') from e
  return Bundle(name=manifest.get('name', os.path.basename(path)),
                version=str(manifest.get('version', '?')), config=config,
                params=traverse_util.unflatten_dict(flat),
                step=int(manifest.get('step', 0)), path=path)


def write(path: str, *, name: str, version: str, config: Config, params: Any,
          step: int, extra: dict[str, Any] | None = None) -> str:
  """Writes ``params.npz`` and ``manifest.json`` of a bundle into ``path``.

  Each file is written atomically (files.atomic_open), parameters first,
  so an interrupted write leaves the old bundle whole or a manifest that
  does not match (which loading reports). Returns the parameters' SHA-256.
  """
  flat = traverse_util.flatten_dict(params)
  arrays = {'/'.join(key): np.asarray(value, np.float16)
            for key, value in flat.items()}
  for key, value in arrays.items():
    if not np.all(np.isfinite(value)):
      raise PretrainedError(f'parameter {key} does not fit float16 (or is '
                            'not finite); not bundling it')
  params_path = os.path.join(path, PARAMS_FILE)
  with files.atomic_open(params_path, 'wb') as f:
    np.savez(f, **arrays)
  digest = sha256(params_path)
  manifest = dict(name=name, version=version, step=int(step),
                  params=PARAMS_FILE, sha256=digest, dtype='float16',
                  config=config.to_dict(), **(extra or {}))
  with files.atomic_open(os.path.join(path, MANIFEST_FILE)) as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write('\n')
  return digest
