import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from sp_timm import compat


def test_alias_maps_autoattack_onto_pyautoattack(monkeypatch):
    """The finder robustbench relies on, exercised without robustbench: same module objects."""
    for name in [n for n in sys.modules if n == 'autoattack' or n.startswith('autoattack.')]:
        monkeypatch.delitem(sys.modules, name)
    finder = compat._AutoAttackAlias()
    monkeypatch.setattr(sys, 'meta_path', [finder] + sys.meta_path)
    import pyautoattack
    import pyautoattack.state
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState
    assert AutoAttack is pyautoattack.AutoAttack
    assert EvaluationState is pyautoattack.state.EvaluationState
    assert finder.find_spec('numpy') is None
    for name in ('autoattack', 'autoattack.state'):
        sys.modules.pop(name, None)


@pytest.mark.robustbench
def test_robustbench_imports_after_sp_timm():
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    code = textwrap.dedent('''
        import dataclasses
        import sp_timm, robustbench
        from robustbench.utils import ModelInfo
        import autoattack, pyautoattack
        assert autoattack.AutoAttack is pyautoattack.AutoAttack
        print(sorted(f.name for f in dataclasses.fields(ModelInfo)))
    ''')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "'autoattack_acc'" in result.stdout and "'clean_acc'" in result.stdout


@pytest.mark.robustbench
def test_old_timm_of_the_robustbench_extra_uses_the_legacy_factory():
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    import timm.loss
    import torch.nn as nn
    from sp_timm import create_classification_loss, list_losses
    from sp_timm.losses import _factory
    if hasattr(timm.loss, 'create_classification_loss'):
        pytest.skip('this timm has its own factory')
    assert _factory._timm_factory() is None
    assert list_losses('[!s]*') == ['bce', 'ce', 'jsd']
    assert isinstance(create_classification_loss('ce', smoothing=0.1), timm.loss.LabelSmoothingCrossEntropy)
    assert type(create_classification_loss()) is nn.CrossEntropyLoss
    assert create_classification_loss('sp_ls', sp_pstar=0.8).pstar == 0.8


@pytest.mark.robustbench
def test_leaderboard_entry_loads_into_robustbench_model_info(tmp_path):
    """The JSON sp-timm eval writes, read the way RobustBench reads its model_info files."""
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    import dataclasses
    import json
    import torch
    from robustbench.utils import ModelInfo
    from sp_timm.eval import PointsResult
    from sp_timm.records import LEADERBOARD_FIELDS, to_json
    from conftest import toy_protocol, toy_report
    labels = torch.arange(10).repeat(3)
    flags = {'clean': torch.rand(30) < 0.9, 'pred': labels, 'perturbation': torch.zeros(30)}
    for stage in ('apgd-ce', 'apgd-t', 'fab-t', 'square'):
        flags[stage] = flags['clean'] & (torch.rand(30) < 0.5)
    flags['robust'], flags['white-box'] = flags['square'], flags['fab-t']  # as autoattack_chunk returns them
    report = toy_report(PointsResult(eps=8 / 255, aa=flags), labels, protocol=toy_protocol(30, 8 / 255, 'cifar10'),
                        meta={'name': 'A title', 'architecture': 'WideResNet-28-10'})
    path = tmp_path / 'model_info' / 'cifar10' / 'Linf' / 'Me2026.json'
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(to_json(report.leaderboard)))
    entry = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(ModelInfo)}
    assert set(entry) - fields == {'unreliable'}  # RobustBench's own JSON files carry it; its dataclass does not
    info = ModelInfo(**{k: v for k, v in entry.items() if k in fields})
    assert info.eps == '8/255' and float(info.autoattack_acc) == pytest.approx(report.robust_acc, abs=0.005)
    assert float(info.clean_acc) == pytest.approx(report.clean_acc, abs=0.005)
    assert list(entry) == list(LEADERBOARD_FIELDS)


@pytest.mark.robustbench
def test_unknown_robustbench_model_gets_a_clear_error(capsys):
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    from sp_timm.cli import main
    assert main(['eval', '--robustbench-model', 'Carmon2019Unlabelled', '--dataset', 'cifar10']) == 2
    err = capsys.readouterr().err
    assert 'Carmon2019Unlabeled' in err  # the close match is suggested


def _cifar10_copies(folder, images, labels):
    """The same images in the two layouts the evaluators read: torchvision's CIFAR-10 python batches (what
    robustbench's load_cifar10 opens) and parquet files of PNGs (what sp-timm's --data-dir reads)."""
    import io
    import pickle
    import pandas as pd
    from PIL import Image
    from sp_timm.data.class_names import class_names
    batches = folder / 'cifar-10-batches-py'
    batches.mkdir(parents=True)
    with open(batches / 'test_batch', 'wb') as f:
        pickle.dump({'data': images.reshape(len(images), -1).numpy(), 'labels': labels.tolist()}, f)
    with open(batches / 'batches.meta', 'wb') as f:
        pickle.dump({'label_names': class_names('cifar10', 10)}, f)
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format='PNG')
        pngs.append({'bytes': buffer.getvalue(), 'path': None})
    pd.DataFrame({'img': pngs, 'label': labels.tolist()}).to_parquet(folder / 'test-00000-of-00001.parquet')


@pytest.mark.robustbench
def test_robustbench_benchmark_equals_sp_timm_eval(tmp_path, monkeypatch):
    """RobustBench's own benchmark() (its data loading, clean accuracy, AutoAttack over all points in one call, the
    accuracy of the returned images), through the adapter on pyautoattack, and sp-timm's evaluate_points on the
    points sp-timm's loader reads from the same data report the same clean and robust accuracy. A linear model on
    real images (digits in the CIFAR-10 layouts): its exact Linf distance to the boundary lets eps sit between the
    points', so attacks must flip some and cannot flip others, and AutoAttack stays cheap on CPU."""
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    import torch
    import torchvision.datasets.cifar as tv_cifar
    from torch import nn
    from sp_timm.data import create_dataset
    from sp_timm.eval import evaluate_points
    from sp_timm.robustbench_adapter import benchmark
    train, test = create_dataset('digits', 'train'), create_dataset('digits', 'test')
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train = train.images.float() / 255
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x_train), train.labels).backward()
        optimizer.step()
    model.eval()
    n, batch = 12, 8
    data = tmp_path / 'cifar10'
    _cifar10_copies(data, test.images[:40], test.labels[:40])
    points = create_dataset('cifar10', 'test', str(data))
    x, y = points.images[:n].float() / 255, points.labels[:n]
    with torch.no_grad():  # exact Linf distance of each correct point to its nearest class boundary (no clipping)
        logits, weight = model(x), model[1].weight
        margins = logits.gather(1, y[:, None]) - logits
        norms = (weight[y][:, None, :] - weight[None, :, :]).abs().sum(-1)
        distance = (margins / norms.clamp_min(1e-12)).masked_fill(torch.nn.functional.one_hot(y, 10).bool(),
                                                                  float('inf')).amin(1)
    correct = distance[logits.argmax(1) == y].sort().values
    assert len(correct) >= 4
    eps = float(correct[len(correct) // 2 - 1] + correct[len(correct) // 2]) / 2  # half of them within eps
    # the files are tiny stand-ins, so torchvision's MD5 check of the real CIFAR-10 archive would fail and
    # robustbench's download=True would fetch it: accept the files, and make any download an error
    monkeypatch.setattr(tv_cifar.CIFAR10, '_check_integrity', lambda self: True)
    monkeypatch.setattr(tv_cifar, 'check_integrity', lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar, 'download_and_extract_archive',
                        lambda *a, **k: pytest.fail('robustbench tried to download CIFAR-10'))
    log = tmp_path / 'robustbench-autoattack.log'
    clean, robust = benchmark(model, n_examples=n, dataset='cifar10', threat_model='Linf', data_dir=str(data),
                              device=torch.device('cpu'), batch_size=batch, eps=eps, log_path=str(log))
    ours = evaluate_points(model, x, y, threat_model='Linf', eps=eps, seed=0, batch_size=batch, chunk_size=n,
                           min_pert_examples=0, progress=False).aa
    assert round(clean * n) == int(ours['clean'].sum()) == len(correct)
    assert round(robust * n) == int(ours['square'].sum())
    assert 0 < robust < clean  # attacks flipped some points and left others: the comparison means something
    assert int(ours['square'].sum()) == int((distance > eps).sum())  # and AutoAttack found exactly the flippable ones
    assert 'robust accuracy after APGD-CE' in log.read_text()  # benchmark()'s log_path, written by the adapter


@pytest.mark.robustbench
def test_adapter_speaks_the_api_robustbench_calls():
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    import torch
    from torch import nn
    from sp_timm.robustbench_adapter import legacy_autoattack_class, robustbench_autoattack
    import robustbench.eval
    original = robustbench.eval.AutoAttack
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.rand(4, 3, 8, 8)
    y = model(x).argmax(1)
    adversary = legacy_autoattack_class()(model, norm='Linf', eps=64 / 255, version='standard', device='cpu',
                                          log_path=None)
    assert adversary.seed == 0
    x_adv = adversary.run_standard_evaluation(x, y, bs=4)
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape  # the images alone, as robustbench expects
    assert (x_adv - x).abs().max() <= 64 / 255 + 1e-6
    with robustbench_autoattack(seed=3) as module:
        assert module.AutoAttack(model, norm='L2', eps=0.5, device='cpu').seed == 3
    assert robustbench.eval.AutoAttack is original


class _RoundedLogits(nn.Module):
    """Logits rounded to a grid: zero input gradients everywhere, so AutoAttack's white-box stages are blind."""

    def forward(self, z):
        return torch.round(z / 0.02) * 0.02


@pytest.mark.robustbench
@pytest.mark.slow
def test_external_evaluation_bundle_of_a_masking_robustbench_model(tmp_path, monkeypatch, capsys):
    """End to end through RobustBench's loading path: a gradient-masking model registered in RobustBench's zoo (its
    weights where robustbench.utils.load_model reads them), sp-timm eval --robustbench-model --audit with a transfer
    surrogate (the same network without the rounding) breaks points AutoAttack counted robust, and writes the
    external-evaluation bundle: each adversarial example within eps and misclassified by the model loaded from
    RobustBench, the issue text naming the zoo model, the leaderboard and the accuracies."""
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    import json
    import timm
    import torch
    import torchvision.datasets.cifar as tv_cifar
    from safetensors.torch import save_file
    from torch import nn
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model as rb_load_model
    from sp_timm.cli import main
    from sp_timm.data import create_dataset
    from sp_timm.threat.pgd import perturbation_norm
    train, test = create_dataset('digits', 'train'), create_dataset('digits', 'test')
    torch.manual_seed(0)
    base = timm.create_model('small_cnn_cifar', num_classes=10)
    optimizer = torch.optim.Adam(base.parameters(), lr=2e-3)
    x_train = train.images.float() / 255
    for step in range(60):
        batch = torch.randint(0, len(x_train), (128,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(base(x_train[batch]), train.labels[batch]).backward()
        optimizer.step()
    base.eval()
    name, eps = 'Masked2026Rounding', 8 / 255
    zoo = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]
    monkeypatch.setitem(zoo, name, {'model': lambda: nn.Sequential(timm.create_model('small_cnn_cifar',
                                                                                       num_classes=10),
                                                                     _RoundedLogits()),
                                    'gdrive_id': 'not-downloaded-in-tests'})
    models = tmp_path / 'models'
    (models / 'cifar10' / 'Linf').mkdir(parents=True)
    torch.save(nn.Sequential(base, _RoundedLogits()).state_dict(), models / 'cifar10' / 'Linf' / f'{name}.pt')
    surrogate = tmp_path / 'surrogate'
    surrogate.mkdir()
    (surrogate / 'config.json').write_text(json.dumps({'architecture': 'small_cnn_cifar', 'num_classes': 10}))
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(surrogate / 'model.safetensors'))
    data = tmp_path / 'cifar10'
    _cifar10_copies(data, test.images[:24], test.labels[:24])
    monkeypatch.setattr(tv_cifar, 'download_and_extract_archive', lambda *a, **k: pytest.fail('download'))
    out = tmp_path / 'eval'
    status = main(['eval', '--robustbench-model', name, '--robustbench-dir', str(models), '--dataset', 'cifar10',
                   '--data-dir', str(data), '--n-examples', '24', '--eps', '8/255', '--batch-size', '24',
                   '--min-pert-examples', '0', '--no-progress', '--out', str(out), '--audit',
                   '--surrogate', f'local-dir:{surrogate}', '--audit-restarts', '1', '--audit-iters', '20',
                   '--audit-targets', '3', '--audit-margin-restarts', '1', '--audit-margin-steps', '20',
                   '--audit-square-queries', '200', '--audit-square-restarts', '1'])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-3000:]
    report = json.loads((out / 'report.json').read_text())
    assert report['audit']['broke_beyond_aa'] > 0 and report['audit']['unreliable'] is True
    assert 'external-evaluation bundle: ' in captured.out
    bundle = out / 'external-evaluation'
    images = torch.load(bundle / 'adversarial_images.pt', weights_only=True)
    points = create_dataset('cifar10', 'test', str(data))
    x, y = points.images[:24].float() / 255, points.labels[:24]
    kept = json.loads((bundle / 'external.json').read_text())['points']
    index = sorted(int(i) for i in kept)
    assert images.shape == x.shape
    assert sum(p['autoattack_robust'] for p in kept.values()) == report['audit']['broke_beyond_aa']
    assert {p['broken_by'] for p in kept.values() if not p['autoattack_robust']} == {'autoattack'}
    model = rb_load_model(name, model_dir=str(models), dataset='cifar10', threat_model='Linf').eval()
    assert (perturbation_norm(images[index] - x[index], 'Linf') <= eps * (1 + 1e-5)).all()
    with torch.no_grad():
        assert (model(images[index]).argmax(1) != y[index]).all()  # RobustBench's model misclassifies every one
        alone = float((model(images).argmax(1) == y).double().mean()) * 100
    assert alone == pytest.approx(report['audit']['robust_acc'])  # the .pt alone gives the audited accuracy
    issue = (bundle / 'new-evaluation-issue.md').read_text()
    assert f'<!-- title: [New evaluation] {name} -->' in issue and f'**Model identifier(s):** {name}\n' in issue
    assert '**Leaderboard(s):** cifar10, Linf (eps = 8/255)' in issue
    assert f"**Robust accuracy:** {report['audit']['robust_acc']:.2f}%" in issue
    assert 'not the whole test set' in issue  # 24 points: the issue says to re-run on the full split
