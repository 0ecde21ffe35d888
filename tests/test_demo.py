""" sp-timm demo end to end on a tiny budget (the real budgets are the README's), and its toy boundary figure. """
import json

import pytest

from sp_timm import demo
from sp_timm.cli import main as cli_main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_everything(tmp_path, monkeypatch, capsys):
    from sp_timm.eval.config import AuditConfig
    tiny_audit = AuditConfig(restarts=1, n_iter=5, max_targets=1, margin_restarts=1, margin_steps=5, square_queries=20,
                             square_restarts=1)
    monkeypatch.setitem(demo.DEMO_BUDGETS, 'quick',
                        demo.DemoBudget(1, 8, 8, 2, ('Linf',), demo.DEMO_DATASETS, tiny_audit))
    out = tmp_path / 'demo'
    assert cli_main(['demo', '--quick', '--out', str(out), '--no-progress', '--eps', '8/255']) == 0
    printed = capsys.readouterr().out
    assert '| digits-lt | sp ' in printed and 'McNemar' in printed and 'audited AA %' in printed
    results = json.loads((out / 'results.json').read_text())
    assert results['eps_str'] == '8/255' and set(results['table']) == {'digits', 'digits-lt'}
    for dataset, by_loss in results['table'].items():
        assert set(by_loss) == {'ce', 'sp'}
        for row in by_loss.values():
            assert 0 <= row['robust_acc'] <= row['clean_acc'] <= 100
            assert row['audited_acc'] is not None and row['audited_acc'] <= row['robust_acc']  # the worst case
        sp_audit = json.loads((out / 'eval' / f'{dataset}-sp' / 'report.json').read_text())['audit']
        assert 'transfer' in {a['attack'] for a in sp_audit['attacks']}  # the CE model's adversarial examples
        assert (out / f'{dataset}_per_class.png').read_bytes()[:4] == b'\x89PNG'
        for loss in ('ce', 'sp'):
            assert (out / 'hub' / f'{dataset}-{loss}' / 'README.md').read_text().count('AutoAttack') >= 2
            entries = 'longtail_info' if dataset.endswith('-lt') else 'model_info'  # previews: digits is no board
            entry = json.loads(next((out / 'eval' / f'{dataset}-{loss}' / entries).rglob('*.json')).read_text())
            assert 'Preview: the first' in (entry.get('entry', entry)['footnote'])
    assert results['table']['digits-lt']['sp']['few_clean_acc'] is not None
    assert set(results['toy']) == {'ce', 'sp_margin'} and (out / 'toy_boundary.png').exists()
    report = (out / 'report.md').read_text()
    assert 'toy_boundary.png' in report and 'McNemar' in report
    # a rerun reuses the finished runs and evaluations
    assert cli_main(['demo', '--quick', '--out', str(out), '--no-progress', '--eps', '8/255']) == 0
    assert json.loads((out / 'results.json').read_text())['table'] == results['table']
    before = (out / 'results.json').read_bytes()
    assert cli_main(['demo', '--quick', '--out', str(out), '--no-progress', '--eps', '4/255']) == 2
    assert 'other settings (eps' in capsys.readouterr().err and (out / 'results.json').read_bytes() == before


def _budget(name):
    return demo.DEMO_BUDGETS[name]


def test_a_demo_folder_is_reused_only_by_the_same_demo(tmp_path):
    out = tmp_path / 'demo'
    demo._claim_folder(out, _budget('quick'), 2 / 255)
    demo._claim_folder(out, _budget('quick'), 2 / 255)  # the same demo again: its runs are reused
    for budget, eps, message in ((_budget('full'), 2 / 255, r'other settings \(--quick -> the full demo'),
                                 (_budget('quick'), 4 / 255, r'other settings \(eps 0.00784')):
        with pytest.raises(ValueError, match=message + '.*Choose another --out'):
            demo._claim_folder(out, budget, eps)
    older = tmp_path / 'older'
    (older / 'runs' / 'digits-ce').mkdir(parents=True)  # a demo folder without the record: not reused blindly
    with pytest.raises(ValueError, match='without demo.json'):
        demo._claim_folder(older, _budget('quick'), 2 / 255)
    assert not (older / 'demo.json').exists()


def test_toy_boundary_measures_both_losses(tmp_path, monkeypatch):
    from sp_timm.eval import plots
    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots, 'save_figure', lambda fig, path: figures.append(fig) or save(fig, path))
    result = demo.toy_boundary(tmp_path / 'toy.png', steps=200)
    for row in result.values():
        assert row['train_acc'] > 90 and row['distance_to_majority'] > 0 and row['distance_to_minority'] > 0
    assert (tmp_path / 'toy.png').read_bytes()[:4] == b'\x89PNG'
    ce, sp = figures[0].axes[:2]  # the two panels (then the colour bar): the axes are the toy's two input features
    assert ce.get_xlabel().startswith('input feature x1') and sp.get_xlabel() == ce.get_xlabel()
    assert ce.get_ylabel() == 'input feature x2'
