"""Process settings applied by the entry points: huge-page malloc and the
compilation cache, which make XLA:CPU faster, and XLA:GPU's deterministic ops.

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


# --- Persistent compilation cache ------------------------------------------------
#
# Every launch (train, resume, enhance, evaluate) used to compile the same XLA
# programs again, tens of seconds for the paper-size train step alone. JAX can
# keep compiled executables on disk (XLA:CPU's too) keyed by the program,
# the devices, the flags and the jax/jaxlib versions, so a relaunch loads
# them instead. The directory is a setting of the machine, not of the run: it
# is a command-line flag (segan_jax/cli.py), not a Config field, and two runs
# that differ only in it have the same Config.

CACHE_DIR_ENV = 'JAX_COMPILATION_CACHE_DIR'
MIN_COMPILE_TIME_ENV = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'


def default_compilation_cache_dir(environ: Mapping[str, str] | None = None
                                  ) -> str:
  """$JAX_COMPILATION_CACHE_DIR when set, else
  $XDG_CACHE_HOME/segan_jax/jax_compilation_cache (~/.cache when unset)."""
  environ = os.environ if environ is None else environ
  if environ.get(CACHE_DIR_ENV):
    return environ[CACHE_DIR_ENV]
  base = environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'segan_jax', 'jax_compilation_cache')


def _unwritable_reason(path: str) -> str | None:
  """Makes the folder (private to the user) if needed; why it cannot hold the
  cache, or None."""
  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
  except OSError as e:
    return e.strerror or str(e)
  if not os.access(path, os.W_OK | os.X_OK):
    return 'not writable'
  return None


def enable_compilation_cache(path: str | None) -> str | None:
  """Points JAX's persistent compilation cache at ``path``; returns the folder
  used, or None when the cache is off.

  None takes `default_compilation_cache_dir`; '' turns the cache off (also one
  asked for by $JAX_COMPILATION_CACHE_DIR). A folder that cannot be made or
  written turns it off with a one-line warning: the run goes on, compiling as
  without a cache. Call once per process, before anything is compiled.

  Every program is cached, not only those that compiled in over 1 s (JAX's
  default threshold, tuned for TPU programs that compile in minutes): on CPU
  most of SEGAN's programs (the eval step, the data and metric helpers)
  compile in well under a second each, but they add up to seconds per
  launch, and reading one back takes milliseconds. A set
  $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is respected.
  """
  # Here: cli.py imports this module before it answers --help, without JAX.
  import jax  # pylint: disable=g-import-not-at-top
  if path is None:
    path = default_compilation_cache_dir()
  if not path:
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  path = os.path.abspath(os.path.expanduser(path))
  reason = _unwritable_reason(path)
  if reason is not None:
    print(f'warning: compilation cache off: cannot write {path} ({reason}); '
          'pass --compilation_cache_dir=DIR, or \'\' to silence this.',
          file=sys.stderr, flush=True)
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', path)
  if not os.environ.get(MIN_COMPILE_TIME_ENV):
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path


DETERMINISTIC_OPS_FLAG = '--xla_gpu_deterministic_ops=true'


def deterministic_xla_flags(xla_flags: str, enabled: bool) -> str:
  """``xla_flags`` (an $XLA_FLAGS value) with XLA:GPU's deterministic-ops
  flag set to ``enabled``: any earlier setting of it is replaced, the other
  flags are kept in order."""
  kept = [f for f in xla_flags.split()
          if not f.startswith('--xla_gpu_deterministic_ops')]
  if enabled:
    kept.append(DETERMINISTIC_OPS_FLAG)
  return ' '.join(kept)


def set_deterministic_ops(enabled: bool) -> None:
  """Makes XLA:GPU's ops deterministic (same inputs, same bits: no atomics
  in reductions and scatters, cuDNN algorithms picked deterministically), or
  takes the flag back out of $XLA_FLAGS.

  XLA reads $XLA_FLAGS once, when JAX's backends start, so this must run
  before the first array or jit call; later it raises RuntimeError rather
  than silently doing nothing. No effect on XLA:CPU, which is deterministic
  anyway.
  """
  # Here, not at the top: the CLI imports this module before --help answers.
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        'set_deterministic_ops: JAX\'s backend is already initialised, so '
        'XLA_FLAGS is no longer read; call it before any JAX computation')
  os.environ['XLA_FLAGS'] = deterministic_xla_flags(
      os.environ.get('XLA_FLAGS', ''), enabled)
