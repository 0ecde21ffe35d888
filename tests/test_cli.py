import argparse
import json
import subprocess
import sys

import pytest

from sp_timm.cli.common import DefaultsHelpFormatter
from sp_timm.cli.common import run_reporting_errors
from sp_timm.cli.registry import COMMANDS
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


@pytest.mark.parametrize('world_size', ['1', '2', 'abc'])
def test_a_launched_process_exits_without_finalizing_the_interpreter_and_keeps_its_output(world_size):
    """One of several launched processes leaves with os._exit (a gloo worker freeing tensors during finalization
    aborts it); its buffered output still arrives. A lone process (or a WORLD_SIZE no launcher wrote) finalizes as
    usual."""
    import os
    code = ("import atexit; from sp_timm.cli.common import exit_process; "
            "atexit.register(lambda: print('finalized', flush=True)); print('report written'); exit_process(3)")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, WORLD_SIZE=world_size))
    assert done.returncode == 3, done.stderr
    assert 'report written' in done.stdout
    assert ('finalized' in done.stdout) == (world_size != '2')


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['no-such-command'])
    assert exc.value.code == 2
    assert 'invalid choice' in capsys.readouterr().err


HEAVY = ('torch', 'timm', 'accelerate', 'matplotlib')


@pytest.mark.parametrize('argv', [['--help'], ['--version'],
                                  *[[c, '--help'] for c in ('losses', 'data', 'train', 'eval', 'demo', 'export')]])
def test_help_and_version_import_neither_torch_nor_timm(argv):
    code = ('import sys\nfrom sp_timm.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n'
            '    assert e.code in (0, None), e.code\n'
            f'print("HEAVY:", sorted(m for m in {HEAVY!r} if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'HEAVY: []' in result.stdout, result.stdout[-300:]
    assert ('sp-timm 0' in result.stdout) if argv == ['--version'] else ('usage: sp-timm' in result.stdout)


def test_import_sp_timm_is_light_and_registers_the_models_once_timm_is_imported():
    code = ('import sys\nimport sp_timm\nassert "torch" not in sys.modules and "timm" not in sys.modules\n'
            'import timm\nassert timm.is_model("wrn28_10_cifar") and timm.is_model("small_cnn_cifar")\n'
            'assert sp_timm.create_loss("sp_ls").hparams() == {"pstar": 0.9}\nprint("ok")')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and 'ok' in result.stdout, result.stderr


def _flags(parser):
    return [a for a in parser._actions if a.option_strings and a.default is not argparse.SUPPRESS]


def test_every_command_has_a_description_and_every_flag_help_with_its_default():
    for command, build in ((name, c.build_parser) for name, c in COMMANDS.items()):
        parser = build()
        assert parser.description, command
        formatter = DefaultsHelpFormatter(parser.prog)
        for action in _flags(parser):
            flag = f'{command} {action.option_strings[-1]}'
            assert action.help and action.help.strip(), f'{flag} has no help'
            if action.required:  # no default to show
                continue
            text = formatter._get_help_string(action) % {'default': action.default}
            lowered = text.lower()
            assert 'default' in lowered or 'required' in lowered, f'{flag}: {text}'
            if action.nargs != 0 and isinstance(action.default, (int, str)) and action.default != '':
                assert str(action.default) in text[lowered.rindex('default'):], \
                    f'{flag} hides {action.default!r}: {text}'


def test_train_help_shows_the_defaults_the_issue_missed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['train', '--help'])
    assert exc.value.code == 0
    out = ' '.join(capsys.readouterr().out.split('options:', 1)[1].split())  # the flags, unwrapped
    for flag, default in (('--lr LR', '0.1'), ('--epochs EPOCHS', '200'), ('--batch-size BATCH_SIZE', '128'),
                          ('--seed SEED', '42'), ('--opt OPT', 'sgd'), ('--adv-eps ADV_EPS', '8/255')):
        section = out[out.index(flag):]
        assert f'(default: {default})' in section[:200], flag
    assert '--no-progress no progress bars (default: off)' in out


def test_formatter_keeps_a_stated_default_and_marks_switches_and_unset_values():
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--a', type=float, default=5e-4, help='rate')
    parser.add_argument('--b', default=None, help='the thing')
    parser.add_argument('--c', action='store_true', help='switch')
    parser.add_argument('--d', default=3, help='count (default: the model\'s)')
    parser.add_argument('--e', nargs='+', default=[100, 150], help='epochs')
    text = ' '.join(parser.format_help().split())
    assert 'rate (default: 0.0005)' in text and 'the thing (default: none)' in text
    assert 'switch (default: off)' in text and "count (default: the model's)" in text and '(default: 3)' not in text
    assert 'epochs (default: 100 150)' in text


def test_push_without_repo_id_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['export', '--checkpoint', 'x', '--out', 'y', '--push'])
    assert exc.value.code == 2 and '--push needs --repo-id' in capsys.readouterr().err


def _entry(flags, run):
    from sp_timm.cli.evaluate import parse_eval_args
    from sp_timm.eval.report import leaderboard_entry
    from sp_timm.eval.runner import _leaderboard_meta
    from sp_timm.records import ModelInfo
    from conftest import toy_protocol
    config = parse_eval_args(['--checkpoint', 'run', *flags])
    info = ModelInfo(source='run', weights='raw', architecture=run.model, run=run)
    return leaderboard_entry(toy_protocol(4, dataset='cifar10', eps=8 / 255), 90.0, 50.0, False,
                             _leaderboard_meta(config.leaderboard, info))


def test_a_leaderboard_entry_names_only_the_paper_its_submitter_gives():
    """A RobustBench row names the paper that proposes that model: never defaulted from the training record (not the
    SP-losses paper for an SP model, not a description of the run); placeholders name the flags until given."""
    from dataclasses import replace
    from conftest import minimal_run
    record = replace(minimal_run('ce', adv='pgd'), model='wrn28_10_cifar')
    entry = _entry([], record)
    assert entry.name == 'TO FILL IN: the title of the paper that proposes this model (sp-timm eval --paper-title)'
    assert entry.link == 'TO FILL IN: URL of that paper or its code (sp-timm eval --link)'
    assert entry.authors == 'TO FILL IN: the authors (sp-timm eval --authors)'
    assert entry.venue.startswith('TO FILL IN: the venue') and entry.architecture == 'WideResNet-28-10'
    assert entry.reported == '' and entry.autoattack_acc == '50.00'  # a measurement is not the paper's claim
    assert entry.footnote is None  # a CE model: nothing to cite, and no tool's name
    given = _entry(['--paper-title', 'Our paper', '--link', 'https://x.org', '--authors', 'A. B', '--venue',
                    'ICML 2026', '--reported', '51.3'], record)
    assert (given.name, given.link, given.authors, given.venue, given.reported) == (
        'Our paper', 'https://x.org', 'A. B', 'ICML 2026', '51.3')


def test_sp_leaderboard_entry_cites_the_sp_paper_as_the_loss_and_the_summary_lists_the_fields_to_fill():
    from dataclasses import replace
    from sp_timm.eval.report import SP_PAPER, render_summary
    from sp_timm.records import GroupResult, GroupRule
    from conftest import minimal_run
    from test_hub import fake_report
    from sp_timm.records import ModelInfo
    run = minimal_run('sp_margin', {'margin': 2.0})
    entry = _entry([], run)
    assert entry.name.startswith('TO FILL IN') and entry.link.startswith('TO FILL IN')
    assert entry.authors.startswith('TO FILL IN') and entry.reported == ''
    assert entry.footnote == \
        f"Trained with the SP loss sp_margin (margin=2.0) of {SP_PAPER['name']} ({SP_PAPER['link']})"
    assert 'sp-timm' not in entry.footnote
    report = replace(fake_report(ModelInfo(source='m', weights='raw', architecture=run.model, run=run),
                                 dataset='digits-lt'),
                     leaderboard=entry, groups={'head': GroupResult(classes=[0], clean_acc=1.0, robust_acc=0.0)},
                     group_rule=GroupRule(name='thirds', description='head / middle / tail: thirds'))
    summary = render_summary(report)
    assert 'fill in link, name, authors, venue before submitting' in summary
    assert 'Long-tail groups: head / middle / tail: thirds.' in summary


@pytest.mark.parametrize('error, status, message', [
    (PermissionError(13, 'Permission denied', '/ro/out'), 2, "prog: error: Permission denied: '/ro/out'"),
    (IsADirectoryError(21, 'Is a directory', '/x'), 2, 'prog: error: Is a directory'),
    (json.JSONDecodeError('Expecting value', '{', 1), 2, 'prog: error: Expecting value'),
    (KeyboardInterrupt(), 130, 'prog: interrupted.')])
def test_run_reporting_errors_one_line(error, status, message, capsys, monkeypatch):
    import argparse
    monkeypatch.delenv('SP_TIMM_DEBUG', raising=False)

    def fail(args):
        raise error
    assert run_reporting_errors('prog', fail, argparse.Namespace()) == status
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count('\n') == 1
    with pytest.raises(type(error)):
        run_reporting_errors('prog', fail, argparse.Namespace(debug=True))

    def bug(args):
        raise RuntimeError('a bug')
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        run_reporting_errors('prog', bug, argparse.Namespace())


@pytest.mark.parametrize('argv, flag', [
    (['train', '--dataset', 'digits', '--lr', 'nan'], '--lr'),
    (['train', '--dataset', 'digits', '--momentum', 'nan'], '--momentum'),
    (['train', '--dataset', 'digits', '--weight-decay', 'inf'], '--weight-decay'),
    (['train', '--dataset', 'digits', '--adv', 'pgd', '--adv-eps', 'nan'], '--adv-eps'),
    (['train', '--dataset', 'digits', '--sp-margin=-inf'], '--sp-margin'),
    (['eval', '--checkpoint', 'x', '--audit', '--audit-threshold', 'nan'], '--audit-threshold'),
    (['eval', '--checkpoint', 'x', '--audit', '--audit-large-eps-factor', 'nan'], '--audit-large-eps-factor'),
    (['eval', '--checkpoint', 'x', '--eps', 'nan/255'], '--eps'),
    (['data', '--dataset', 'digits-lt', '--imbalance-ratio', 'nan'], '--imbalance-ratio'),
])
def test_nan_and_infinite_float_flags_are_usage_errors(argv, flag, capsys):
    """A NaN compares false with every bound: accepted, it would switch checks off (an audit threshold) or fail late
    inside PGD or the first batch. Every float flag refuses it when parsed, naming the flag."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and flag in err and 'finite number' in err and 'Traceback' not in err


def test_the_python_api_refuses_non_finite_options_naming_the_flag():
    from sp_timm.eval.config import AttackConfig, AuditConfig
    from sp_timm.records import TrainConfig
    assert TrainConfig(dataset='digits', lr=float('nan')).problems() == ['--lr must be a finite number, got nan.']
    with pytest.raises(ValueError, match='--audit-threshold must be a finite number'):
        AuditConfig(threshold=float('nan'))
    with pytest.raises(ValueError, match='--audit-iters must be >= 1, got 0'):
        AuditConfig(n_iter=0)
    assert AttackConfig(curve_eps=(float('inf'),)).problems() == ['--curve-eps must be a finite number, got (inf,).']


@pytest.mark.parametrize('reported', ['53.4%', 'ninety', '101', 'nan'])
def test_eval_refuses_a_reported_accuracy_no_report_could_hold(reported, capsys):
    """--reported goes into the leaderboard entry, which every later read checks as a percentage: refused when
    given, before any work, not after the evaluation when export reads the report."""
    assert main(['eval', '--checkpoint', 'no/such/run', '--reported', reported]) == 2
    err = capsys.readouterr().err
    assert f"--reported {reported!r}: expected the paper's robust accuracy in percent" in err and 'Traceback' not in err
