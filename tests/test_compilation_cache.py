"""The persistent compilation cache: a second launch (and a resume) compiles
nothing new."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from segan_jax import runtime

REPO = pathlib.Path(__file__).resolve().parents[1]
# The demo's flagfile, shrunk to the tiny model and one short epoch.
TINY = ['--flagfile=experiments/demo.flags', '--model_size=tiny',
        '--dataset_size=1', '--num_epochs=1', '--checkpoint_every_epochs=1',
        '--batch_size=8', '--vbn_reference_size=4', '--log_every_steps=5',
        '--validation_files=0']

# Runs the command after `--` (python -c CODE or launch.py ARGS) and prints
# how many times each of JAX's compilation-cache events fired.
_COUNT_EVENTS = """
import atexit, json, runpy, sys
import jax.monitoring
counts = {}
def listen(event, **kwargs):
  if event.startswith('/jax/compilation_cache/'):
    name = event.rsplit('/', 1)[1]
    counts[name] = counts.get(name, 0) + 1
jax.monitoring.register_event_listener(listen)
atexit.register(lambda: print('CACHE_EVENTS ' + json.dumps(counts),
                              file=sys.stderr, flush=True))
sys.argv = sys.argv[1:]
if sys.argv[0] == '-c':
  sys.argv = sys.argv[1:]
  exec(sys.argv[0])
else:
  runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run_counting(args, xdg_cache_home, environ=None):
  """(completed process, {event: count}) of ``python ARGS`` in a clean
  environment: no cache dir or threshold of the test session's own."""
  env = {k: v for k, v in os.environ.items()
         if k not in (runtime.CACHE_DIR_ENV, runtime.MIN_COMPILE_TIME_ENV)}
  env.update(XDG_CACHE_HOME=str(xdg_cache_home),
             XLA_FLAGS='--xla_force_host_platform_device_count=1',
             SEGAN_JAX_NO_HUGEPAGE_MALLOC='1', **(environ or {}))
  result = subprocess.run([sys.executable, '-c', _COUNT_EVENTS, *args],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
  lines = [l for l in result.stderr.splitlines()
           if l.startswith('CACHE_EVENTS ')]
  assert lines, result.stderr[-3000:]
  return result, json.loads(lines[-1].split(' ', 1)[1])


def files(folder):
  """{relative path: (size, mtime_ns)} of every file under folder."""
  folder = pathlib.Path(folder)
  return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in folder.rglob('*') if p.is_file()}


def test_default_folder_follows_the_environment(tmp_path):
  assert runtime.default_compilation_cache_dir(
      {'XDG_CACHE_HOME': '/x'}) == '/x/segan_jax/jax_compilation_cache'
  assert runtime.default_compilation_cache_dir(
      {'XDG_CACHE_HOME': '/x', 'JAX_COMPILATION_CACHE_DIR': '/j'}) == '/j'
  assert runtime.default_compilation_cache_dir({}) == os.path.join(
      os.path.expanduser('~'), '.cache', 'segan_jax', 'jax_compilation_cache')


@pytest.mark.slow
def test_second_launch_compiles_nothing_new(tmp_path):
  xdg = tmp_path / 'xdg'
  cache = xdg / 'segan_jax' / 'jax_compilation_cache'
  # First launch, default folder: every program compiled and written.
  first, events = run_counting(['launch.py', *TINY,
                                f'--workdir={tmp_path / "run1"}'], xdg)
  assert first.returncode == 0, first.stderr[-3000:]
  written = files(cache)
  assert events.get('cache_misses', 0) >= 5, events
  assert events.get('cache_hits', 0) == 0, events
  assert len(written) == events['cache_misses']
  # The same training in another workdir, the folder named by the flag:
  # every program is read back, none compiled, nothing written.
  second, events = run_counting(['launch.py', *TINY,
                                 f'--workdir={tmp_path / "run2"}',
                                 f'--compilation_cache_dir={cache}'], xdg)
  assert second.returncode == 0, second.stderr[-3000:]
  assert events.get('cache_misses', 0) == 0, events
  assert events['cache_hits'] == events['compile_requests_use_cache'] > 0
  assert files(cache) == written
  # Resuming the first run for one more epoch: the same, all hits.
  resumed, events = run_counting(['launch.py', *TINY, '--num_epochs=2',
                                  f'--workdir={tmp_path / "run1"}'], xdg)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resumed from' in resumed.stderr
  assert events.get('cache_misses', 0) == 0, events
  assert events['cache_hits'] == events['compile_requests_use_cache'] > 0
  assert files(cache) == written


_JIT = ('from segan_jax import runtime; '
        'print("cache:", runtime.enable_compilation_cache({!r})); '
        'import jax; print(jax.jit(lambda x: x * 3 + 1)(2.0))')


def test_empty_folder_turns_the_cache_off(tmp_path):
  # Even the folder that $JAX_COMPILATION_CACHE_DIR would give.
  result, events = run_counting(
      ['-c', _JIT.format('')], tmp_path / 'xdg',
      {runtime.CACHE_DIR_ENV: str(tmp_path / 'env_cache')})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'cache: None' in result.stdout and '7.0' in result.stdout
  assert events.get('compile_requests_use_cache', 0) == 0, events
  assert not (tmp_path / 'env_cache').exists()
  assert not (tmp_path / 'xdg').exists()


def test_unwritable_folder_warns_in_one_line_and_runs_on(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  path = blocker / 'cache'  # under a regular file: cannot be made
  result, events = run_counting(['-c', _JIT.format(str(path))],
                                tmp_path / 'xdg')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'cache: None' in result.stdout and '7.0' in result.stdout
  warnings = [l for l in result.stderr.splitlines() if str(path) in l]
  assert warnings == [f'warning: compilation cache off: cannot write {path} '
                      "(Not a directory); pass --compilation_cache_dir=DIR, "
                      "or '' to silence this."], result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert events.get('compile_requests_use_cache', 0) == 0, events


def test_default_folder_with_a_jit_writes_there(tmp_path):
  result, events = run_counting(['-c', _JIT.format(None)], tmp_path / 'xdg')
  assert result.returncode == 0, result.stderr[-3000:]
  cache = tmp_path / 'xdg' / 'segan_jax' / 'jax_compilation_cache'
  assert f'cache: {cache}' in result.stdout
  # Cached although it compiles in milliseconds (threshold 0 s).
  assert events.get('cache_misses', 0) >= 1, events
  assert len(files(cache)) == events['cache_misses']
