"""The README is a contract: its test command is what CI runs, and its code snippets run."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def bash_commands():
    return [line for block in re.findall(r'```bash\n(.*?)```', README, re.S)
            for line in block.splitlines() if line and not line.startswith('#')]


def test_ci_runs_the_readme_test_command():
    test_commands = [c for c in bash_commands() if 'pytest' in c]
    assert len(test_commands) == 1, test_commands
    assert test_commands[0] in (ROOT / '.ci' / 'run').read_text()


def test_readme_main_command_installs_and_runs_the_cli():
    assert any('pip install -e .' in c and 'sp-timm' in c for c in bash_commands())


@pytest.mark.parametrize('snippet', re.findall(r'```python\n(.*?)```', README, re.S))
def test_python_snippets_run(snippet):
    exec(compile(snippet, 'README.md', 'exec'), {})


def test_family_table_margins_match_the_code():
    from sp_timm import create_loss
    for name in ('sp_ls', 'sp_logit', 'sp_ce', 'sp_margin', 'sp_focal'):
        row = next(line for line in README.splitlines() if line.startswith(f'| `{name}`'))
        assert f'= {create_loss(name).stationary_margin(10):.3f} |' in row, name
