import subprocess
import sys
import textwrap

import pytest

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
    from sp_timm.eval import LEADERBOARD_FIELDS, build_report, leaderboard_entry
    labels = torch.arange(10).repeat(3)
    flags = {'clean': torch.rand(30) < 0.9, 'pred': labels, 'perturbation': torch.zeros(30)}
    for stage in ('apgd-ce', 'apgd-t', 'fab-t', 'square'):
        flags[stage] = flags['clean'] & (torch.rand(30) < 0.5)
    report = build_report(flags, labels, classes=[str(c) for c in range(10)], warnings=[], model={},
                          protocol={'dataset': 'cifar10', 'threat_model': 'Linf', 'eps': '8/255', 'eps_value': 8 / 255})
    path = tmp_path / 'model_info' / 'cifar10' / 'Linf' / 'Me2026.json'
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(leaderboard_entry(report, {'name': 'A title', 'architecture': 'WideResNet-28-10'})))
    entry = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(ModelInfo)}
    assert set(entry) - fields == {'unreliable'}  # RobustBench's own JSON files carry it; its dataclass does not
    info = ModelInfo(**{k: v for k, v in entry.items() if k in fields})
    assert info.eps == '8/255' and float(info.autoattack_acc) == pytest.approx(report['robust_acc'], abs=0.005)
    assert float(info.clean_acc) == pytest.approx(report['clean_acc'], abs=0.005)
    assert list(entry) == list(LEADERBOARD_FIELDS)


@pytest.mark.robustbench
def test_unknown_robustbench_model_gets_a_clear_error(capsys):
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    from sp_timm.cli import main
    assert main(['eval', '--robustbench-model', 'Carmon2019Unlabelled', '--dataset', 'cifar10']) == 2
    err = capsys.readouterr().err
    assert 'Carmon2019Unlabeled' in err  # the close match is suggested
