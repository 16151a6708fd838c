"""README's fresh-machine commands are the ones CI runs."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_readme_commands_verbatim():
  readme = (REPO / 'README.md').read_text()
  ci_commands = [line for line in (REPO / '.ci' / 'run').read_text().splitlines()
                 if line.startswith('python3 -m venv')]
  assert len(ci_commands) == 2
  for command in ci_commands:
    assert command in readme, f'README lacks the CI command: {command}'


def test_readme_layout_names_every_module_and_package():
  readme = (REPO / 'README.md').read_text()
  layout = readme.split('## Layout', 1)[1].split('```')[1]
  words = set(re.findall(r'[A-Za-z_]+(?:\.py)?/?', layout))
  package = REPO / 'segan_jax'
  missing = []
  for path in sorted(package.iterdir()):
    if path.name.startswith('__') and path.name != '__main__.py':
      continue
    if path.is_dir():
      if (path / '__init__.py').exists() and path.name + '/' not in words:
        missing.append(path.name + '/')
    elif path.suffix == '.py' and path.name not in words:
      missing.append(path.name)
  for sub in ('ops/conv',):
    assert sub + '/' in layout
  assert not missing, f'README layout lacks {missing}'
