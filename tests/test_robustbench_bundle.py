""" sp-timm export --robustbench (the RobustBench submission folder), sp-timm eval's autoattack.log, and the export's
one-report-per-threat-model rule. The tests marked robustbench load the bundle with robustbench's own code (the
[robustbench] extra); the others check the bundle's content and the errors in the main environment. """
import json
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch

import sp_timm  # noqa: F401  (registers the models)
from sp_timm.model_source import create_model_from_checkpoint
from sp_timm.checkpoint import save_checkpoint, weights_sha256
from sp_timm.cli import main as cli_main
from sp_timm.export.robustbench import ISSUE_FILE, robustbench_state_dict, ZOO_ENTRY_FILE, zoo_entry_source
from sp_timm.records import to_json

from conftest import minimal_run
from test_hub import fake_report
from conftest import snapshot

AUTHORS = 'Ada Lovelace, Alan Turing'
NAME = 'Lovelace2023Stationary_PreActResNet-18'


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Distinct BN statistics and affine parameters in every layer, so a key mapped to the wrong layer shows."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def _checkpoint(root: Path, model_name: str, dataset: str = 'cifar10', **model_args) -> Path:
    torch.manual_seed(0)
    model = _randomise_batchnorm(timm.create_model(model_name, num_classes=10, **model_args))
    record = replace(minimal_run('sp_ls', {'pstar': 0.9}), model=model_name, model_args=model_args, dataset=dataset)
    return save_checkpoint(root / 'run', 1, model.state_dict(), {}, {}, record, True)


def _report(checkpoint: Path, folder: Path, threat_model: str = 'Linf', dataset: str = 'cifar10', log: bool = True,
            authors: str = 'TO FILL IN: the authors (sp-timm eval --authors)') -> Path:
    """An evaluation folder in the schema of sp-timm eval (the fields export reads), with its autoattack.log."""
    model, info = create_model_from_checkpoint(checkpoint)
    eps = '8/255' if threat_model == 'Linf' else '0.5'
    base = fake_report(info, weights_sha256(model), dataset=dataset, threat_model=threat_model, eps=eps, n=20)
    entry = replace(base.leaderboard, link='https://example.org/lovelace-2023',
                    name='Stationary margins make robust nets',
                    authors=authors, venue='ICML 2023', architecture='PreActResNet-18', clean_acc='60.00',
                    reported='', autoattack_acc='35.00', footnote='sp-timm, loss sp_ls')
    report = to_json(replace(base, protocol=replace(base.protocol, batch_size=500), clean_acc=60.0, robust_acc=35.0,
                             clean_ci=[36.1, 80.9], robust_ci=[15.4, 59.2], model_name='run', leaderboard=entry))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'report.json').write_text(json.dumps(report))
    if log:
        (folder / 'autoattack.log').write_text(f'AutoAttack log of the {threat_model} evaluation\n')
    return folder / 'report.json'


@pytest.fixture(scope='module')
def preact(tmp_path_factory):
    root = tmp_path_factory.mktemp('preact')
    checkpoint = _checkpoint(root, 'preact_resnet18_cifar')
    return checkpoint, _report(checkpoint, root / 'eval-Linf'), _report(checkpoint, root / 'eval-L2', 'L2')


def _export(checkpoint, out, *reports, extra=()):
    argv = ['export', '--checkpoint', str(checkpoint), '--out', str(out), '--robustbench']
    for report in reports:
        argv += ['--eval', str(report)]
    return cli_main(argv + list(extra))


def test_bundle_holds_the_submission(preact, tmp_path):
    checkpoint, linf, l2 = preact
    out = tmp_path / 'submission'
    assert _export(checkpoint, out, linf, l2, extra=['--authors', AUTHORS, '--license', 'mit', '--reported',
                                                      'Linf=40.1', '--reported', 'L2=55', '--preview',
                                                      '--checkpoint-url', 'https://example.org/w.pt']) == 0
    for tm, reported in (('Linf', '40.10'), ('L2', '55.00')):
        entry = json.loads((out / 'model_info' / 'cifar10' / tm / f'{NAME}.json').read_text())
        assert entry['authors'] == AUTHORS and entry['dataset'] == 'cifar10' and entry['autoattack_acc'] == '35.00'
        assert entry['reported'] == reported and 'Preview: the first 20 test images' in entry['footnote']
        assert (out / f'autoattack-{tm}.log').read_text() == f'AutoAttack log of the {tm} evaluation\n'
        state = torch.load(out / 'models' / 'cifar10' / tm / f'{NAME}.pt', weights_only=True)
    model, _ = create_model_from_checkpoint(checkpoint)
    assert list(state) == list(robustbench_state_dict(model))
    assert {'mu', 'sigma', 'conv1.weight', 'layer2.0.shortcut.0.weight', 'layer4.1.bn2.running_var', 'bn.weight',
            'linear.bias'} <= set(state)
    assert not any(k.startswith(('stages', 'normalize', 'fc', 'final_norm', 'conv_stem')) for k in state)
    assert torch.equal(state['layer3.1.conv2.weight'], model.stages[2][1].conv2.weight)
    assert torch.equal(state['bn.running_mean'], model.final_norm[0].running_mean)
    assert torch.equal(state['mu'], model.normalize.mean) and state['mu'].shape == (1, 3, 1, 1)
    source = (out / ZOO_ENTRY_FILE).read_text()
    compile(source, ZOO_ENTRY_FILE, 'exec')
    assert 'class Lovelace2023Stationary_PreActResNet18Net(PreActResNet):' in source
    assert "LINF_ENTRY = ('Lovelace2023Stationary_PreActResNet-18'" in source and 'L2_ENTRY' in source
    issue = (out / ISSUE_FILE).read_text()
    for line in ('- **Paper Title**: Stationary margins make robust nets', f'- **Paper authors**: {AUTHORS}',
                 '- **Dataset**: cifar10', '- **Threat Model**: Linf', '- **eps**: 8/255', '- **Threat Model**: L2',
                 '- **eps**: 0.5', '- **Clean accuracy**: 60.00%',
                 '- **Robust accuracy**: 35.00% (the paper reports 40.10%)', '- **Additional data**: false',
                 'checkpoint https://example.org/w.pt', '- [x] I agree to release my model(s) under MIT license',
                 '- [x] I want to add my models to the Model Zoo'):
        assert line in issue
    assert 'PREVIEW: 20 points, not the 10,000' in issue  # the issue says so
    assert 'pyautoattack 0.2.0' in issue and "RobustBench's benchmark() uses AutoAttack from the git commit" in issue
    # an earlier submission folder is replaced; a custom licence is not ticked as MIT; a private submission
    assert _export(checkpoint, out, linf, extra=['--model-name', 'Me2026Mine_PRN18', '--authors', AUTHORS,
                                                 '--reported', '40', '--preview', '--no-model-zoo', '--hub-repo',
                                                 'lovelace/prn18-sp']) == 0
    assert sorted(p.name for p in (out / 'model_info' / 'cifar10').iterdir()) == ['Linf']
    issue = (out / ISSUE_FILE).read_text()
    assert '- [ ] I agree' in issue and 'apache-2.0' in issue and '- [ ] I want to add my models' in issue
    assert "the model's Hub export hf-hub:lovelace/prn18-sp" in issue
    assert (out / 'models' / 'cifar10' / 'Linf' / 'Me2026Mine_PRN18.pt').is_file()


def test_wide_resnet_keys_and_zoo_class():
    model = _randomise_batchnorm(sp_timm.models.WideResNet(depth=16, widen_factor=2))
    state = robustbench_state_dict(model)
    assert {'conv1.weight', 'block1.layer.0.convShortcut.weight', 'block3.layer.1.bn2.running_mean', 'bn1.weight',
            'fc.weight', 'mu', 'sigma'} <= set(state)
    assert 'block1.layer.1.convShortcut.weight' not in state and len(state) == len(model.state_dict())
    source = zoo_entry_source('Me2026Word_WRN-16-2', model, ['Linf'], 'cifar10', 'test')
    assert 'depth=16, widen_factor=2, num_classes=10' in source and 'sub_block1=False' in source


@pytest.mark.parametrize('case, message', [
    ('small_cnn', 'RobustBench has no model class'),
    ('no_eval', 'needs the evaluation to submit'),
    ('no_log', 'no autoattack.log beside'),
    ('digits', "RobustBench's leaderboards are cifar10, cifar100"),
    ('no_authors', "still says 'TO FILL IN' for authors: a RobustBench row names the paper that proposes this model"),
    ('no_reported', "the robust accuracy the paper reports is missing for Linf"),
    ('bad_reported', "--reported 'ninety'"),
    ('preview', 'evaluated 20 cifar10 test images, not the whole test split (10,000)'),
    ('long_tail', 'RobustBench has no long-tail leaderboard'),
    ('placeholder_paper', "still says 'TO FILL IN' for link, name, venue"),
    ('two_linf', 'are both Linf evaluations'),
    ('quoted_name', "holds letters, digits, '_', '-' and '.' only"),
    ('superscript_name', "holds letters, digits, '_', '-' and '.' only"),
])
def test_bundle_errors_write_nothing(preact, tmp_path, capsys, case, message):
    checkpoint, linf, _ = preact
    reports, extra = [linf], ['--authors', AUTHORS, '--reported', '40', '--preview']
    if case == 'small_cnn':
        checkpoint = _checkpoint(tmp_path, 'small_cnn_cifar')
        reports = [_report(checkpoint, tmp_path / 'eval')]
    elif case == 'no_eval':
        reports = []
    elif case == 'no_log':
        reports = [_report(checkpoint, tmp_path / 'eval', log=False)]
    elif case == 'digits':
        reports = [_report(checkpoint, tmp_path / 'eval', dataset='digits')]
    elif case == 'no_authors':
        extra = extra[2:]
    elif case == 'no_reported':
        extra = ['--authors', AUTHORS, '--preview']
    elif case == 'bad_reported':
        extra = ['--authors', AUTHORS, '--preview', '--reported', 'ninety']
    elif case == 'preview':
        extra = extra[:-1]
    elif case == 'long_tail':
        reports = [_report(checkpoint, tmp_path / 'eval', dataset='cifar10-lt')]
    elif case == 'placeholder_paper':  # the submitter's paper is not defaulted from the loss the model used
        report = json.loads(linf.read_text())
        for key in ('name', 'link', 'venue'):
            report['leaderboard'][key] = f'TO FILL IN: {key}'
        (tmp_path / 'eval').mkdir()
        (tmp_path / 'eval' / 'report.json').write_text(json.dumps(report))
        (tmp_path / 'eval' / 'autoattack.log').write_text('log')
        reports = [tmp_path / 'eval' / 'report.json']
    elif case == 'two_linf':
        reports = [linf, _report(checkpoint, tmp_path / 'eval-again')]
    elif case == 'quoted_name':  # would end the string literal in model_zoo_entry.py
        extra += ['--model-name', "O'Brien2023Word_PRN-18"]
    elif case == 'superscript_name':  # a \w character that no Python identifier may hold: the class name
        extra += ['--model-name', 'A\u00b22023Word_PRN-18']
    out = tmp_path / 'submission'
    assert _export(checkpoint, out, *reports, extra=extra) == 2
    err = capsys.readouterr().err
    assert err.startswith('sp-timm export: error: ') and message in err
    assert not out.exists() and not list(tmp_path.glob('.submission*'))


@pytest.mark.parametrize('bundle', [False, True], ids=['hub', 'robustbench'])
def test_an_export_that_fails_or_finds_new_files_while_built_changes_nothing(preact, tmp_path, monkeypatch, bundle):
    """Both exports build beside ``--out`` and check it again before replacing it: a file the user saved there
    meanwhile, or a failure half-way, leaves the earlier export as it was and no staging folder behind."""
    import sp_timm.export.folder as folder
    from sp_timm.errors import CheckpointError
    from sp_timm.export.hub import export_model
    from sp_timm.export.robustbench import Submission, export_robustbench
    checkpoint, linf, _ = preact

    def export(out):
        if bundle:
            return export_robustbench(str(checkpoint), out, [linf], Submission(model_name=NAME, authors=AUTHORS,
                                                                               reported=('40',), preview=True))
        return export_model(str(checkpoint), out, [linf])

    out = export(tmp_path / 'export')
    before = snapshot(out)
    real_files_in = folder._files_in

    def user_saves_a_file(folder):  # called when the new export is complete, to write its marker
        if folder != out:
            (out / 'results.csv').write_text('mine')
        return real_files_in(folder)

    monkeypatch.setattr(folder, '_files_in', user_saves_a_file)
    with pytest.raises(CheckpointError, match='results.csv'):
        export(out)
    assert snapshot(out) == dict(before, **{'results.csv': b'mine'})
    monkeypatch.setattr(folder, '_files_in', real_files_in)
    (out / 'results.csv').unlink()

    def no_space(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(folder, 'atomic_write_json', no_space)
    with pytest.raises(OSError, match='No space'):
        export(out)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ['export']


def test_push_is_refused_with_robustbench(preact, tmp_path, capsys):
    checkpoint, linf, _ = preact
    with pytest.raises(SystemExit) as exit_:
        _export(checkpoint, tmp_path / 'out', linf, extra=['--push', '--repo-id', 'me/x'])
    assert exit_.value.code == 2 and 'not pushed' in capsys.readouterr().err


def test_hub_export_refuses_two_reports_of_one_threat_model(preact, tmp_path, capsys):
    """Two Linf reports would both be eval/Linf.json: an error naming both, nothing written."""
    checkpoint, linf, l2 = preact
    again = _report(checkpoint, tmp_path / 'eval-4')
    out = tmp_path / 'export'
    assert cli_main(['export', '--checkpoint', str(checkpoint), '--out', str(out), '--eval', str(linf), '--eval',
                     str(again)]) == 2
    err = capsys.readouterr().err
    assert str(linf) in err and str(again) in err and 'both Linf' in err
    assert not out.exists()
    assert cli_main(['export', '--checkpoint', str(checkpoint), '--out', str(out), '--eval', str(linf), '--eval',
                     str(l2)]) == 0
    assert sorted(p.name for p in (out / 'eval').iterdir()) == ['L2.json', 'Linf.json']


def test_eval_writes_the_autoattack_log(tmp_path):
    """sp-timm eval writes AutoAttack's own log beside report.json; a rerun that restores every chunk keeps it."""
    checkpoint = _checkpoint(tmp_path, 'small_cnn_cifar', dataset='digits')
    out = tmp_path / 'eval'
    argv = ['eval', '--checkpoint', str(checkpoint), '--n-examples', '6', '--batch-size', '3', '--eps', '64/255',
            '--min-pert-examples', '0', '--out', str(out), '--no-progress']
    assert cli_main(argv) == 0
    log = (out / 'autoattack.log').read_text()
    report = json.loads((out / 'report.json').read_text())
    assert ('AutoAttack Linf eps 64/255, chunk 0 (points 0..2), seed 0, batch size 3' in log
            and 'chunk 1 (points 3..5)' in log)
    assert 'initial accuracy' in log and 'APGD-CE' in log and 'pyautoattack' in log
    assert (f"robust accuracy: {report['robust_acc']:.2f}%" in log
            and f"clean accuracy: {report['clean_acc']:.2f}%" in log)
    assert cli_main(argv) == 0
    assert (out / 'autoattack.log').read_text().split('\n', 1)[1] == log.split('\n', 1)[1]


# --- with robustbench's own code (the [robustbench] extra) ---------------------------------------------------------

def _robustbench_load(bundle: Path, name: str, threat_model: str = 'Linf') -> torch.nn.Module:
    """The bundle loaded as RobustBench's model zoo will: its zoo class in robustbench's namespace, its entry in
    model_dicts, robustbench.utils.load_model from the bundle's models/ (the .pt is there: nothing is downloaded)."""
    from sp_timm.compat import install_robustbench_compat
    install_robustbench_compat()
    import robustbench.model_zoo.cifar10 as zoo
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model
    namespace = dict(vars(zoo))
    exec(compile((bundle / ZOO_ENTRY_FILE).read_text(), ZOO_ENTRY_FILE, 'exec'), namespace)
    entry_name, entry = namespace[f'{threat_model.upper()}_ENTRY']
    assert entry_name == name
    zoo_dict = model_dicts[BenchmarkDataset.cifar_10][ThreatModel(threat_model)]
    zoo_dict[name] = entry
    try:
        return load_model(name, model_dir=str(bundle / 'models'), dataset='cifar10', threat_model=threat_model)
    finally:
        del zoo_dict[name]


@pytest.mark.robustbench
def test_bundle_loads_in_robustbench_with_the_same_logits(preact, tmp_path):
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    from robustbench.model_zoo.architectures.resnet import PreActResNet
    from robustbench.utils import ModelInfo
    import dataclasses
    checkpoint, linf, _ = preact
    out = tmp_path / 'submission'
    assert _export(checkpoint, out, linf, extra=['--authors', AUTHORS, '--reported', '40', '--preview']) == 0
    theirs = _robustbench_load(out, NAME)
    ours, _ = create_model_from_checkpoint(checkpoint)
    assert isinstance(theirs, PreActResNet) and not theirs.training
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5) and torch.equal(a.argmax(1), b.argmax(1))
    assert (a - b).abs().max() < 1e-3 * a.abs().max()  # (a wrong BN or layer would differ by far more)
    entry = json.loads((out / 'model_info' / 'cifar10' / 'Linf' / f'{NAME}.json').read_text())
    fields = {f.name for f in dataclasses.fields(ModelInfo)}
    info = ModelInfo(**{k: v for k, v in entry.items() if k in fields})
    assert info.authors == AUTHORS and info.autoattack_acc == '35.00' and info.architecture == 'PreActResNet-18'


@pytest.mark.robustbench
def test_wide_resnet_state_dict_loads_in_robustbench_wide_resnet():
    pytest.importorskip('robustbench', reason='needs the [robustbench] extra')
    from sp_timm.compat import install_robustbench_compat
    install_robustbench_compat()
    import robustbench.model_zoo.cifar10 as zoo
    model = _randomise_batchnorm(sp_timm.models.WideResNet(depth=16, widen_factor=2, num_classes=7))
    namespace = dict(vars(zoo))
    exec(zoo_entry_source('Me2026Word_WRN-16-2', model, ['Linf'], 'cifar10', 'test'), namespace)
    theirs = namespace['Me2026Word_WRN162Net']()
    theirs.load_state_dict(robustbench_state_dict(model), strict=True)
    theirs.eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), theirs(x)
    assert a.shape == (6, 7) and torch.allclose(a, b, rtol=1e-5, atol=1e-5)


# RobustBench's "New Model" issue template: every field line a maintainer reads, in its order
NEW_MODEL_TEMPLATE_LINES = ('# Paper Information', '- **Paper Title**:', '- **Paper URL**:', '- **Paper authors**:',
                            '# Leaderboard Claim(s)', '## Model 1', '- **Architecture**:', '- **Threat Model**:',
                            '- **eps**:', '- **Clean accuracy**:', '- **Robust accuracy**:', '- **Additional data**:',
                            '- **Evaluation method**:', '- **Checkpoint and code**:', '# Model Zoo:',
                            'I want to add my models to the Model Zoo (check if true)',
                            'I use an architecture that is **not** included among those',
                            'I agree to release my model(s) under MIT license (check if true) **OR**',
                            'I want my models to be released under a custom license, located here:')


@pytest.mark.slow
def test_tiny_run_goes_from_training_to_a_submission_with_no_hand_edits(tmp_path):
    """The README's path, every step through the CLI: train a PreAct-18 on a tiny local CIFAR-10 (the Hub schema),
    evaluate it, export the Hub folder, then the RobustBench bundle; nothing edited by hand in between. The entry is
    checked field by field against RobustBench's model_info JSON (keys, order, types) and the issue against its
    template; 4 points make it a preview, which the eval, the entry and the issue must all say."""
    from sp_timm.records import LEADERBOARD_FIELDS
    from test_data import make_cifar_like
    data = tmp_path / 'cifar10'
    for split, ds in make_cifar_like((48, 8)).items():
        data.mkdir(exist_ok=True)
        ds.to_parquet(str(data / f'{split}-00000-of-00001.parquet'))
    run = tmp_path / 'run'
    assert cli_main(['train', '--dataset', 'cifar10', '--data-dir', str(data), '--model', 'preact_resnet18_cifar',
                     '--epochs', '1', '--batch-size', '16', '--val-split', '16', '--no-aug', '--no-progress',
                     '--loss', 'sp_margin', '--clip-grad', '5', '--output', str(run)]) == 0
    evaluation = tmp_path / 'eval'
    common = ['--checkpoint', str(run / 'last'), '--data-dir', str(data), '--n-examples', '4', '--batch-size', '4',
              '--min-pert-norms', 'Linf', '--min-pert-examples', '2', '--fab-iters', '2', '--out', str(evaluation),
              '--no-progress', '--authors', 'Ada Lovelace', '--paper-title', 'Stationary margins for robust nets',
              '--link', 'https://example.org/paper', '--venue', 'ICML 2023', '--reported', '41.5']
    assert cli_main(['eval', *common]) == 0
    report = json.loads((evaluation / 'report.json').read_text())
    assert 'leaderboard' not in report and 'whole test split' in report['leaderboard_note']  # 4 of 8 points
    assert cli_main(['eval', *common, '--preview']) == 0  # reuses the saved chunks
    report = json.loads((evaluation / 'report.json').read_text())
    assert report['protocol']['full_test_split'] is False and report['protocol']['local_data'] is True
    assert cli_main(['export', '--checkpoint', str(run / 'last'), '--eval', str(evaluation / 'report.json'),
                     '--out', str(tmp_path / 'hub')]) == 0
    assert (tmp_path / 'hub' / 'model.safetensors').is_file() and (tmp_path / 'hub' / 'README.md').is_file()
    bundle = tmp_path / 'submission'
    submit = ['export', '--checkpoint', str(run / 'last'), '--eval', str(evaluation / 'report.json'), '--out',
              str(bundle), '--robustbench']  # --reported 41.5 was given to sp-timm eval
    assert cli_main(submit) == 2 and not bundle.exists()  # a preview is refused without its flag
    assert cli_main(submit + ['--preview']) == 0
    entries = list((bundle / 'model_info' / 'cifar10' / 'Linf').glob('*.json'))
    assert [e.stem for e in entries] == ['Lovelace2023Stationary_PreActResNet-18']
    entry = json.loads(entries[0].read_text())
    assert list(entry) == list(LEADERBOARD_FIELDS)  # RobustBench's keys in its order (no external: no audit)
    for key, kind in LEADERBOARD_FIELDS.items():
        assert isinstance(entry[key], kind), key
    assert entry['name'] == 'Stationary margins for robust nets' and entry['link'] == 'https://example.org/paper'
    assert entry['venue'] == 'ICML 2023' and entry['reported'] == '41.50' and entry['dataset'] == 'cifar10'
    assert (entry['clean_acc'] == f"{report['clean_acc']:.2f}"
            and entry['autoattack_acc'] == f"{report['robust_acc']:.2f}")
    assert entry['footnote'].startswith('Trained with the SP loss sp_margin') and 'sp-timm' not in entry['footnote']
    assert 'Preview: the first 4 cifar10 test images' in entry['footnote']
    assert 'Evaluated on a local copy of the test split' in entry['footnote']
    weights = torch.load(bundle / 'models' / 'cifar10' / 'Linf' / f'{entries[0].stem}.pt', weights_only=True)
    assert 'mu' in weights and 'sigma' in weights
    from sp_timm.files import public_text
    assert (bundle / 'autoattack-Linf.log').read_text() == public_text((evaluation / 'autoattack.log').read_text())
    texts = [p.read_text() for p in bundle.rglob('*') if p.suffix in ('.json', '.md', '.log', '.py')]
    assert len(texts) >= 4 and not any(str(tmp_path) in text for text in texts)  # no path of this machine
    issue = (bundle / 'new_model_issue.md').read_text()
    assert issue.startswith('<!-- title: [New Model] Lovelace2023Stationary_PreActResNet-18 -->')
    positions = [issue.find(line) for line in NEW_MODEL_TEMPLATE_LINES]
    assert -1 not in positions and positions == sorted(positions), dict(zip(NEW_MODEL_TEMPLATE_LINES, positions))
    assert '- **Dataset**: cifar10' in issue and 'PREVIEW: 4 points' in issue and 'a local copy of the test split' in \
        issue


def test_an_older_report_naming_the_sp_paper_as_the_models_paper_is_refused(preact, tmp_path, capsys):
    """Reports of an older sp-timm eval named the SP-losses paper as an SP model's paper by default: a submission
    from one needs the submitter's paper (the same title is accepted when given: that paper's own model)."""
    checkpoint, linf, _ = preact
    report = json.loads(linf.read_text())
    report['leaderboard'].update(name='Stationary Point Losses for Robust Model',
                                 link='https://arxiv.org/abs/2302.09575')  # what older reports held
    (tmp_path / 'eval').mkdir()
    (tmp_path / 'eval' / 'autoattack.log').write_text('log')
    linf = tmp_path / 'eval' / 'report.json'
    linf.write_text(json.dumps(report))
    out = tmp_path / 'submission'
    assert _export(checkpoint, out, linf, extra=['--authors', AUTHORS, '--reported', '40', '--preview']) == 2
    assert "names the SP-losses paper as this model's paper" in capsys.readouterr().err and not out.exists()
    assert _export(checkpoint, out, linf, extra=['--authors', AUTHORS, '--reported', '40', '--preview',
                                                 '--paper-title', 'Stationary Point Losses for Robust Model']) == 0
