"""README is a short front page whose commands CI runs; docs/ holds the rest,
and its layout tree names every module that exists, and only those."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
LAYOUT_PAGE = REPO / 'docs' / 'layout.md'
# Packages whose modules the layout tree must name, one level deep.
LAYOUT_PACKAGES = ('segan_jax', 'benchmarks')
# Folders where a file named in the docs may live.
SOURCE_DIRS = ('segan_jax', 'benchmarks', 'experiments', 'tests', 'docs', '.ci')


def _docs_pages():
  return sorted((REPO / 'docs').glob('*.md'))


def _layout_tree() -> str:
  text = LAYOUT_PAGE.read_text()
  section = text.split('\n## Layout\n', 1)[1]
  return section.split('```')[1]


def _links(path: pathlib.Path):
  """(file, anchor) of each relative link of a Markdown file; file '' for
  an anchor in the same file."""
  for target in re.findall(r'\]\(([^)\s]+)\)', path.read_text()):
    if re.match(r'[a-z]+:', target):
      continue
    file, _, anchor = target.partition('#')
    yield file, anchor


def _anchors(path: pathlib.Path) -> set[str]:
  """GitHub's anchors of a Markdown file's headings."""
  anchors = set()
  in_code = False
  for line in path.read_text().splitlines():
    if line.startswith('```'):
      in_code = not in_code
    elif not in_code and line.startswith('#'):
      title = line.lstrip('#').strip().lower()
      anchors.add(re.sub(r'[^\w\- ]', '', title).replace(' ', '-'))
  return anchors


def test_ci_runs_readme_commands_verbatim():
  readme = (REPO / 'README.md').read_text()
  ci_commands = [line for line in (REPO / '.ci' / 'run').read_text().splitlines()
                 if line.startswith('python3 -m venv')]
  assert len(ci_commands) == 2
  for command in ci_commands:
    assert command in readme, f'README lacks the CI command: {command}'


def test_readme_is_a_short_front_page():
  lines = (REPO / 'README.md').read_text().splitlines()
  assert len(lines) <= README_MAX_LINES, (
      f'README.md has {len(lines)} lines; at most {README_MAX_LINES}: move '
      'details into docs/')


def test_readme_links_to_docs_pages_that_exist():
  linked = [f for f, _ in _links(REPO / 'README.md') if f.startswith('docs/')]
  assert linked, 'README links to no docs/ page'
  missing = [t for t in linked if not (REPO / t).is_file()]
  assert not missing, f'README links to missing files: {missing}'
  # Every docs page is reachable from the front page.
  pages = {f'docs/{p.name}' for p in _docs_pages()}
  unlinked = pages - set(linked)
  assert not unlinked, f'README does not link to {sorted(unlinked)}'


def test_links_of_readme_and_docs_resolve_with_their_anchors():
  broken = []
  for page in [REPO / 'README.md'] + _docs_pages():
    for file, anchor in _links(page):
      target = page.parent / file if file else page
      if not target.exists():
        broken.append(f'{page.relative_to(REPO)}: {file}')
      elif anchor and target.suffix == '.md' and anchor not in _anchors(target):
        broken.append(f'{page.relative_to(REPO)}: {file}#{anchor}')
  assert not broken, f'broken links: {broken}'


def test_layout_names_every_module_and_package():
  layout = _layout_tree()
  words = set(re.findall(r'[A-Za-z_]+(?:\.py)?/?', layout))
  missing = []
  for name in LAYOUT_PACKAGES:
    assert name + '/' in words, f'{LAYOUT_PAGE.name} layout lacks {name}/'
    for path in sorted((REPO / name).iterdir()):
      if path.name.startswith('__') and path.name != '__main__.py':
        continue
      if path.is_dir():
        if (path / '__init__.py').exists() and path.name + '/' not in words:
          missing.append(f'{name}/{path.name}/')
      elif path.suffix == '.py' and path.name not in words:
        missing.append(f'{name}/{path.name}')
  for sub in ('ops/conv',):
    assert sub + '/' in layout
  assert not missing, f'{LAYOUT_PAGE.name} layout lacks {missing}'


def test_layout_names_no_module_that_does_not_exist():
  # A renamed or removed module must leave the tree too.
  named = set(re.findall(r'\b([a-z_0-9]+\.py)\b', _layout_tree()))
  present = {p.name for d in SOURCE_DIRS + ('.',)
             for p in (REPO / d).rglob('*.py') if '.venv' not in p.parts}
  stale = sorted(named - present)
  assert not stale, f'{LAYOUT_PAGE.name} layout names missing files: {stale}'


def test_paths_and_modules_named_in_readme_and_docs_exist():
  stale = []
  for page in [REPO / 'README.md'] + _docs_pages():
    text = page.read_text()
    # Repository paths, not ~/.cache/segan_jax/...; NAME-like parts are
    # placeholders.
    for path in re.findall(
        r'(?<![\w/.~-])((?:%s)/[\w./]*\w)' % '|'.join(
            re.escape(d) for d in SOURCE_DIRS if not d.startswith('.')),
        text):
      if any(re.fullmatch(r'[A-Z_]+(\.\w+)?', part)
             for part in path.split('/')):
        continue
      if not (REPO / path).exists():
        stale.append(f'{page.relative_to(REPO)}: {path}')
    for module in re.findall(r'python -m ((?:segan_jax|benchmarks)[\w.]*)',
                             text):
      parts = module.split('.')
      as_file = REPO.joinpath(*parts).with_suffix('.py')
      as_package = REPO.joinpath(*parts) / '__init__.py'
      if not (as_file.is_file() or as_package.is_file()):
        stale.append(f'{page.relative_to(REPO)}: python -m {module}')
  assert not stale, f'README or docs name what does not exist: {stale}'
