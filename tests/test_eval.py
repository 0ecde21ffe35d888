""" sp-timm eval: AutoAttack (standard) exactly as pyautoattack runs it, RobustBench's JSON, long-tail reports,
gradient masking flagged, sharding (2 processes == 1), resume after an interruption, clear errors. Small: an MLP
on 3x8x8 inputs, or small_cnn_cifar trained one epoch on a digits subset. """
import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import sp_timm  # noqa: F401
from sp_timm.cli import main as cli_main
from sp_timm.eval import STANDARD_ATTACKS, autoattack_chunk, evaluate_points
from sp_timm.export.hub import export_model
from sp_timm.records import LEADERBOARD_FIELDS
from sp_timm.threat.budget import check_eps, format_eps, parse_eps

from conftest import toy_report, train_tiny
from conftest import run_cli

from conftest import CLI


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def points(model: nn.Module, n: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10  # a few misclassified points
    return x, y


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'run'
    return train_tiny(out, dataset='digits-lt', imbalance_ratio=10, train_examples=256, epochs=2, loss='sp_ls',
                      lr=0.05) / 'last'


def test_eps_parsing_checking_and_robustbench_spelling():
    assert parse_eps('8/255') == 8 / 255 and parse_eps('0.5') == 0.5
    assert format_eps(8 / 255) == '8/255' and format_eps(0.5) == '0.5' and format_eps(0.1) == '0.1'
    assert check_eps(8 / 255, 'Linf') == 8 / 255
    for eps, norm, match in [(0, 'Linf', 'positive'), (-0.1, 'L2', 'positive'), (8, 'Linf', '8/255'),
                             (float('nan'), 'Linf', 'positive'), (100.0, 'L2', 'diameter')]:
        with pytest.raises(ValueError, match=match):
            check_eps(eps, norm)


def _summary_report(threat_model: str = 'Linf'):
    """A made-up report with an audit and FAB's minimal perturbations (``render_summary``'s audit and FAB tables)."""
    from conftest import minimal_run
    from test_hub import fake_report
    from sp_timm.records import AuditAttackRow, AuditSummary, ModelInfo, PerturbationSummary
    run = minimal_run('sp_margin', {'margin': 2.0})
    report = fake_report(ModelInfo(source='m', weights='raw', architecture=run.model, run=run))
    linf = threat_model == 'Linf'
    eps, top = (32 / 255, 0.5) if linf else (2.0, 4.0)
    audit = AuditSummary(
        config={}, attacked_points=5, attacks=[AuditAttackRow('apgd-ce', 'white-box', 10.0, 1, 0)],
        skipped={'apgd-loss': 'no training loss given'}, autoattack_acc=12.5, robust_acc=9.38, robust_ci=[2.0, 25.0],
        drop=3.12, broke_beyond_aa=1, threshold=1.0,
        checks={'large_eps': {'passed': True, 'eps': eps, 'acc': 0.0, 'broken_by_eps': 2 * eps,
                              'ladder': [eps, 2 * eps, top]},
                'monotonic_eps': {'passed': False, 'curve': [[eps / 16, 40.0], [eps / 4, 12.5], [0.0125, 20.0]],
                                  'rises': [[eps / 4, 0.0125]]}},
        unreliable=True, reasons=['it rises'], notes=['cross-entropy saturates'])
    fab = {'Linf': PerturbationSummary(n=32, median=0.0095, q1=0.0, q3=None, flipped_pct=87.5, mean_of_flipped=0.01,
                                       attack='fab'),
           'L2': PerturbationSummary(n=32, median=0.3, q1=0.12345, q3=0.9, flipped_pct=100.0, mean_of_flipped=0.4,
                                     attack='fab')}
    protocol = replace(report.protocol, threat_model=threat_model, eps='8/255' if linf else '0.5',
                       eps_value=8 / 255 if linf else 0.5)
    return replace(report, protocol=protocol, audit=audit, min_perturbation=fab if linf else {'L2': fab['L2']})


def test_summary_audit_and_fab_tables_write_linf_budgets_in_x_over_255():
    from sp_timm.eval import render_summary
    summary = render_summary(_summary_report('Linf'))
    audit = summary[summary.index('## Adaptive-attack audit'):summary.index('| minimal perturbation (FAB)')]
    assert audit == """## Adaptive-attack audit

On the 5 points AutoAttack's white-box stages left robust; per point the worst case over AutoAttack and every attack \
below.

| attack | kind | accuracy after AutoAttack + it (%) | broke beyond AutoAttack | only it broke |
|---|---|---|---|---|
| apgd-ce | white-box | 10.00 | 1 | 0 |
| apgd-loss | skipped | | | no training loss given |

Audited robust accuracy: **9.38%** [2.00, 25.00] (95% CI) vs AutoAttack 12.50% (1 more points broken; threshold 1 \
points).

| check | result | values |
|---|---|---|
| large_eps | pass | eps=32/255, acc=0, broken_by_eps=64/255, ladder=[32/255, 64/255, 127.5/255] |
| monotonic_eps | **FAIL** | curve=[[2/255, 40.0], [8/255, 12.5], [3.188/255, 20.0]], rises=[[8/255, 3.188/255]] |

**The audit flags this evaluation unreliable:** it rises.

Note: cross-entropy saturates.

"""
    assert '| Linf | 2.42/255 | 0/255 – – | 87.5 |\n| L2 | 0.3000 | 0.1235 – 0.9000 | 100.0 |\n' in summary
    l2 = render_summary(_summary_report('L2'))  # L2 budgets as before
    assert '| large_eps | pass | eps=2, acc=0, broken_by_eps=4, ladder=[2.0, 4.0, 4.0] |' in l2
    assert 'curve=[[0.125, 40.0], [0.5, 12.5], [0.0125, 20.0]], rises=[[0.5, 0.0125]] |' in l2
    assert '| L2 | 0.3000 | 0.1235 – 0.9000 | 100.0 |\n\n' in l2


def test_summary_is_rendered_from_its_packaged_template():
    """``templates/summary.md`` (jinja2) is the summary's layout: warnings, stages, groups, the leaderboard's
    fields to fill, the per-class table and the figures, with their blank lines."""
    from sp_timm.eval import render_summary
    from sp_timm.eval.report import PLACEHOLDER_PREFIX, SUMMARY_TEMPLATE
    from sp_timm.records import BudgetAccuracy, GroupResult, GroupRule, StageAccuracy
    assert SUMMARY_TEMPLATE.is_file() and SUMMARY_TEMPLATE.parent.name == 'templates'
    report = _summary_report()
    report = replace(report, audit=None, min_perturbation=None, warnings=['w1', 'w2 (x2)'],
                     stages=[StageAccuracy('clean', 71.88), StageAccuracy('apgd-ce', 20.0)],
                     eps_curve=[BudgetAccuracy(2 / 255, '2/255', 40.0), BudgetAccuracy(8 / 255, '8/255', 12.5)],
                     groups={'many': GroupResult([0, 1], 80.0, None)}, group_rule=GroupRule('thirds', 'by thirds'),
                     leaderboard=replace(report.leaderboard, authors=f'{PLACEHOLDER_PREFIX}authors (--authors)'),
                     per_class=report.per_class[:2])
    lines = render_summary(report, ['eval/per_class.png', 'robust_acc_vs_eps.png']).split('\n')
    start = lines.index('Accuracy left after each stage: clean 71.88 → apgd-ce 20.00.')
    assert lines[start:] == [
        'Accuracy left after each stage: clean 71.88 → apgd-ce 20.00.', '',
        "**AutoAttack's checks warned; the evaluation is flagged unreliable:**", '', '- w1', '- w2 (x2)', '',
        'AutoAttack accuracy by budget: 2/255: 40.00%, 8/255: 12.50%.', '',
        'Long-tail groups: by thirds.', '',
        '| group (training images) | classes | clean (%) | AutoAttack (%) |', '|---|---|---|---|',
        '| many | 2 | 80.00 | – |', '',
        "Leaderboard entry (model_info/): fill in authors before submitting; each 'TO FILL IN:' value names the "
        "sp-timm eval flag that sets it.", '',
        '| class | points | train images | group | clean (%) | AutoAttack (%) |', '|---|---|---|---|---|---|',
        '| 0 | 3 | 1 | few | 70.00 | 10.00 |', '| 1 | 3 | 1 | few | 70.00 | 10.00 |', '',
        '![per class](eval/per_class.png)', '![robust acc vs eps](robust_acc_vs_eps.png)', '']
    assert lines[:3] == ['# AutoAttack evaluation: sp_ls digits', '',
                         "digits, first 32 test images in [0, 1]; Linf eps = 8/255; AutoAttack version='standard' "
                         "(apgd-ce, apgd-t, fab-t, square), seed 0, pyautoattack 0.2.0."]


def test_chunk_equals_pyautoattack_run_standard_evaluation():
    """sp-timm's per-attack calls are the loop run_standard_evaluation runs itself: same points flipped, same
    classes."""
    from pyautoattack import AutoAttack
    model = mlp()
    x, y = points(model)
    ours = autoattack_chunk(model, x, y, eps=2 / 255, norm='Linf', seed=0, batch_size=64, device='cpu')
    adversary = AutoAttack(model, eps=2 / 255, norm='Linf', seed=0, version='standard')
    x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=64)
    assert torch.equal(ours['square'], y_adv == y) and torch.equal(ours['pred'], y_adv)
    flags = [ours['clean']] + [ours[a] for a in STANDARD_ATTACKS]
    assert all(bool((later <= earlier).all()) for earlier, later in zip(flags, flags[1:]))  # stages only remove points
    assert 0 < int(ours['square'].sum()) < int(ours['clean'].sum())  # the test exercises survivors and flips
    fooled = ours['clean'] & ~ours['square']
    assert torch.allclose(ours['perturbation'][fooled], (x_adv - x)[fooled].flatten(1).abs().amax(1))
    assert float(ours['perturbation'].max()) <= 2 / 255 + 1e-6


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    from pyautoattack import AutoAttack
    model = mlp()
    x, y = points(model, n=24)
    settings = dict(eps=2 / 255, batch_size=8, min_pert_norms=['Linf'], min_pert_examples=8, fab_iters=10,
                    progress=False, echo_warnings=False)
    full = evaluate_points(model, x, y, work_dir=tmp_path / 'full', **settings)
    original, calls = AutoAttack.run_standard_evaluation, []

    def flaky(self, *args, **kwargs):
        calls.append(self.attacks_to_run[0])
        if len(calls) == 4:  # mid-way through the second chunk
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AutoAttack, 'run_standard_evaluation', flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluate_points(model, x, y, work_dir=tmp_path / 'resumed', **settings)
    interrupted_calls = list(calls)
    calls.clear()
    monkeypatch.setattr(AutoAttack, 'run_standard_evaluation',
                        lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    resumed = evaluate_points(model, x, y, work_dir=tmp_path / 'resumed', **settings)
    for key in full.aa:
        assert torch.equal(full.aa[key], resumed.aa[key]), key
    assert torch.equal(full.min_perturbation['Linf'], resumed.min_perturbation['Linf'])
    uninterrupted = len(interrupted_calls) - 1 + len(calls)  # the interrupted call ran again, nothing else did
    calls.clear()
    evaluate_points(model, x, y, work_dir=tmp_path / 'again', **settings)
    assert uninterrupted == len(calls)
    assert not list((tmp_path / 'resumed').rglob('.*.tmp'))


def test_saved_fab_chunks_of_fewer_points_are_not_reused_for_more(tmp_path):
    """--min-pert-examples raised between two runs on one work folder: the last FAB chunk, saved shorter, is computed
    again, so every distance stays with its point (as a fresh run's)."""
    model = mlp()
    x, y = points(model, n=6)
    settings = dict(eps=2 / 255, batch_size=2, min_pert_norms=['Linf'], fab_iters=5, progress=False,
                    echo_warnings=False)
    evaluate_points(model, x, y, work_dir=tmp_path / 'work', min_pert_examples=3, **settings)
    resumed = evaluate_points(model, x, y, work_dir=tmp_path / 'work', min_pert_examples=6, **settings)
    fresh = evaluate_points(model, x, y, work_dir=tmp_path / 'fresh', min_pert_examples=6, **settings)
    assert len(resumed.min_perturbation['Linf']) == 6
    assert torch.equal(resumed.min_perturbation['Linf'], fresh.min_perturbation['Linf'])


def test_a_work_folder_refuses_another_model_points_or_seed(tmp_path):
    """The Python API's work folder: another model, other points or another seed would silently reuse stages that
    are not theirs; each is refused, naming what differs, and the same evaluation resumes."""
    model = mlp()
    x, y = points(model, n=4)
    settings = dict(eps=2 / 255, batch_size=4, min_pert_examples=0, progress=False, echo_warnings=False)
    work = tmp_path / 'work'
    first = evaluate_points(model, x, y, work_dir=work, **settings)
    for kwargs, differs in ((dict(model=mlp(seed=1)), 'model_sha256'), (dict(images=x.flip(0)), 'points_sha256'),
                            (dict(seed=1), 'seed')):
        call = dict(dict(model=model, images=x, labels=y), **kwargs)
        with pytest.raises(ValueError, match=f'another evaluation .*{differs}'):
            evaluate_points(call.pop('model'), call.pop('images'), call.pop('labels'), work_dir=work,
                            **dict(settings, **call))
    again = evaluate_points(model, x, y, work_dir=work, **settings)
    assert torch.equal(again.aa['square'], first.aa['square'])


def test_restart_on_another_process_leaves_the_folder_to_the_main_one(tmp_path):
    """--restart with several processes: only the main process reads, discards and rewrites the work folder; the
    others neither refuse the old settings it is about to discard nor delete anything."""
    from sp_timm.eval.runner import _prepare_work
    _prepare_work(tmp_path, {'eps': 1}, restart=False, is_main=True)
    (tmp_path / '.work' / 'chunk').write_text('saved')
    with pytest.raises(ValueError, match='other settings'):
        _prepare_work(tmp_path, {'eps': 2}, restart=False, is_main=False)
    _prepare_work(tmp_path, {'eps': 2}, restart=True, is_main=False)
    assert (tmp_path / '.work' / 'chunk').exists()
    _prepare_work(tmp_path, {'eps': 2}, restart=True, is_main=True)
    assert not (tmp_path / '.work' / 'chunk').exists()
    assert json.loads((tmp_path / '.work' / 'config.json').read_text()) == {'eps': 2}


def test_a_resumed_chunk_reports_the_warnings_of_the_stages_it_restored(tmp_path):
    """AutoAttack's warnings of a chunk's finished stages come back when the chunk is resumed or fully restored,
    once each, with their line breaks; its saved log keeps each one once."""
    import logging
    from sp_timm.eval.attacks import AUTOATTACK_LOGGER, capture_autoattack_warnings
    from sp_timm.eval.autoattack_log import logged_chunk
    logger, log = logging.getLogger(AUTOATTACK_LOGGER), tmp_path / 'chunk-00000.log'

    def stage(name, *warnings):
        def compute(on_stage):
            logger.debug(f'running {name}')
            for warning in warnings:
                logger.warning(warning)
            on_stage(name)
            return {}
        return compute

    def run(compute):
        with capture_autoattack_warnings(echo=False) as seen:
            _, text = logged_chunk(compute, log, 'chunk 0')
        return seen, text

    zero = 'there are 3 points with zero gradient!\nThis might lead to unreliable evaluation.'
    assert run(stage('apgd-ce', zero))[0] == [zero]
    seen, text = run(stage('square', 'Square Attack has decreased the robust accuracy'))  # resumed at a new stage
    assert seen == [zero, 'Square Attack has decreased the robust accuracy'] and text.count('zero gradient') == 1
    seen, text = run(lambda on_stage: {})  # every stage restored
    assert seen == [zero, 'Square Attack has decreased the robust accuracy'] and text.count('zero gradient') == 1
    log.write_text('== chunk 0 ==\n2026-01-01 00:00:00,000 DEBUG running apgd-ce\n')
    assert run(lambda on_stage: {})[0] == []

    def killed_after_first_stage(on_stage):  # a run killed during its second stage, after the first was saved
        stage('apgd-t', zero)(on_stage)
        logger.debug('running fab-t')
        raise KeyboardInterrupt

    log.unlink()
    with pytest.raises(KeyboardInterrupt):
        run(killed_after_first_stage)
    seen, text = run(stage('fab-t'))  # resumed: APGD-T restored, its warning with it
    assert seen == [zero] and text.count('zero gradient') == 1 and '-- resumed: fab-t --' in text


class RoundedInput(nn.Module):
    """Quantises its input to 4 levels: the classic accidental gradient masking (zero gradient almost everywhere)."""

    def forward(self, x):
        return torch.round(x * 3) / 3


def test_gradient_masking_is_flagged_unreliable():
    model = nn.Sequential(RoundedInput(), mlp()).eval()
    x, y = points(model, n=12)
    result = evaluate_points(model, x, y, eps=16 / 255, batch_size=16, min_pert_examples=0, progress=False,
                             echo_warnings=False)
    assert any('zero gradient' in w for w in result.warnings)
    report = toy_report(result, y, eps=16 / 255)
    assert report.unreliable is True and report.warnings and report.leaderboard.unreliable
    clean = toy_report(replace(result, warnings=[]), y, eps=16 / 255)
    assert clean.unreliable is False


def test_bad_points_are_refused():
    model = mlp()
    x, y = points(model, n=4)
    with pytest.raises(ValueError, match=r'not \[0, 1\]'):
        evaluate_points(model, x * 255, y, progress=False)
    with pytest.raises(ValueError, match='another dataset'):
        evaluate_points(model, x, y + 10, progress=False)
    with pytest.raises(ValueError, match='8/255'):
        evaluate_points(model, x, y, eps=8.0, progress=False)


def test_eval_warns_when_its_first_points_miss_classes(checkpoint, tmp_path, capsys):
    """The RobustBench protocol's first-n points of a split ordered by class (an image folder) are no sample of
    it: the accuracies would be about some classes only. Two points hold at most 2 of digits' 10 classes."""
    assert cli_main(['eval', '--checkpoint', str(checkpoint), '--n-examples', '2', '--batch-size', '2',
                     '--min-pert-examples', '0', '--out', str(tmp_path / 'eval'), '--no-progress']) == 0
    assert re.search(r'the first 2 digits-lt test images hold no image of (8|9) of its 10 classes',
                     capsys.readouterr().err)


def test_eval_cli_writes_robustbench_json_report_and_plots(checkpoint, tmp_path, capsys):
    out = tmp_path / 'eval'
    code = cli_main(['eval', '--checkpoint', str(checkpoint), '--n-examples', '24', '--batch-size', '12',
                     '--min-pert-examples', '8', '--fab-iters', '5', '--out', str(out), '--no-progress',
                     '--model-name', 'Me2026SP_SmallCNN', '--preview'])
    assert code == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['protocol']['dataset'] == 'digits-lt' and report['protocol']['eps'] == '8/255'
    assert report['protocol']['n_examples'] == 24 and report['n_points'] == 24
    assert 0 <= report['robust_acc'] <= report['clean_acc']
    assert report['clean_ci'][0] <= report['clean_acc'] <= report['clean_ci'][1]
    accs = [s['acc'] for s in report['stages']]
    assert [s['stage'] for s in report['stages']] == ['clean', *STANDARD_ATTACKS] and accs == sorted(accs, reverse=True)
    # long-tailed: no RobustBench entry (it has no such board); RobustBench's format plus the long-tail numbers
    assert not (out / 'model_info').exists() and 'long-tail' in report['leaderboard_note']
    longtail = json.loads((out / 'longtail_info' / 'digits-lt' / 'Linf' / 'Me2026SP_SmallCNN.json').read_text())
    entry = longtail['entry']
    assert list(entry) == list(LEADERBOARD_FIELDS)
    assert all(isinstance(entry[k], t) for k, t in LEADERBOARD_FIELDS.items())
    assert entry['eps'] == '8/255' and entry['clean_acc'] == f"{report['clean_acc']:.2f}"
    assert entry['autoattack_acc'] == f"{report['robust_acc']:.2f}" and entry['unreliable'] == report['unreliable']
    assert entry['name'].startswith('TO FILL IN') and entry['architecture'] == 'SmallCNN'
    assert 'Preview: the first 24 digits-lt test images' in entry['footnote']
    counts = [c['train_count'] for c in report['per_class']]
    assert longtail['train_class_counts'] == counts
    assert longtail['imbalance_ratio'] == round(max(counts) / min(counts), 4)
    assert longtail['balanced_autoattack_acc'] == f"{report['balanced_robust_acc']:.2f}"
    assert set(longtail['groups']) == set(report['groups']) == {'many', 'medium', 'few'}
    assert all(g['autoattack_acc'] == f"{report['groups'][name]['robust_acc']:.2f}"
               for name, g in longtail['groups'].items())
    # long-tailed: per-class rows carry the training counts and groups, and group means exist
    counts = [c['train_count'] for c in report['per_class']]
    assert (counts == json.loads((checkpoint / 'run.json').read_text())['train_class_counts']
            and counts[0] > 3 * counts[-1])
    # groups come from the whole training split (digits-lt at ratio 10: 134 .. 13 images), not the 256-image subset
    assert report['long_tailed'] and list(report['groups']) == ['many', 'medium', 'few']
    assert report['group_rule']['name'] == 'shots'
    assert {c['group'] for c in report['per_class']} == {'many', 'medium', 'few'}
    assert report['min_perturbation']['Linf']['n'] == 8 and 'L2' in report['min_perturbation']
    for png in ('per_class.png', 'min_perturbation_cdf.png', 'robust_acc_vs_eps.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    summary = (out / 'summary.md').read_text()
    assert 'AutoAttack' in summary and '| few |' in summary
    # a rerun finds every chunk done and reproduces the report
    assert cli_main(['eval', '--checkpoint', str(checkpoint), '--n-examples', '24', '--batch-size', '12',
                     '--min-pert-examples', '8', '--fab-iters', '5', '--out', str(out), '--no-progress',
                     '--model-name', 'Me2026SP_SmallCNN']) == 0
    again = json.loads((out / 'report.json').read_text())
    assert again['robust_acc'] == report['robust_acc'] and again['min_perturbation'] == report['min_perturbation']
    # other settings on the same folder: refused, not mixed
    assert cli_main(['eval', '--checkpoint', str(checkpoint), '--n-examples', '20', '--out', str(out)]) == 2
    assert 'other settings' in capsys.readouterr().err


@pytest.mark.parametrize('flags, message', [
    (['--eps', '0'], 'positive'),
    (['--eps', '8'], '8/255'),
    (['--n-examples', '5000'], 'test set has 413'),
    (['--threat-model', 'L2', '--eps', '99'], 'diameter'),
])
def test_eval_cli_bad_input(checkpoint, tmp_path, capsys, flags, message):
    assert cli_main(['eval', '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'x'), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'x' / 'report.json').exists()


def test_checkpoint_that_does_not_fit_its_model_is_refused(checkpoint, tmp_path, capsys):
    import hashlib
    from safetensors.torch import load_file, save_file
    bad = tmp_path / 'bad'
    shutil.copytree(checkpoint, bad)
    weights = load_file(str(bad / 'model.safetensors'))
    weights['fc.weight'] = torch.zeros(5, weights['fc.weight'].shape[1])  # a 5-class head in a 10-class model
    save_file(weights, str(bad / 'model.safetensors'))
    state = json.loads((bad / 'state.json').read_text())
    state['sha256']['model.safetensors'] = hashlib.sha256((bad / 'model.safetensors').read_bytes()).hexdigest()
    (bad / 'state.json').write_text(json.dumps(state))
    assert cli_main(['eval', '--checkpoint', str(bad), '--out', str(tmp_path / 'x'), '--n-examples', '4']) == 2
    assert 'fc.weight' in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(checkpoint, tmp_path):
    launcher = Path(sys.executable).parent / 'accelerate'
    if not launcher.exists():
        pytest.skip('accelerate launcher not installed next to this interpreter')
    import os
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    flags = ['--checkpoint', str(checkpoint), '--n-examples', '30', '--batch-size', '10', '--eps', '4/255',
             '--min-pert-examples', '20', '--min-pert-norms', 'Linf', '--fab-iters', '5', '--no-progress',
             '--audit', '--audit-restarts', '1', '--audit-iters', '5', '--audit-targets', '1',
             '--audit-margin-restarts', '1', '--audit-margin-steps', '5', '--audit-square-queries', '20',
             '--audit-square-restarts', '1', '--chunk-size', '15']  # 2 chunks: each process audits its own
    one = subprocess.run(CLI + ['eval', *flags, '--out', str(tmp_path / 'one')], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(launcher), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                          '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'sp_timm.eval', *flags,
                          '--out', str(tmp_path / 'two')], env=dict(env, ACCELERATE_USE_CPU='1'),
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert '2 process(es)' in two.stdout
    a, b = (json.loads((tmp_path / d / 'report.json').read_text()) for d in ('one', 'two'))
    for key in ('clean_acc', 'robust_acc', 'stages', 'per_class', 'min_perturbation', 'balanced_robust_acc'):
        assert a[key] == b[key], key
    def drop_warnings(audit):
        return {k: v for k, v in audit.items() if k != 'warnings'}
    assert drop_warnings(a['audit']) == drop_warnings(b['audit'])  # the audit too: per-point, per-chunk seeded
    assert a['protocol']['num_processes'] == 1 and b['protocol']['num_processes'] == 2
    assert sorted(a['warnings']) == sorted(b['warnings'])  # the checks over all points: once, not once per process


def test_default_out_of_a_run_lives_outside_its_epoch_folders(checkpoint):
    """A run's epoch folder is deleted when training goes on; the default evaluation folder must not be inside it."""
    from sp_timm.cli.evaluate import parse_eval_args
    from sp_timm.eval.runner import _default_out
    from sp_timm.records import ModelInfo
    run = checkpoint.parent
    epoch = checkpoint.resolve().name
    for source in (run, checkpoint):
        config = parse_eval_args(['--checkpoint', str(source)])
        out = _default_out(config, ModelInfo(source=str(source), weights='raw', architecture='small_cnn_cifar'),
                           8 / 255)
        assert out == run.resolve() / 'eval' / f'{epoch}-eval-Linf-8_255'


def test_eval_refuses_traversal_from_record_name_and_model_name(run, tmp_path, capsys):
    export = export_model(str(run / 'last'), tmp_path / 'export')
    record = json.loads((export / 'sp_timm.json').read_text())
    (export / '.sp-timm-export.json').unlink()  # a folder without export's file list (the Hub's): the record is read
    (export / 'sp_timm.json').write_text(json.dumps(dict(record, name='../../../../evil')))
    out = tmp_path / 'evals' / 'one'
    status, err = run_cli(['eval', '--checkpoint', f'local-dir:{export}', '--n-examples', '2', '--out', out], capsys)
    assert status == 2 and 'unknown field(s) name in ExportRecord' in err and 'edited' in err  # a typed record
    status, err = run_cli(['eval', '--checkpoint', run / 'last', '--model-name', '../x', '--out', out], capsys)
    assert status == 2 and "--model-name '../x'" in err
    # what the traversal would write: evil.json (another test's evil.safetensors may share the session folder)
    assert not (tmp_path / 'evals').exists() and not list(tmp_path.parent.parent.rglob('evil.json'))


def test_eval_settings_are_checked_before_its_work_folder(run, tmp_path, capsys):
    out = tmp_path / 'eval'
    for flags, message in ((['-b', '0'], '--batch-size must be >= 1'), (['--fab-iters', '0'], '--fab-iters'),
                           (['--eps', '8'], 'write 8/255'),
                           (['--curve-eps', '100', '--threat-model', 'L2'], 'diameter')):
        status, err = run_cli(['eval', '--checkpoint', run / 'last', '--out', out, *flags], capsys)
        assert status == 2 and message in err
    assert not out.exists()


def test_evaluate_points_refuses_zero_points():
    from sp_timm.eval import evaluate_points
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(ValueError, match='no points'):
        evaluate_points(model, torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), progress=False)


def test_eval_never_replaces_a_users_files_and_reruns_into_its_own_folder(plain_run, tmp_path, monkeypatch, capsys):
    from conftest import snapshot
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'summary.md').write_text('my summary')
    (notes / 'report.json').write_text('{"mine": true}')
    before = snapshot(notes)
    small = ['eval', '--checkpoint', plain_run / 'last', '--n-examples', '4', '-b', '4', '--min-pert-examples', '0',
             '--no-progress']
    status, err = run_cli(small + ['--out', notes], capsys)
    assert status == 2 and 'did not write (report.json, summary.md)' in err and snapshot(notes) == before
    monkeypatch.chdir(notes)
    status, err = run_cli(small + ['--out', '.'], capsys)
    assert status == 2 and 'Nothing was written' in err and snapshot(notes) == before
    out = tmp_path / 'eval'
    assert run_cli(small + ['--out', out], capsys)[0] == 0
    assert run_cli(small + ['--out', out], capsys)[0] == 0  # its own folder: the rerun reuses it
    assert (out / 'report.json').is_file()
