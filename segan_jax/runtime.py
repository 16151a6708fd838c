"""Process settings that make XLA:CPU faster, applied by the entry points.

XLA:CPU allocates each step's temporary buffers (over a gigabyte for SEGAN's
paper-size train step) with ``malloc`` and frees them when the step ends.
glibc serves blocks that big with fresh ``mmap``s, so every step faults in
hundreds of thousands of new 4 KiB pages. Where transparent huge pages are in
'madvise' mode (common on cloud VMs), glibc's tunable
``glibc.malloc.hugetlb=1`` (glibc >= 2.35) makes malloc ask for huge pages:
a few thousand faults per step and fewer TLB misses (BENCHMARKS.md has the
figures). Tunables are read when a process starts, so
`reexec_with_hugepage_malloc` restarts the entry point once with the tunable
set. Set SEGAN_JAX_NO_HUGEPAGE_MALLOC=1 to keep the process as started.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

HUGEPAGE_TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT_ENV = 'SEGAN_JAX_NO_HUGEPAGE_MALLOC'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the C library when it is glibc, else None."""
  try:
    name = os.confstr('CS_GNU_LIBC_VERSION')  # e.g. 'glibc 2.36'
  except (AttributeError, ValueError, OSError):
    return None
  if not name or not name.startswith('glibc '):
    return None
  try:
    major, minor = name.split()[1].split('.')[:2]
    return int(major), int(minor)
  except (IndexError, ValueError):
    return None


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The selected transparent-huge-page mode ('always', 'madvise', 'never')."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  for word in text.split():
    if word.startswith('[') and word.endswith(']'):
      return word[1:-1]
  return None


def hugepage_malloc_environ(environ: Mapping[str, str],
                            libc: tuple[int, int] | None,
                            thp: str | None) -> dict[str, str] | None:
  """The environment to restart with, or None when a restart gains nothing.

  Only 'madvise' mode needs the tunable: under 'always' big mappings get huge
  pages anyway, under 'never' they cannot.
  """
  if environ.get(OPT_OUT_ENV, '') not in ('', '0'):
    return None
  if libc is None or libc < (2, 35) or thp != 'madvise':
    return None
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb' in tunables:
    return None  # Already set (by us before the restart, or by the user).
  env = dict(environ)
  env['GLIBC_TUNABLES'] = (f'{tunables}:{HUGEPAGE_TUNABLE}' if tunables
                           else HUGEPAGE_TUNABLE)
  return env


def reexec_with_hugepage_malloc() -> None:
  """Restarts this process (same interpreter, same arguments) with the
  huge-page malloc tunable, when it helps here; else returns at once.

  For ``if __name__ == '__main__'`` blocks only, before any real work: the
  process is replaced, so nothing done before survives.
  """
  if not sys.platform.startswith('linux') or not getattr(sys, 'orig_argv',
                                                         None):
    return
  env = hugepage_malloc_environ(os.environ, glibc_version(), thp_mode())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
  except OSError:
    return  # Could not restart: run on as started (only slower).
