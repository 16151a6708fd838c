"""Finding and loading (noisy, clean) wav pairs, with one-line errors.

A pair is two files with the same name in a ``noisy/`` and a ``clean/``
folder. Each pair is checked before it is used: both files readable audio,
non-empty, finite, equally long after conversion to mono 16 kHz, and the
clean file not silent (nothing to learn or score against).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from absl import logging

from segan_jax import audio


class PairError(ValueError):
  """A pair or folder that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Pair:
  id: str          # file name relative to its folder
  # The file measured against the clean one (ITU-T P.862's term): the noisy
  # file of a dataset, or an enhanced file being evaluated.
  degraded: str    # path
  clean: str       # path
  speaker: str     # VoiceBank-style prefix before '_' (p232_001 -> p232)


def speaker_of(name: str) -> str:
  stem = os.path.splitext(os.path.basename(name))[0]
  return stem.split('_')[0] if '_' in stem else ''


def _audio_files(folder: str) -> list[str]:
  found = []
  for root, _, files in os.walk(folder):
    for f in files:
      if audio.is_audio_file_name(f):
        found.append(os.path.relpath(os.path.join(root, f), folder))
  return sorted(found)


def find_pairs(noisy_dir: str, clean_dir: str,
               skip_bad_files: bool = False,
               kinds: tuple[str, str] = ('noisy', 'clean')) -> list[Pair]:
  """Matches files of ``noisy_dir`` and ``clean_dir`` by relative name.

  ``kinds`` names the two folders in messages (evaluation pairs enhanced
  files with clean ones).
  """
  kind, clean_kind = kinds
  for folder in (noisy_dir, clean_dir):
    if not os.path.isdir(folder):
      raise PairError(f'{folder}: no such folder')
  noisy = _audio_files(noisy_dir)
  clean = set(_audio_files(clean_dir))
  pairs, problems = [], []
  for name in noisy:
    if name in clean:
      pairs.append(Pair(name, os.path.join(noisy_dir, name),
                        os.path.join(clean_dir, name), speaker_of(name)))
    else:
      problems.append(f'{os.path.join(noisy_dir, name)}: no {clean_kind} '
                      f'partner {os.path.join(clean_dir, name)}')
  for name in sorted(clean - set(noisy)):
    problems.append(f'{os.path.join(clean_dir, name)}: no {kind} partner '
                    f'{os.path.join(noisy_dir, name)}')
  report_or_raise(problems, skip_bad_files)
  if not pairs:
    raise PairError(f'{noisy_dir}: no ({kind}, {clean_kind}) pairs with equal '
                    f'file names in {noisy_dir} and {clean_dir}')
  return pairs


def report_or_raise(problems: list[str], skip_bad_files: bool) -> None:
  """Raises on the first problem, or logs them all when skipping is asked."""
  if not problems:
    return
  if not skip_bad_files:
    more = f' (and {len(problems) - 1} more problems)' if len(problems) > 1 else ''
    raise PairError(problems[0] + more + '; fix the data or pass '
                    '--skip_bad_files to leave such files out')
  for problem in problems:
    logging.warning('Skipping bad file: %s', problem)


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
  """Both files as mono float32 at 16 kHz; PairError when unusable."""
  noisy = audio.read_mono_16k(pair.degraded)
  clean = audio.read_mono_16k(pair.clean)
  if noisy.shape != clean.shape:
    raise PairError(f'{pair.degraded}: {noisy.shape[0]} samples at 16 kHz but '
                    f'its clean partner {pair.clean} has {clean.shape[0]}')
  if not np.any(clean):
    raise PairError(f'{pair.clean}: all-zero (silent) clean audio')
  if not np.any(noisy):
    raise PairError(f'{pair.degraded}: all-zero (silent) noisy audio')
  return noisy, clean


def iter_loaded_pairs(pairs: list[Pair], skip_bad_files: bool):
  """Yields (pair, noisy, clean), skipping unusable pairs only when asked."""
  skipped = 0
  for pair in pairs:
    try:
      noisy, clean = load_pair(pair)
    except (PairError, audio.AudioError) as e:
      if not skip_bad_files:
        raise PairError(f'{e}; fix the data or pass --skip_bad_files to '
                        'leave such files out') from None
      logging.warning('Skipping bad file: %s', e)
      skipped += 1
      continue
    yield pair, noisy, clean
  if skipped:
    logging.warning('Skipped %d of %d pairs.', skipped, len(pairs))
