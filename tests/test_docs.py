"""The README and docs stay a usable front door: short, with links that lead somewhere.

Docs move between files; a link or anchor left behind fails here rather than in a reader's
browser. CI runs the README's test command, so the two must not drift apart either.
"""
import pathlib
import re

import pytest

from conftest import REPO_ROOT

README = REPO_ROOT / 'README.md'
DOC_FILES = [README, REPO_ROOT / 'bench' / 'README.md',
             *sorted((REPO_ROOT / 'docs').glob('*.md'))]
MAX_README_LINES = 200

_FENCE = re.compile(r'^(```|~~~)')
_INLINE_CODE = re.compile(r'`[^`\n]*`')
_LINK = re.compile(r'!?\[[^\]\n]*\]\(([^)\s]+)\)')
_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')


def _prose_lines(text: str) -> list[str]:
  """Lines outside fenced code blocks, inline code removed: links in code are not links."""
  lines, in_fence = [], False
  for line in text.splitlines():
    if _FENCE.match(line.strip()):
      in_fence = not in_fence
      continue
    if not in_fence:
      lines.append(_INLINE_CODE.sub('', line))
  return lines


def github_anchor(heading: str) -> str:
  """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = heading.replace('`', '').strip().lower()
  text = re.sub(r'[^\w\- ]', '', text)
  return text.replace(' ', '-')


def anchors(path: pathlib.Path) -> set[str]:
  """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does."""
  seen: dict[str, int] = {}
  found = set()
  lines, in_fence = [], False
  for line in path.read_text().splitlines():
    if _FENCE.match(line.strip()):
      in_fence = not in_fence
    elif not in_fence:
      lines.append(line)
  for line in lines:
    match = _HEADING.match(line)
    if not match:
      continue
    slug = github_anchor(match.group(2))
    count = seen.get(slug, 0)
    found.add(slug if count == 0 else f'{slug}-{count}')
    seen[slug] = count + 1
  return found


def relative_links(path: pathlib.Path) -> list[str]:
  """Link and image targets that point into the repository (no scheme, no mailto)."""
  targets = []
  for line in _prose_lines(path.read_text()):
    for target in _LINK.findall(line):
      if not re.match(r'^[a-z][a-z0-9+.-]*:', target):
        targets.append(target)
  return targets


@pytest.mark.parametrize('doc', DOC_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_points_to_an_existing_file_and_anchor(doc):
  broken = []
  for target in relative_links(doc):
    file_part, _, anchor = target.partition('#')
    linked = (doc.parent / file_part).resolve() if file_part else doc
    if not linked.exists():
      broken.append(f'{target}: no file {linked}')
    elif anchor and linked.suffix == '.md' and anchor not in anchors(linked):
      broken.append(f'{target}: no heading with anchor #{anchor} in {linked.name}')
  assert not broken, f'{doc.relative_to(REPO_ROOT)}: ' + '; '.join(broken)


def test_docs_have_links_to_check():
  """Negative control: the link parser finds the README's links, so an empty list is a bug."""
  targets = relative_links(README)
  assert 'docs/fidelity.md' in {t.partition('#')[0] for t in targets}
  assert len(targets) >= 7


def test_anchor_rule_matches_github_on_punctuation():
  assert github_anchor('The `:tiny` and `:demo` variants') == 'the-tiny-and-demo-variants'
  assert github_anchor("Benchmark recipes: the paper's datasets") == (
      'benchmark-recipes-the-papers-datasets')
  assert github_anchor('Long recordings → clips') == 'long-recordings--clips'


def test_readme_is_short_enough_to_read_in_two_minutes():
  lines = README.read_text().splitlines()
  assert len(lines) < MAX_README_LINES, (
      f'README.md has {len(lines)} lines; move detail into docs/ or bench/README.md')


def _readme_quick_start_commands() -> list[str]:
  text = README.read_text()
  block = text.split('## Quick start', 1)[1].split('```bash', 1)[1].split('```', 1)[0]
  return [line for line in block.splitlines() if line.startswith('pip install')]


def test_ci_runs_the_readme_test_command_verbatim():
  commands = _readme_quick_start_commands()
  assert len(commands) == 2, commands
  ci_lines = (REPO_ROOT / '.ci' / 'run').read_text().splitlines()
  marker = ci_lines.index('# README quick start, command 2:')
  assert ci_lines[marker + 1] == commands[1]


def test_configs_table_lists_every_config():
  readme = README.read_text()
  missing = [p.name for p in sorted((REPO_ROOT / 'configs').glob('brave_*.py'))
             if f'`configs/{p.name}`' not in readme]
  assert not missing, f'README configs table lacks {missing}'
