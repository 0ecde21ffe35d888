"""The README and docs/ are a contract: the README's test command is what CI runs, their ```python snippets run,
every relative link resolves, and the README stays a front door (at most 300 lines).

Code blocks: ```python runs here; ```py, ```bash and ```text are illustrative (```py needs data or a trained model,
so it is only compiled)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()
DOCS = sorted((ROOT / 'docs').glob('*.md'))
PAGES = [ROOT / 'README.md'] + DOCS
README_MAX_LINES = 300

FENCE = re.compile(r'^```.*?^```[ \t]*$', re.S | re.M)
LINK = re.compile(r'!?\[[^\]]*\]\(([^()\s]+)(?:\s+"[^"]*")?\)')
HEADING = re.compile(r'^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$', re.M)
SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def code_blocks(text: str, language: str):
    return re.findall(rf'^```{language}\n(.*?)^```', text, re.S | re.M)


def bash_commands():
    return [line for block in code_blocks(README, 'bash')
            for line in block.splitlines() if line and not line.startswith('#')]


def snippets(language: str):
    return [pytest.param(block, id=f'{rel(page)}:{n}')
            for page in PAGES for n, block in enumerate(code_blocks(page.read_text(), language), 1)]


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation except '-' and '_' removed, spaces
    to '-'."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link keeps its text
    text = re.sub(r'[`*]', '', text).strip().lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(text: str) -> set:
    """The anchors of a Markdown text's headings (outside code blocks), with GitHub's -1, -2 for repeats."""
    seen, result = {}, set()
    for _, heading in HEADING.findall(FENCE.sub('', text)):
        slug = github_slug(heading)
        result.add(f'{slug}-{seen[slug]}' if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return result


def broken_links(text: str, where: Path) -> list:
    """Relative links (and images) of ``text``, a page in folder ``where``, whose file or #anchor does not exist."""
    prose = re.sub(r'`[^`\n]*`', '', FENCE.sub('', text))
    broken = []
    for target in LINK.findall(prose):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition('#')
        file = (where / path).resolve() if path else None
        if file is not None and not file.exists():
            broken.append(f'{target}: no such file')
        elif anchor:
            page = file.read_text() if file is not None else text
            if file is not None and file.suffix != '.md':
                broken.append(f'{target}: an anchor into a file that is not Markdown')
            elif anchor not in anchors(page):
                broken.append(f'{target}: no heading with this anchor')
    return broken


def test_ci_runs_the_readme_test_command():
    test_commands = [c for c in bash_commands() if 'pytest' in c]
    assert len(test_commands) == 1, test_commands
    assert test_commands[0] in (ROOT / '.ci' / 'run').read_text()


def test_readme_main_command_installs_and_runs_the_cli():
    assert any('pip install -e .' in c and 'sp-timm' in c for c in bash_commands())


def test_readme_is_a_front_door():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f'README.md has {lines} lines; move reference text to docs/'


@pytest.mark.parametrize('snippet', snippets('python'))
def test_python_snippets_run(snippet):
    exec(compile(snippet, 'snippet', 'exec'), {})


def test_docs_pages_have_python_snippets():
    """Guards the parametrisation above: the docs' snippets are collected (a renamed fence would drop them)."""
    assert any(code_blocks(page.read_text(), 'python') for page in DOCS)


@pytest.mark.parametrize('snippet', snippets('py'))
def test_illustrative_py_snippets_compile(snippet):
    compile(snippet, 'snippet', 'exec')


@pytest.mark.parametrize('page', PAGES, ids=rel)
def test_relative_links_resolve(page):
    assert broken_links(page.read_text(), page.parent) == []


def test_link_checker_finds_broken_links():
    page = '# Title\n\n## A section: `code`, (x)!\n\n```bash\n# not a heading\n```\n'
    links = ('[ok](#a-section-code-x) [ok](README.md#sp-timm) ![ok](benchmarks/results/study/summary.png) '
             '[web](https://example.org/x) `[code](nowhere.md)` [bad](#not-a-heading) [bad](nowhere.md) '
             '[bad](README.md#no-such-heading) [bad](#title-1)')
    assert broken_links(page + links, ROOT) == [
        '#not-a-heading: no heading with this anchor', 'nowhere.md: no such file',
        'README.md#no-such-heading: no heading with this anchor', '#title-1: no heading with this anchor']


def test_readme_links_every_docs_page():
    linked = set(LINK.findall(README))
    assert [rel(page) for page in DOCS if rel(page) not in linked] == []


def test_docs_index_links_every_other_docs_page():
    linked = set(LINK.findall((ROOT / 'docs' / 'README.md').read_text()))
    assert [page.name for page in DOCS if page.name != 'README.md' and page.name not in linked] == []


def test_family_table_margins_match_the_code():
    from sp_timm import create_loss
    losses_page = (ROOT / 'docs' / 'losses.md').read_text()
    for name in ('sp_ls', 'sp_logit', 'sp_ce', 'sp_margin', 'sp_focal'):
        row = next(line for line in losses_page.splitlines() if line.startswith(f'| `{name}`'))
        assert f'= {create_loss(name).stationary_margin(10):.3f} |' in row, name
