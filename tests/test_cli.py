import subprocess
import sys

import pytest

from sp_timm.cli import main


def test_losses_lists_every_member_with_its_stationary_margin(capsys):
    assert main(['losses']) == 0
    out = capsys.readouterr().out
    rows = {line.split('|')[1].strip(): line for line in out.splitlines() if line.startswith('| sp_')}
    assert sorted(rows) == ['sp_ce', 'sp_focal', 'sp_logit', 'sp_ls', 'sp_margin']
    assert '4.394' in rows['sp_ls'] and 'pstar=0.9' in rows['sp_ls']  # log(0.9 * 9 / 0.1)
    assert 'lam=0.05' in rows['sp_logit'] and 'margin=2' in rows['sp_margin']
    assert "timm loss types" in out and 'ce' in out


def test_losses_num_classes_changes_the_margins(capsys):
    main(['losses', '--num-classes', '2'])
    sp_ls = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('| sp_ls'))
    assert '2.197' in sp_ls  # log(0.9 / 0.1)


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, '-m', 'sp_timm', 'losses'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'sp_margin' in result.stdout


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['no-such-command'])
    assert exc.value.code == 2
    assert 'invalid choice' in capsys.readouterr().err
