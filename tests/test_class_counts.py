""" AutoAttack for any number of classes and any purpose: the standard protocol adapted to K < 10 (targets capped at
K - 1, DLR only where it is defined), the fast and rand protocols, and the leaderboard entry only for the unadapted
standard protocol -- through the Python API and through ``sp-timm eval`` on an image folder of K classes. """
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sp_timm.eval import evaluate_points
from sp_timm.eval.attacks import ROBUST, WHITE_BOX
from sp_timm.eval.config import STANDARD_ATTACKS, autoattack_plan

EPS = 16 / 255


def linear_model(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes)).eval()


def own_predictions(model: nn.Module, n: int = 12):
    """Images and the model's own predictions as labels: every point starts correct."""
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)


@pytest.mark.parametrize('num_classes,attacks,targets', [
    (2, ('apgd-ce', 'fab-t', 'square'), 1),
    (3, ('apgd-ce', 'apgd-dlr', 'fab-t', 'square'), 2),
    (4, STANDARD_ATTACKS, 3),
    (5, STANDARD_ATTACKS, 4),
    (10, STANDARD_ATTACKS, 9),
    (100, STANDARD_ATTACKS, 9),
])
def test_the_standard_protocol_is_adapted_to_the_class_count_and_unchanged_from_ten(num_classes, attacks, targets):
    plan = autoattack_plan(num_classes)
    assert (plan.attacks, plan.n_target_classes) == (attacks, targets)
    assert (plan.adaptation is None) == (num_classes >= 10)
    fast = autoattack_plan(num_classes, 'fast')
    assert fast.attacks == tuple(a for a in attacks if a not in ('fab-t', 'square')) and fast.adaptation == \
        plan.adaptation
    rand = autoattack_plan(num_classes, 'rand')
    assert rand.attacks == (('apgd-ce', 'apgd-dlr') if num_classes >= 3 else ('apgd-ce',)) and rand.version == 'rand'


def test_a_plan_needs_two_classes_and_a_known_protocol():
    with pytest.raises(ValueError, match='>= 2 classes'):
        autoattack_plan(1)
    with pytest.raises(ValueError, match='protocol must be one of standard, fast, rand'):
        autoattack_plan(10, 'quick')


@pytest.mark.parametrize('num_classes', [2, 3, 5])
def test_evaluate_points_runs_every_stage_of_the_adapted_protocol(num_classes, capsys):
    model = linear_model(num_classes)
    x, y = own_predictions(model)
    result = evaluate_points(model, x, y, eps=EPS, batch_size=16, min_pert_norms=['Linf'], fab_iters=10,
                             progress=False)
    plan = result.plan
    assert plan.num_classes == num_classes and plan.attacks == autoattack_plan(num_classes).attacks
    flags = [result.aa['clean']] + [result.aa[a] for a in plan.attacks]
    assert all(bool((later <= earlier).all()) for earlier, later in zip(flags, flags[1:]))  # stages only remove
    assert torch.equal(result.aa[ROBUST], flags[-1])
    assert torch.equal(result.aa[WHITE_BOX], result.aa[plan.white_box[-1]])
    assert int(result.aa[ROBUST].sum()) < len(y)  # the attacks break points: this is not a no-op
    broken = ~result.aa[ROBUST]
    assert result.aa['perturbation'][broken].max() <= EPS * (1 + 1e-4)
    with torch.no_grad():  # what the report calls the adversarial class is what the model predicts there
        assert not torch.equal(result.aa['pred'][broken], y[broken])
    assert 'IndexError' not in capsys.readouterr().err


def test_the_fast_protocol_runs_the_white_box_part_and_shares_its_stages_with_standard(tmp_path):
    model = linear_model(5)
    x, y = own_predictions(model)
    fast = evaluate_points(model, x, y, eps=4 / 255, batch_size=16, min_pert_norms=[], protocol='fast',
                           work_dir=tmp_path, progress=False)
    assert fast.plan.attacks == ('apgd-ce', 'apgd-t') and 'square' not in fast.aa
    standard = evaluate_points(model, x, y, eps=4 / 255, batch_size=16, min_pert_norms=[], work_dir=tmp_path,
                               progress=False)
    # the standard run continues the fast run's chunks: the same APGD flags, then FAB-T and Square on the survivors
    assert torch.equal(standard.aa['apgd-t'], fast.aa['apgd-t']) and 'square' in standard.aa
    assert bool((standard.aa[ROBUST] <= fast.aa[ROBUST]).all())


def test_the_rand_protocol_keeps_its_own_stages(tmp_path):
    model = linear_model(3)
    x, y = own_predictions(model, 6)
    rand = evaluate_points(model, x, y, eps=EPS, batch_size=16, min_pert_norms=[], protocol='rand',
                           work_dir=tmp_path, progress=False)
    assert rand.plan.attacks == ('apgd-ce', 'apgd-dlr')
    assert (tmp_path / f'autoattack-Linf-{EPS:.8g}-rand').is_dir()
    assert not (tmp_path / f'autoattack-Linf-{EPS:.8g}').exists()


def make_image_folder(root: Path, num_classes: int, per_class: int = 12, test_per_class: int = 3) -> Path:
    """An image folder of ``num_classes`` classes of 32x32 colour images, each class its own brightness."""
    from PIL import Image
    rng = np.random.default_rng(num_classes)
    for split, n in (('train', per_class), ('test', test_per_class)):
        for c in range(num_classes):
            folder = root / split / f'kind{c}'
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                level = int(200 * c / max(1, num_classes - 1))
                pixels = np.clip(rng.integers(0, 50, (32, 32, 3)) + level, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f'{i:03d}.png')
    return root


def sp_timm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'sp_timm', *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('num_classes', [2, 3, 5])
def test_cli_trains_and_evaluates_an_image_folder_of_k_classes(tmp_path, num_classes):
    data = make_image_folder(tmp_path / 'data', num_classes)
    train = sp_timm('train', '--dataset', 'imagefolder', '--data-dir', str(data), '--model', 'small_cnn_cifar',
                    '--epochs', '1', '--batch-size', '12', '--val-split', str(num_classes), '--no-progress',
                    '--no-aug', '--lr', '0.05', '--output', str(tmp_path / 'run'))
    assert train.returncode == 0, train.stderr[-2000:]
    out = tmp_path / 'eval'
    result = sp_timm('eval', '--checkpoint', str(tmp_path / 'run'), '--data-dir', str(data), '--n-examples', '6',
                     '--eps', '32/255', '--min-pert-examples', '0', '--no-progress', '--out', str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / 'report.json').read_text())
    plan = autoattack_plan(num_classes)
    assert report['protocol']['attacks'] == list(plan.attacks)
    assert report['protocol']['adaptation'] == plan.adaptation and report['protocol']['n_target_classes'] == \
        num_classes - 1
    assert [s['stage'] for s in report['stages']] == ['clean', *plan.attacks]
    assert len(report['per_class']) == num_classes and report['per_class'][0]['name'] == 'kind0'
    # an adapted protocol is not the leaderboard's: no entry, and the report, summary and console say why
    assert 'leaderboard' not in report and 'adapted to the class count' in report['leaderboard_note']
    assert not (out / 'model_info').exists()
    summary = (out / 'summary.md').read_text()
    assert f'adapted to the class count: {plan.adaptation}' in summary and 'No leaderboard entry' in summary
    assert 'adapted to' in result.stdout and 'IndexError' not in result.stderr


def test_cli_fast_protocol_says_so_and_writes_no_leaderboard_entry(tmp_path, tiny_run):
    out = tmp_path / 'eval'
    result = sp_timm('eval', '--checkpoint', str(tiny_run), '--n-examples', '4', '--min-pert-examples', '0',
                     '--protocol', 'fast', '--no-progress', '--out', str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / 'report.json').read_text())
    assert report['protocol']['version'] == 'fast' and report['protocol']['attacks'] == ['apgd-ce', 'apgd-t']
    assert 'leaderboard' not in report and not (out / 'model_info').exists()
    assert 'the fast protocol' in (out / 'summary.md').read_text().splitlines()[2]
    assert 'fast protocol' in result.stdout
    # the same folder evaluated again with the standard protocol: the entry appears, nothing stale stays
    again = sp_timm('eval', '--checkpoint', str(tiny_run), '--n-examples', '4', '--min-pert-examples', '0',
                    '--no-progress', '--preview', '--out', str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert list((out / 'model_info').rglob('*.json'))
    assert json.loads((out / 'report.json').read_text())['protocol']['attacks'] == list(STANDARD_ATTACKS)


def test_every_stage_reports_the_points_left_robust_on_the_console(capsys):
    from sp_timm.eval.config import AuditConfig
    model = linear_model(4)
    x, y = own_predictions(model, 8)
    audit = AuditConfig(restarts=1, n_iter=5, max_targets=1, margin_restarts=1, margin_steps=5, square_queries=5,
                        square_restarts=1)
    result = evaluate_points(model, x, y, eps=2 / 255, batch_size=8, min_pert_norms=[], audit=audit, progress=True)
    out = capsys.readouterr().out
    for stage in result.plan.attacks:
        robust = int(result.aa[stage].sum())
        assert f'AutoAttack 2/255 chunk 0: {stage.upper()} done in' in out
        assert f'{robust}/8 points left robust' in out
    assert 'audit chunk 0: APGD-CE done in' in out


def test_a_surrogate_of_another_dataset_is_refused_before_any_work_and_a_right_one_is_named(tmp_path, tiny_run):
    data = make_image_folder(tmp_path / 'data', 10, per_class=2, test_per_class=1)
    other = tmp_path / 'other'
    train = sp_timm('train', '--dataset', 'imagefolder', '--data-dir', str(data), '--model', 'small_cnn_cifar',
                    '--epochs', '1', '--batch-size', '10', '--val-split', '0', '--no-progress', '--output', str(other))
    assert train.returncode == 0, train.stderr[-2000:]
    out = tmp_path / 'eval'
    result = sp_timm('eval', '--checkpoint', str(tiny_run), '--audit', '--surrogate', str(other), '--n-examples', '4',
                     '--no-progress', '--out', str(out))
    assert result.returncode == 2 and 'was trained on imagefolder, the evaluated data is digits' in result.stderr
    assert 'Traceback' not in result.stderr and not out.exists()  # refused before anything was written
    from sp_timm.eval.config import AttackConfig, EvalConfig
    from sp_timm.eval.runner import _audit_inputs
    from sp_timm.model_source import load_model
    config = EvalConfig(checkpoint=str(tiny_run), surrogate=str(tiny_run), attack=AttackConfig(audit=True))
    inputs, name = _audit_inputs(config, load_model(str(tiny_run))[1], 10, 'digits-lt')
    assert inputs['surrogate'] is not None and name.startswith(f'{tiny_run} (weights SHA-256 ')
