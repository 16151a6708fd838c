"""segan_jax.runtime: huge-page malloc restarts, deterministic XLA flags."""

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


def test_deterministic_xla_flags_adds_replaces_and_removes_the_flag():
  flag = runtime.DETERMINISTIC_OPS_FLAG
  assert runtime.deterministic_xla_flags('', True) == flag
  assert runtime.deterministic_xla_flags(
      '--xla_a=1 --xla_gpu_deterministic_ops=false --xla_b=2', True) == (
          f'--xla_a=1 --xla_b=2 {flag}')
  assert runtime.deterministic_xla_flags(f'--xla_a=1 {flag}', False) == (
      '--xla_a=1')


def test_set_deterministic_ops_after_backend_start_is_an_error(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  jax.numpy.zeros(1).block_until_ready()  # Starts the backend.
  monkeypatch.setenv('XLA_FLAGS', '--xla_a=1')
  with pytest.raises(RuntimeError, match='already initialised'):
    runtime.set_deterministic_ops(True)
  assert os.environ['XLA_FLAGS'] == '--xla_a=1'


def test_set_deterministic_ops_before_backend_start_sets_xla_flags():
  # A fresh interpreter: this one's backend has started.
  code = ('import os; from segan_jax import runtime; '
          'runtime.set_deterministic_ops(True); '
          'print(os.environ["XLA_FLAGS"]); import jax; jax.numpy.zeros(1)')
  env = dict(os.environ, XLA_FLAGS='--xla_cpu_enable_fast_math=false')
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out == ['--xla_cpu_enable_fast_math=false',
                 runtime.DETERMINISTIC_OPS_FLAG]
