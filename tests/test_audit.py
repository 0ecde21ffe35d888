""" sp-timm eval --audit: the adaptive-attack audit breaks what a gradient-masking model hides from AutoAttack and
flags it; agrees with AutoAttack on a plain model; per-point worst case is the AND of the attacks; an interrupted
audit resumes without re-running finished stages; a surrogate that does not fit is refused. Small: an MLP on
3x8x8 inputs, AutoAttack's standard run computed once per model and reused through its saved chunks, shrunk
audit budgets. """
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sp_timm  # noqa: F401
from sp_timm.eval import evaluate_points, render_summary
from sp_timm.eval import audit as audit_module
from sp_timm.eval.audit import audit_stages, summarize_audit, training_loss_from_run
from sp_timm.eval.audit_attacks import AuditContext, AuditInputs, audit_attack_names, correct
from sp_timm.eval.config import AuditConfig
from sp_timm.records import to_json

from conftest import minimal_run, toy_report
from test_eval import mlp, points

SMALL = AuditConfig(restarts=1, n_iter=20, max_targets=3, margin_restarts=2, margin_steps=20, square_queries=300,
                    square_restarts=1)
EPS = 4 / 255
SETTINGS = dict(eps=EPS, batch_size=16, min_pert_examples=0, progress=False, echo_warnings=False)


class RoundedLogits(nn.Module):
    """Rounds the logits to a grid of ``step``: zero gradient everywhere (white-box attacks are blind) and a
    piecewise-constant margin (Square's random search sees plateaus), yet the decision is the smooth model's."""

    def __init__(self, step: float = 0.02):
        super().__init__()
        self.step = step

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.round(z / self.step) * self.step


@pytest.fixture(scope='module')
def masked(tmp_path_factory):
    """The masking model, its points, and a work folder holding AutoAttack's finished standard run."""
    base = mlp()
    model = nn.Sequential(base, RoundedLogits()).eval()
    x, y = points(model, n=16)
    work = tmp_path_factory.mktemp('masked')
    aa = evaluate_points(model, x, y, work_dir=work, **SETTINGS)
    return base, model, x, y, work, aa


def _copy(work: Path, tmp_path: Path) -> Path:
    shutil.copytree(work, tmp_path / 'work')
    return tmp_path / 'work'


def test_audit_breaks_a_gradient_masking_model_and_flags_it(masked, tmp_path):
    base, model, x, y, work, aa = masked
    aa_robust = int(aa.aa['square'].sum())
    assert aa_robust >= 4  # AutoAttack's standard run is fooled: it reports these points robust
    result = evaluate_points(model, x, y, work_dir=_copy(work, tmp_path), audit=SMALL, surrogate=base, **SETTINGS)
    audit = result.audit
    rows = {r.attack: r for r in audit.attacks}
    assert rows['transfer'].broke_beyond_aa > 0 and audit.broke_beyond_aa >= rows['transfer'].broke_beyond_aa
    assert audit.robust_acc < audit.autoattack_acc - SMALL.threshold
    assert int(result.audit_points['worst'].sum()) == aa_robust - audit.broke_beyond_aa
    assert audit.unreliable and any('lowers robust accuracy' in r for r in audit.reasons)
    assert not audit.checks['gradient_norms']['passed'] and audit.checks['gradient_norms']['zero_fraction'] == 1.0
    assert not audit.checks['white_vs_black_box']['passed']  # transfer broke points every white-box attack missed
    assert audit.skipped == {'apgd-loss': 'no training loss given'}
    lo, hi = audit.robust_ci
    assert lo <= audit.robust_acc <= hi
    report = toy_report(result, y)
    assert report.unreliable is True and report.audit.robust_acc == audit.robust_acc
    assert report.leaderboard.unreliable is True
    # the audited accuracy reaches the leaderboard as RobustBench's `external` field, the footnote names the audit
    assert report.leaderboard.external == f'{audit.robust_acc:.2f}' and float(report.leaderboard.external) < \
        float(report.leaderboard.autoattack_acc)
    assert 'adaptive-attack audit' in report.leaderboard.footnote and 'transfer' in report.leaderboard.footnote
    assert to_json(report.leaderboard)['external'] == report.leaderboard.external
    summary = render_summary(report)
    assert '## Adaptive-attack audit' in summary and '**FAIL**' in summary and 'transfer' in summary
    json.dumps(to_json(report))  # JSON-ready


def test_plain_model_audit_agrees_with_autoattack_and_stays_reliable():
    model = mlp()
    x, y = points(model, n=16)
    result = evaluate_points(model, x, y, audit=SMALL, **SETTINGS)
    audit = result.audit
    assert 0 < int(result.aa['square'].sum())  # robust points remain for the audit to attack
    assert abs(audit.robust_acc - audit.autoattack_acc) <= SMALL.threshold
    assert all(c['passed'] for c in audit.checks.values()), audit.checks
    assert audit.checks['large_eps']['acc'] <= SMALL.large_eps_max_acc and audit.unreliable is False
    assert {r.attack for r in audit.attacks} == {'apgd-ce', 'apgd-dlr', 'apgd-t', 'pgd-margin', 'square'}
    assert toy_report(result, y).unreliable is bool(result.warnings)
    assert toy_report(result, y).leaderboard.external is None  # nothing broken beyond AutoAttack: no external field
    assert 'external' not in to_json(toy_report(result, y).leaderboard)


def test_worst_case_is_the_and_of_the_attack_flags():
    n = 8
    t, f = True, False
    aa = {'clean': torch.tensor([t, t, t, t, t, t, t, f]), 'white-box': torch.tensor([t, t, t, t, t, t, f, f]),
          'robust': torch.tensor([t, t, t, t, t, f, f, f])}
    flags = {'apgd-ce': torch.tensor([t, f, t, t, t, t, f, f]), 'pgd-margin': torch.tensor([t, t, f, t, t, t, f, f]),
             'square': torch.tensor([t, t, t, f, t, t, f, f]),
             'large-eps-margin': torch.zeros(n, dtype=torch.bool), 'grad-ce': torch.ones(n),
             'grad-margin': torch.ones(n)}
    summary, per_point = summarize_audit(aa, flags, eps=EPS, norm='Linf', input_dim=192, config=AuditConfig(),
                                         skipped={})
    expected = aa['robust'] & flags['apgd-ce'] & flags['pgd-margin'] & flags['square']
    assert (torch.equal(per_point['worst'], expected)
            and torch.equal(per_point['worst'], torch.tensor([t, f, f, f, t, f, f, f])))
    rows = {r.attack: r for r in summary.attacks}
    assert [rows[a].broke_beyond_aa for a in ('apgd-ce', 'pgd-margin', 'square')] == [1, 1, 1]
    assert rows['apgd-ce'].acc == 100 * 4 / 8 and summary.broke_beyond_aa == 3
    assert summary.robust_acc == 100 * 2 / 8 and summary.drop == 100 * 3 / 8 and summary.unreliable
    # black box (square) broke point 3 that every white-box attack left robust; AutoAttack's Square broke point 5
    assert summary.checks['white_vs_black_box']['points'] == 2
    assert summary.checks['large_eps']['passed'] and summary.checks['monotonic_eps']['passed']


def test_points_fab_flipped_within_eps_count_against_the_audited_accuracy():
    """FAB's minimal perturbation is a verified adversarial example: a point it flipped within eps is not robust,
    even where AutoAttack and every audit attack left it robust (row fab-min); beyond eps, or not found (inf), or
    beyond the points FAB ran on, it changes nothing."""
    n = 6
    robust = torch.ones(n, dtype=torch.bool)
    aa = {'clean': robust, 'white-box': robust, 'robust': robust}
    flags = {'apgd-ce': robust, 'large-eps-margin': torch.zeros(n, dtype=torch.bool), 'grad-ce': torch.ones(n),
             'grad-margin': torch.ones(n)}
    distance = torch.tensor([EPS / 2, EPS, EPS * 1.01, float('inf'), 0.5])  # FAB on the first 5 points
    common = dict(eps=EPS, norm='Linf', input_dim=192, config=AuditConfig(threshold=1.0), skipped={})
    summary, per_point = summarize_audit(aa, flags, fab_distance=distance, **common)
    assert torch.equal(per_point['worst'], torch.tensor([False, False, True, True, True, True]))
    rows = {r.attack: r for r in summary.attacks}
    assert rows['fab-min'].broke_beyond_aa == 2 and rows['fab-min'].kind == 'white-box'
    assert summary.broke_beyond_aa == 2 and summary.unreliable
    assert summary.fab_min_points == 5
    without, _ = summarize_audit(aa, flags, **common)
    assert without.robust_acc == 100.0 and 'fab-min' not in {r.attack for r in without.attacks}
    with pytest.raises(ValueError, match='FAB distances of 7 points for 6'):
        summarize_audit(aa, flags, fab_distance=torch.ones(7), **common)


def test_saved_audit_stages_are_not_reused_for_other_points(masked, tmp_path, monkeypatch):
    """A chunk's audit stages are saved with the points they attacked: when AutoAttack's flags change (its chunk
    recomputed after the audit's was saved), the audit runs again rather than reading the saved flags as if
    computed on the new points (a newly attacked point would read broken by every attack)."""
    base, model, x, y, work, aa = masked
    path = tmp_path / 'chunk.safetensors'
    context = AuditContext(eps=EPS, norm='Linf', seed=1, device='cpu', config=SMALL, num_classes=10)
    common = dict(batch_size=16, stages=['apgd-ce'])
    points = {k: v for k, v in aa.aa.items()}
    first = audit_module.audit_chunk(model, x, y, points, context, path=path, **common)
    ran = []
    stage = audit_module.run_stage
    monkeypatch.setattr(audit_module, 'run_stage', lambda name, *a, **k: ran.append(name) or stage(name, *a, **k))
    again = audit_module.audit_chunk(model, x, y, points, context, path=path, **common)
    assert ran == [] and torch.equal(again['apgd-ce'], first['apgd-ce'])  # the same points: all reused
    robust = points['white-box'].bool()
    assert robust.sum() >= 2
    changed = dict(points, **{'white-box': robust.clone().index_fill_(0, robust.nonzero().flatten()[:1], False)})
    redone = audit_module.audit_chunk(model, x, y, changed, context, path=path, **common)
    assert ran == ['apgd-ce', 'large-eps-margin', 'grad-ce', 'grad-margin']
    assert torch.equal(redone['points-attacked'], changed['white-box'].bool())


def test_a_drop_of_exactly_the_threshold_is_reliable_and_one_point_more_is_not():
    """100 points, threshold 1 point: AutoAttack 7 robust, the audit 6 (a drop of exactly 1 point, 1.0000000000000009
    in floats) stays reliable; the audit 5 (2 points) is unreliable."""
    n = 100
    aa = {'clean': torch.ones(n, dtype=torch.bool), 'white-box': torch.arange(n) < 7, 'robust': torch.arange(n) < 7}
    unreliable = []
    for robust_after_audit in (6, 5):
        flags = {'apgd-ce': torch.arange(n) < robust_after_audit, 'large-eps-margin': torch.zeros(n, dtype=torch.bool),
                 'grad-ce': torch.ones(n), 'grad-margin': torch.ones(n)}
        summary, _ = summarize_audit(aa, flags, eps=EPS, norm='Linf', input_dim=192, config=AuditConfig(threshold=1.0),
                                     skipped={})
        unreliable.append(summary.unreliable)
    assert unreliable == [False, True]


def test_the_audit_folder_is_keyed_by_budgets_not_by_thresholds():
    """Changing a threshold re-judges saved attacks; changing a budget runs them again."""
    from sp_timm.eval.audit import audit_key
    base = audit_key(AuditConfig(), 0)
    assert audit_key(AuditConfig(threshold=2.0, grad_tol=1e-9, large_eps_max_acc=5.0, square_alpha=0.01), 0) == base
    assert audit_key(AuditConfig(restarts=2), 0) != base and audit_key(AuditConfig(), 1) != base
    assert audit_key(AuditConfig(large_eps_factor=8.0), 0) != base


def test_interrupted_audit_resumes_without_rerunning_finished_stages(masked, tmp_path, monkeypatch):
    base, model, x, y, work, _ = masked
    settings = dict(SETTINGS, audit=SMALL, surrogate=base, chunk_size=16)
    original, calls = audit_module.run_stage, []

    def counted(stage, *args, **kwargs):
        calls.append(stage)
        if stop_at and len(calls) == stop_at:
            raise KeyboardInterrupt
        return original(stage, *args, **kwargs)

    monkeypatch.setattr(audit_module, 'run_stage', counted)
    stop_at = 0
    full = evaluate_points(model, x, y, work_dir=_copy(work, tmp_path / 'full'), **settings)
    uninterrupted = list(calls)
    calls.clear()
    stop_at = 3
    resumed_work = _copy(work, tmp_path / 'resumed')
    with pytest.raises(KeyboardInterrupt):
        evaluate_points(model, x, y, work_dir=resumed_work, **settings)
    assert calls == uninterrupted[:3]
    calls.clear()
    stop_at = 0
    resumed = evaluate_points(model, x, y, work_dir=resumed_work, **settings)
    assert calls == uninterrupted[2:]  # the two finished stages are not run again; the interrupted one is
    def without_warnings(audit):
        return replace(audit, warnings=[])  # finished stages do not warn again
    assert without_warnings(resumed.audit) == without_warnings(full.audit)
    for key, value in full.audit_points.items():
        assert torch.equal(value, resumed.audit_points[key]), key
    calls.clear()
    evaluate_points(model, x, y, work_dir=resumed_work, **settings)
    assert calls == []  # everything saved
    assert not list(resumed_work.rglob('.*.tmp'))


def test_surrogate_that_does_not_fit_is_refused_before_any_attack(monkeypatch):
    from pyautoattack import AutoAttack
    monkeypatch.setattr(AutoAttack, 'run_standard_evaluation', lambda *a, **k: pytest.fail('attacked before refusing'))
    model = mlp()
    x, y = points(model, n=4)
    wrong_classes = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    wrong_input = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    with pytest.raises(ValueError, match='5,.*outputs but the evaluated model has 10 classes'):
        evaluate_points(model, x, y, audit=SMALL, surrogate=wrong_classes, **SETTINGS)
    with pytest.raises(ValueError, match=r'does not accept the evaluated images \(3, 8, 8\)'):
        evaluate_points(model, x, y, audit=SMALL, surrogate=wrong_input, **SETTINGS)


def test_surrogate_flags_are_checked(monkeypatch):
    from sp_timm.cli.evaluate import parse_eval_args
    from sp_timm.eval import runner
    from sp_timm.records import ModelInfo
    config = parse_eval_args(['--checkpoint', 'x', '--surrogate', 'y'])
    assert 'add --audit' in ' '.join(config.problems())
    config = parse_eval_args(['--checkpoint', 'x', '--audit', '--surrogate', 'y', '--audit-restarts', '2'])
    assert config.attack.audit.restarts == 2 and not config.problems()
    def info(classes):
        return ModelInfo(source='y', weights='raw', architecture='mlp', num_classes=classes)
    monkeypatch.setattr(runner, 'load_model', lambda source: (mlp(), info(5)))
    with pytest.raises(ValueError, match="'y' was trained for 5 classes"):
        runner._audit_inputs(config, info(10), 10, 'digits')
    monkeypatch.setattr(runner, 'load_model', lambda source: (mlp(), info(10)))
    inputs, name = runner._audit_inputs(config, ModelInfo(source='x', weights='raw', architecture='mlp',
                                                          run=minimal_run('sp_ls')), 10, 'digits')
    assert inputs['train_loss'] is not None and isinstance(inputs['surrogate'], nn.Module)
    assert name.startswith('y (weights SHA-256 ')


def test_attacks_that_apply_and_the_training_loss_from_the_record():
    stages, skipped = audit_stages(2, AuditInputs(loss_note='why'))
    assert (stages == ['apgd-ce', 'pgd-margin', 'square']
            and set(skipped) == {'apgd-dlr', 'apgd-t', 'apgd-loss', 'transfer'})
    assert skipped['apgd-loss'] == 'why'
    both = AuditInputs(surrogate=mlp(), train_loss=lambda z, t: z.sum(1))
    assert 'apgd-dlr' in audit_stages(3, both)[0] and 'apgd-t' in audit_stages(3, both)[1]
    assert audit_stages(10, both)[0] == list(audit_attack_names())
    loss, note = training_loss_from_run(minimal_run('sp_ls', smoothing=0.0))
    logits, labels = torch.randn(5, 10), torch.arange(5)
    assert note == '' and loss(logits, labels).shape == (5,)
    assert (training_loss_from_run(minimal_run('ce'))[0] is None
            and 'apgd-ce' in training_loss_from_run(minimal_run('ce'))[1])
    smoothed, _ = training_loss_from_run(minimal_run('ce', smoothing=0.1))
    assert torch.allclose(smoothed(logits, labels),
                          F.cross_entropy(logits, labels, label_smoothing=0.1, reduction='none'))
    assert training_loss_from_run(None)[0] is None
    with pytest.raises(ValueError, match='>= 1'):
        AuditConfig(restarts=0)


def test_loss_aware_apgd_ascends_the_given_loss():
    """A callable loss goes through APGD unchanged: CE as a callable gives APGD-CE's images exactly; an SP loss
    runs and returns an image per point within the budget."""
    model = mlp()
    x, y = points(model, n=8)
    def context(train_loss=None):
        return AuditContext(eps=EPS, norm='Linf', seed=3, device='cpu', config=SMALL, num_classes=10,
                            inputs=AuditInputs(train_loss=train_loss))
    ce = audit_module.run_stage('apgd-ce', model, x, y, context())
    as_callable = audit_module.run_stage('apgd-loss', model, x, y, context(lambda z, t: F.cross_entropy(
        z, t, reduction='none')))
    assert torch.equal(ce, as_callable) and ce.shape == x.shape and not correct(model, ce, y).all()
    sp_loss, _ = training_loss_from_run(minimal_run('sp_ls'))
    adversarial = audit_module.run_stage('apgd-loss', model, x, y, context(sp_loss))
    assert adversarial.shape == x.shape and (adversarial - x).abs().max() <= EPS + 1e-6


@pytest.mark.slow
def test_eval_cli_audit_end_to_end(tmp_path):
    """sp-timm eval --audit on a trained SP checkpoint: the report's audit section (the loss-aware attack ascends
    the SP training loss), the leaderboard's unreliable, the summary; a rerun resumes every saved stage."""
    from sp_timm.cli import main as cli_main
    from conftest import train_tiny
    checkpoint = train_tiny(tmp_path / 'run', train_examples=256, loss='sp_ls', lr=0.05) / 'last'
    out = tmp_path / 'eval'
    argv = ['eval', '--checkpoint', str(checkpoint), '--n-examples', '12', '--batch-size', '12', '--eps', '2/255',
            '--min-pert-examples', '0', '--out', str(out), '--no-progress', '--preview', '--audit', '--surrogate',
            str(checkpoint),
            '--audit-restarts', '1', '--audit-iters', '10', '--audit-targets', '3', '--audit-margin-restarts', '1',
            '--audit-margin-steps', '10', '--audit-square-queries', '100', '--audit-square-restarts', '1']
    assert cli_main(argv) == 0
    report = json.loads((out / 'report.json').read_text())
    audit = report['audit']
    assert {r['attack'] for r in audit['attacks']} == set(audit_attack_names())  # sp_ls: the loss-aware attack ran
    assert audit['autoattack_acc'] == report['robust_acc'] and audit['robust_acc'] <= report['robust_acc']
    assert set(audit['checks']) == {'large_eps', 'monotonic_eps', 'white_vs_black_box', 'gradient_norms'}
    assert report['unreliable'] == (bool(report['warnings']) or audit['unreliable'])
    entry = json.loads(next((out / 'model_info').rglob('*.json')).read_text())
    assert entry['unreliable'] == report['unreliable']
    assert '## Adaptive-attack audit' in (out / 'summary.md').read_text()
    assert cli_main(argv) == 0  # every stage saved: the rerun reproduces the audit
    again = json.loads((out / 'report.json').read_text())['audit']
    assert {k: v for k, v in again.items() if k != 'warnings'} == {k: v for k, v in audit.items() if k != 'warnings'}


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
@pytest.mark.parametrize('name', ['sp_ls', 'sp_ce', 'sp_margin', 'sp_focal'])
def test_loss_aware_attack_rises_towards_the_boundary(name, smoothing):
    """Ascending an SP loss itself from beyond its stationary point would push p_y up, away from the boundary; the
    audit's form of it must rise monotonically as p_y falls, through p* and down to the boundary -- also for a run
    trained with label smoothing, which moves the loss's stationary point below p* (the ascent was pinned between
    the two). (sp_logit is left out: its penalty depends on the logits' norm, not on p_y alone.)"""
    from sp_timm.losses import create_loss
    loss, note = training_loss_from_run(minimal_run(name, smoothing=smoothing))
    assert loss is not None and not note
    margins = torch.linspace(12.0, -1.0, 200)  # z = (m, 0, ..., 0): p_y falls as m falls
    logits = torch.zeros(200, 10)
    logits[:, 0] = margins
    values = loss(logits, torch.zeros(200, dtype=torch.long))
    assert torch.all(values[1:] >= values[:-1] - 1e-6), 'not monotone towards the boundary'
    raw = create_loss(name, reduction='none')(logits, torch.zeros(200, dtype=torch.long))
    assert not torch.all(raw[1:] >= raw[:-1] - 1e-6)  # the raw SP loss is not: it has its minimum at p*


def test_a_saturated_but_honest_model_is_not_called_unreliable():
    """The issue's repro: a linear model scaled by 1e4 saturates the softmax in float32, so CE's input gradient is
    exactly 0 at every clean point and APGD-CE cannot move it; the margin gradient is intact. The checks judge masking
    with the margin: reliable, with a note on CE's saturation, and nothing broken beyond AutoAttack."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 10))
    with torch.no_grad():
        model[1].weight.mul_(1e4)
        model[1].bias.mul_(1e4)
    model.eval()
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    result = evaluate_points(model, x, y, audit=SMALL, **dict(SETTINGS, eps=0.5 / 255))
    audit = result.audit
    gradients = audit.checks['gradient_norms']
    assert gradients['ce_zero_fraction'] >= 0.9 and gradients['zero_fraction'] == 0.0  # saturated CE, live margin
    assert audit.checks['large_eps']['passed'] and gradients['passed'], audit.checks
    assert audit.broke_beyond_aa == 0 and audit.unreliable is False, audit.reasons
    assert any('cross-entropy saturates' in note for note in audit.notes or [])
    assert 'Note: cross-entropy saturates' in render_summary(toy_report(result, y))


def test_the_audits_adversarial_examples_make_an_external_evaluation_bundle(masked, tmp_path):
    """The points the audit broke beyond AutoAttack on the masking model keep their adversarial images, as do the
    points AutoAttack broke; the bundle (RobustBench's "New evaluation" issue: a .pt of the evaluated points' size,
    the issue text) holds them, each within eps and misclassified, so that the model's accuracy on the .pt alone is
    the audited robust accuracy."""
    from sp_timm.eval.audit import ADV_INDEX, ADV_KEPT
    from sp_timm.eval.external import (IMAGES_FILE, INDEX_FILE, ISSUE_FILE, check_adversarial_examples,
                                       external_bundle_note, write_external_bundle)
    from sp_timm.threat.pgd import perturbation_norm
    base, model, x, y, work, aa = masked
    result = evaluate_points(model, x, y, work_dir=_copy(work, tmp_path), audit=SMALL, surrogate=base, **SETTINGS)
    report = toy_report(result, y)
    kept, robust = result.audit_points[ADV_INDEX], result.aa['robust']
    assert bool(result.audit_points[ADV_KEPT].all()) and external_bundle_note(report, result.audit_points,
                                                                              robust) is None
    broken = (robust & ~result.audit_points['worst']).nonzero().flatten()
    assert set(broken.tolist()) <= set(kept.tolist())  # every point broken beyond AutoAttack has its image
    assert result.aa['white-box'][kept].all()  # and only the points the audit attacked have one
    by_autoattack = (result.aa['clean'] & ~robust).nonzero().flatten()
    assert bool(result.adversarial['kept'].all()) and sorted(result.adversarial['index'].tolist()) == \
        by_autoattack.tolist()  # AutoAttack's own images, read back from its saved chunks
    folder = write_external_bundle(tmp_path / 'out', report, model, x, y, result.audit_points, result.aa,
                                   result.adversarial, device='cpu', source='/home/me/runs/x', zoo_model=False,
                                   version='test')
    images = torch.load(folder / IMAGES_FILE, weights_only=True)
    assert images.shape == x.shape and images.dtype == torch.float32
    changed = (images != x).flatten(1).any(1).nonzero().flatten()
    assert set(changed.tolist()) <= set(kept.tolist()) | set(by_autoattack.tolist())
    assert (perturbation_norm(images - x, 'Linf') <= EPS * (1 + 1e-4)).all() and 0 <= images.min() <= images.max() <= 1
    with torch.no_grad():
        assert (model(images[changed]).argmax(1) != y[changed]).all()
        alone = (model(images).argmax(1) == y)
    assert int(alone.sum()) == int(result.audit_points['worst'].sum())  # the .pt reproduces the audited accuracy
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index['left_out_not_misclassified'] == 0 and index['accuracy_on_images'] == report.audit.robust_acc
    assert {p['broken_by'] for p in index['points'].values()} <= set(audit_attack_names()) | {'autoattack'}
    assert sum(p['autoattack_robust'] for p in index['points'].values()) == len(broken)
    issue = (folder / ISSUE_FILE).read_text()
    assert issue.startswith('<!-- title: [New evaluation] toy -->') and '/home/me' not in issue
    for expected in ('## Target model', '+ **Leaderboard(s):** toy, Linf (eps = 4/255)',
                     f'+ **Robust accuracy:** {report.audit.robust_acc:.2f}% (AutoAttack {report.robust_acc:.2f}%',
                     f"accuracy on adversarial_images.pt alone is {report.audit.robust_acc:.2f}%",
                     '+ **Description of the method used:**', 'transfer', 'evaluated <local path>/x'):
        assert expected in issue, expected
    # an example the model classifies correctly is no evidence: flagged (the bundle leaves it out); one outside the
    # ball is no evaluation at this budget: an error
    assert not check_adversarial_examples(model, x[kept], x[kept], y[kept], eps=EPS, norm='Linf', device='cpu').any()
    with pytest.raises(ValueError, match='outside the Linf ball'):
        check_adversarial_examples(model, x[kept], (x[kept] + 2 * EPS).clamp(0, 1), y[kept], eps=EPS, norm='Linf',
                                   device='cpu')
