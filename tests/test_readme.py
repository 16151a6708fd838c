"""README's fresh-machine commands are the ones CI runs."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_readme_commands_verbatim():
  readme = (REPO / 'README.md').read_text()
  ci_commands = [line for line in (REPO / '.ci' / 'run').read_text().splitlines()
                 if line.startswith('python3 -m venv')]
  assert len(ci_commands) == 2
  for command in ci_commands:
    assert command in readme, f'README lacks the CI command: {command}'
