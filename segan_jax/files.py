"""Writing files so that a crash never leaves a half-written one."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w', **open_kwargs):
  """Opens a temporary file beside ``path``; renames it to ``path`` on success.

  Readers see the old file or the complete new one, never a partial write; on
  an exception the temporary file is removed and ``path`` is left untouched.
  The file gets the usual permissions (0666 less the umask), not mkstemp's
  private 0600, so reports and pictures can be served or shared.
  ``open_kwargs`` go to ``open`` (e.g. ``newline=''`` for csv).
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                             suffix='.partial', dir=folder)
  try:
    with os.fdopen(fd, mode, **open_kwargs) as f:
      yield f
    publish(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def publish(tmp: str, path: str) -> None:
  """Renames the complete temporary file ``tmp`` to ``path`` with the usual
  permissions (0666 less the umask) instead of mkstemp's private 0600."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  os.replace(tmp, path)


def write_wav(path: str, waveform, sample_rate: int) -> None:
  """A mono float waveform as 16-bit WAV, clipped to [-1, 1], atomically."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import soundfile  # pylint: disable=g-import-not-at-top
  with atomic_open(path, 'wb') as f:
    soundfile.write(f, np.clip(waveform, -1, 1), sample_rate, format='WAV',
                    subtype='PCM_16')
