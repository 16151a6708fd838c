"""The installed command line: ``python -m segan_jax`` and ``segan-jax``."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_gives_module_and_console_script(tmp_path):
  # Built from a copy, as `pip install .` from a fresh clone would, into a
  # folder of its own (no dependencies: this interpreter has them).
  source = tmp_path / 'source'
  source.mkdir()
  for name in ('pyproject.toml', 'setup.cfg', 'README.md'):
    shutil.copy(REPO / name, source / name)
  shutil.copytree(REPO / 'segan_jax', source / 'segan_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  site = tmp_path / 'site'
  install = subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
       str(site), str(source)], capture_output=True, text=True, timeout=600)
  assert install.returncode == 0, install.stderr[-3000:]
  env = dict(os.environ, PYTHONPATH=str(site))
  elsewhere = tmp_path / 'elsewhere'  # not the repository: no launch.py here
  elsewhere.mkdir()

  def run(*command):
    return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)

  where = run(sys.executable, '-c', 'import segan_jax; print(segan_jax.__file__)')
  assert where.stdout.startswith(str(site)), where.stdout + where.stderr
  module = run(sys.executable, '-m', 'segan_jax', '--helpfull')
  # The usage, and success: absl's own status for it is 1.
  assert module.returncode == 0 and not module.stderr, module.stderr[-2000:]
  assert '--flagfile' in module.stdout and '--workdir' in module.stdout
  # The bundled pretrained model is installed with the package, checksum
  # and all.
  bundled = run(sys.executable, '-c',
                'from segan_jax import pretrained; b = pretrained.load(); '
                'print(b.path); print(b.source)')
  assert bundled.returncode == 0, bundled.stderr[-2000:]
  assert bundled.stdout.startswith(str(site)), bundled.stdout
  assert 'bundled pretrained model' in bundled.stdout
  script = run(str(site / 'bin' / 'segan-jax'), '--mode=evaluate')
  # A usage slip answers with the package's one-line error.
  assert script.returncode == 2
  assert script.stderr.strip().splitlines()[-1] == (
      'error: --mode=evaluate needs --workdir (the run to score), '
      '--results=FILE.json (to score the bundled pretrained model), or '
      '--clean_dir with --enhanced_dir')


def test_help_succeeds_and_a_bad_flag_still_fails():
  def launch(*args):
    return subprocess.run([sys.executable, str(REPO / 'launch.py'), *args],
                          capture_output=True, text=True, timeout=300)

  for request, shown in (('--help', '--helpfull'), ('--helpfull', '--mode')):
    answer = launch(request)
    assert answer.returncode == 0, (request, answer.stderr[-2000:])
    assert shown in answer.stdout
  wrong = launch('--no_such_flag')
  assert wrong.returncode == 1
  assert 'no_such_flag' in wrong.stderr


def test_each_config_field_is_described_once_where_it_is_defined():
  # In a process of its own: the CLI's flags go into absl's global FLAGS,
  # where other tools' flags (a benchmark's --model_size) may already be.
  check = (
      'import dataclasses\n'
      'from absl import flags\n'
      'from segan_jax import config, flags as segan_flags\n'
      'for field in dataclasses.fields(config.Config):\n'
      '  text = field.metadata.get("help")\n'
      '  assert text and len(text) > 10, field.name\n'
      '  # an enum\'s help starts with its choices\n'
      '  assert flags.FLAGS[field.name].help.endswith(text), field.name\n'
      'print(len(dataclasses.fields(config.Config)))\n')
  run = subprocess.run([sys.executable, '-c', check], capture_output=True,
                       text=True, cwd=REPO, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  assert int(run.stdout.split()[-1]) > 40


def test_help_answers_without_loading_jax():
  # What `python -m segan_jax --help` runs before it answers (the restart
  # with huge-page malloc aside), in a process of its own.
  check = (
      'import sys\n'
      'from segan_jax import cli\n'
      'for request in ("--help", "--helpfull"):\n'
      '  try:\n'
      '    cli.app.run(cli.main, argv=["segan_jax", request])\n'
      '  except SystemExit:\n'
      '    pass\n'
      'loaded = sorted(m for m in ("jax", "flax", "orbax", "tensorflow")\n'
      '                if m in sys.modules)\n'
      'print("loaded:", loaded)\n')
  run = subprocess.run([sys.executable, '-c', check], capture_output=True,
                       text=True, cwd=REPO, timeout=120, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  assert '--mode' in run.stdout  # the help was printed
  assert run.stdout.strip().splitlines()[-1] == 'loaded: []'


def test_each_output_setting_is_a_config_field_and_an_override():
  import dataclasses  # pylint: disable=g-import-not-at-top
  from segan_jax import config  # pylint: disable=g-import-not-at-top
  from segan_jax import output_settings  # pylint: disable=g-import-not-at-top
  marked = [f.name for f in dataclasses.fields(config.Config)
            if f.metadata.get('output_setting')]
  assert sorted(marked) == sorted(output_settings.NAMES)
  defaults = config.Config()
  assert output_settings.OutputSettings.from_config(defaults) == (
      output_settings.OutputSettings())
  for name in output_settings.NAMES:
    help_text = dataclasses.fields(config.Config)[
        [f.name for f in dataclasses.fields(config.Config)].index(name)
    ].metadata['help']
    assert help_text.endswith('may override it.'), name


@pytest.mark.parametrize('given, expected', [(['--deterministic'], True),
                                             ([], False)])
def test_deterministic_flag_sets_xla_gpu_deterministic_ops(given, expected):
  # The mode is replaced by a probe that reports XLA_FLAGS as the mode would
  # see it, before any JAX computation.
  probe = (
      'import os, sys\n'
      'from absl import app\n'
      'from segan_jax import cli, modes\n'
      "modes.run = lambda mode, cache: print('XLA_FLAGS=' + "
      "os.environ.get('XLA_FLAGS', ''))\n"
      f"sys.argv = ['segan_jax'] + {given!r}\n"
      'app.run(cli.main)\n')
  done = subprocess.run([sys.executable, '-c', probe], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  line = next(l for l in done.stdout.splitlines() if l.startswith('XLA_FLAGS='))
  assert ('--xla_gpu_deterministic_ops=true' in line) is expected, line
