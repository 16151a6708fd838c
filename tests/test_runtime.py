"""segan_jax.runtime: when entry points restart with huge-page malloc."""

import os
import subprocess
import sys

import pytest

from segan_jax import runtime

TUNABLE = runtime.HUGEPAGE_TUNABLE


def test_restart_environ_adds_the_tunable_in_madvise_mode():
  env = runtime.hugepage_malloc_environ({'HOME': '/h'}, (2, 36), 'madvise')
  assert env == {'HOME': '/h', 'GLIBC_TUNABLES': TUNABLE}


def test_restart_environ_keeps_other_tunables():
  env = runtime.hugepage_malloc_environ(
      {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, (2, 36), 'madvise')
  assert env['GLIBC_TUNABLES'] == f'glibc.malloc.arena_max=2:{TUNABLE}'


@pytest.mark.parametrize('environ,libc,thp', [
    ({}, (2, 34), 'madvise'),          # glibc too old for the tunable
    ({}, None, 'madvise'),             # not glibc
    ({}, (2, 36), 'always'),           # huge pages without asking
    ({}, (2, 36), 'never'),            # no huge pages at all
    ({}, (2, 36), None),               # no THP on this kernel
    ({'GLIBC_TUNABLES': TUNABLE}, (2, 36), 'madvise'),  # already restarted
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, (2, 36), 'madvise'),
    ({runtime.OPT_OUT_ENV: '1'}, (2, 36), 'madvise'),   # user opted out
])
def test_no_restart_when_it_gains_nothing(environ, libc, thp):
  assert runtime.hugepage_malloc_environ(environ, libc, thp) is None


def test_thp_mode_reads_the_selected_word(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert runtime.thp_mode(str(path)) == 'madvise'
  assert runtime.thp_mode(str(tmp_path / 'missing')) is None


_CHILD = ('import os, sys; sys.path.insert(0, os.getcwd()); '
          'from segan_jax import runtime; '
          'runtime.reexec_with_hugepage_malloc(); '
          'print(os.environ.get("GLIBC_TUNABLES", ""))')


def _child_tunables(extra_env):
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', runtime.OPT_OUT_ENV)}
  env.update(extra_env)
  out = subprocess.run([sys.executable, '-c', _CHILD], env=env, check=True,
                       capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  return out.stdout.strip().splitlines()


def test_process_restarts_once_with_the_tunable():
  if runtime.hugepage_malloc_environ({}, runtime.glibc_version(),
                                     runtime.thp_mode()) is None:
    pytest.skip(f'no restart here: glibc {runtime.glibc_version()}, '
                f'THP mode {runtime.thp_mode()}')
  # One line printed: the restarted process ran the code after the restart
  # call, the original process never did.
  assert _child_tunables({}) == [TUNABLE]
  assert _child_tunables({runtime.OPT_OUT_ENV: '1'}) == []
