""" CIFAR architectures in timm's registry; export in timm's Hub format with a model card; local-dir: and hf-hub:
loading; refusal of pickles and tampered files; push failures that keep the export. """
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
import yaml

import sp_timm  # noqa: F401  (registers the models)
from sp_timm.checkpoint import load_state_dict_safely, weights_sha256
from sp_timm.cli.train import parse_train_args
from sp_timm.errors import CheckpointError, HubError
from sp_timm.export.card import dataset_info, plain_timm_architecture, render_model_card
from sp_timm.export.hub import export_model, public_record, push_folder
from sp_timm.model_source import create_model_from_checkpoint, load_model, run_model_info
from sp_timm.models import CIFAR_MODELS
from sp_timm.records import (AuditSummary, ClassResult, EvalReport, LeaderboardEntry, StageAccuracy,
                             read_export_record_json, read_report_json, to_json)

from conftest import minimal_run, toy_model, toy_protocol, train_tiny
from conftest import run_cli
from conftest import snapshot

REPO = Path(__file__).resolve().parents[1]

# Millions of parameters, as published (WRN: Zagoruyko & Komodakis; PreActResNet-18: Rice et al.;
# ResNet-20/32: He et al.)
LITERATURE_PARAMS = {'wrn28_10_cifar': 36.5, 'wrn34_10_cifar': 46.2, 'wrn34_20_cifar': 184.5, 'wrn70_16_cifar': 266.8,
                     'preact_resnet18_cifar': 11.2, 'resnet20_cifar': 0.27, 'resnet32_cifar': 0.46,
                     'small_cnn_cifar': 0.0243}  # the last is sp-timm's own small network (its docstring)


@pytest.mark.parametrize('name', CIFAR_MODELS)
def test_parameter_counts_match_the_literature(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(LITERATURE_PARAMS[name], rel=0.01)
    assert name in timm.list_models('*cifar*')


def test_models_normalise_inside_and_follow_timm_interface():
    model = timm.create_model('resnet20_cifar', num_classes=7, input_mean=(0.5, 0.5, 0.5),
                              input_std=(0.25, 0.25, 0.25)).eval()
    x = torch.rand(3, 3, 32, 32)
    assert model(x).shape == (3, 7) and model.num_classes == 7
    assert model.pretrained_cfg['mean'] == (0.0, 0.0, 0.0) and model.pretrained_cfg['std'] == (1.0, 1.0, 1.0)
    assert torch.allclose(model.normalize(x), (x - 0.5) / 0.25)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (3, model.num_features)
    model.reset_classifier(4)
    assert model(x).shape == (3, 4)
    assert timm.create_model('wrn28_10_cifar', num_classes=100).fc.out_features == 100
    data_config = timm.data.resolve_data_config({}, model=model)
    assert data_config['input_size'] == (3, 32, 32) and data_config['mean'] == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match='6n \\+ 4'):
        sp_timm.models.WideResNet(depth=27)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'run'
    return train_tiny(out, dataset='digits-lt', imbalance_ratio=10, model='resnet20_cifar', train_examples=128,
                      loss='sp_ls', sp_pstar=0.85) / 'best'


def fake_report(info, weights_sha256=None, dataset='digits', threat_model='Linf', eps='8/255', n=32, audit=None):
    """An evaluation report of sp-timm eval's schema with made-up numbers (what the card and export read)."""
    run = info.run
    protocol = replace(toy_protocol(n, dataset=dataset, threat_model=threat_model), eps=eps)
    model = replace(toy_model('sp_ls digits'), weights_sha256=weights_sha256)
    per_class = [ClassResult(label=c, name=name, n=3, clean_acc=70.0, robust_acc=10.0, train_count=k, group='few')
                 for c, (name, k) in enumerate(zip(run.classes, run.train_class_counts))]
    entry = LeaderboardEntry(link='', name='sp_ls digits', authors='', additional_data=False, number_forward_passes=1,
                             dataset=dataset, venue='', architecture='ResNet-20', eps=eps, clean_acc='71.88',
                             reported='71.88', autoattack_acc='12.50', footnote='', unreliable=False)
    return EvalReport(protocol=protocol, model=model, n_points=n, clean_acc=71.88, robust_acc=12.5,
                      clean_ci=[54.6, 84.4], robust_ci=[4.9, 27.9],
                      stages=[StageAccuracy('clean', 71.88)], max_perturbation=0.0,
                      balanced_clean_acc=70.1, balanced_robust_acc=11.9, long_tailed=True, per_class=per_class,
                      eps_curve=[], warnings=[], unreliable=False, audit=audit, model_name='sp_ls digits', seconds=1.0,
                      leaderboard=entry)


def test_export_then_local_dir_gives_identical_logits(checkpoint, tmp_path):
    model, info = create_model_from_checkpoint(checkpoint)
    report_path = tmp_path / 'report.json'
    report_path.write_text(json.dumps(to_json(fake_report(info, weights_sha256(model)))))
    out = export_model(str(checkpoint), tmp_path / 'export', reports=[report_path], repo_id='me/sp-digits')
    assert {p.name for p in out.iterdir()} >= {'config.json', 'model.safetensors', 'README.md', 'sp_timm.json',
                                               'model_info'}
    assert not (out / 'pytorch_model.bin').exists()
    assert (out / 'model_info' / 'digits' / 'Linf' / 'sp_ls digits.json').is_file()
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    via_sp_timm, exported = load_model(f'local-dir:{out}')
    assert exported.run.loss_params == {'pstar': 0.85} and exported.weights == 'raw'
    assert exported.run == public_record(info.run) and exported.run.config.output == '<local path>/run'
    with torch.no_grad():
        assert torch.equal(via_sp_timm(x), model(x))


def test_model_card_front_matter_and_content(checkpoint, tmp_path):
    _, info = create_model_from_checkpoint(checkpoint)
    card = render_model_card(info, [fake_report(info)], repo_id='me/sp-digits')
    _, front, body = card.split('---\n', 2)
    meta = yaml.safe_load(front)
    assert meta['library_name'] == 'timm'
    assert {'adversarial-robustness', 'robustbench', 'sp-loss'} <= set(meta['tags'])
    metrics = {m['name']: m['value'] for m in meta['model-index'][0]['results'][0]['metrics']}
    assert metrics == {'clean accuracy': 71.88, 'AutoAttack accuracy (Linf, eps=8/255)': 12.5}
    assert 'pstar=0.85' in body and "timm.create_model('hf-hub:me/sp-digits'" in body and '2302.09575' in body
    assert '| 9 |' in body and 'per class' in body.lower()  # the long-tailed per-class table
    plain = render_model_card(info, [])
    assert 'model-index' not in plain and 'Not evaluated yet' in plain


def test_the_card_lists_class_weight_beta_only_where_it_acts():
    from sp_timm.export.card import _training_rows
    def flags(mode):
        return [row[0] for row in _training_rows({'class_weight': mode, 'class_weight_beta': 0.9999})]
    assert flags('none') == ['`--class-weight`'] and flags('balanced') == ['`--class-weight`']
    assert flags('effective') == ['`--class-weight`', '`--class-weight-beta`']


def test_committed_template_is_the_packaged_one():
    from sp_timm.export.card import CARD_TEMPLATE
    assert CARD_TEMPLATE.read_text() == (REPO / 'model_cards' / 'template.md').read_text()


def test_pickles_and_tampered_files_are_refused(checkpoint, tmp_path):
    model, _ = create_model_from_checkpoint(checkpoint)
    pickled = tmp_path / 'model.pth'
    torch.save(model, pickled)  # a whole pickled module: code would run on load
    with pytest.raises(CheckpointError, match='weights_only'):
        load_state_dict_safely(pickled)
    renamed = tmp_path / 'evil.safetensors'
    renamed.write_bytes(pickled.read_bytes())
    with pytest.raises(CheckpointError, match='not a valid safetensors'):
        load_state_dict_safely(renamed)
    export = export_model(str(checkpoint), tmp_path / 'export')
    (export / '.sp-timm-export.json').unlink()  # as on the Hub: no file list, so the weights themselves are checked
    (export / 'model.safetensors').write_bytes((export / 'model.safetensors').read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match='not a valid safetensors'):
        load_model(f'local-dir:{export}')
    with pytest.raises(CheckpointError, match='not an sp-timm checkpoint'):
        load_model(str(export))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('fc.')}
    from safetensors.torch import save_file
    save_file(state, str(export / 'model.safetensors'))
    with pytest.raises(Exception, match='fc'):
        load_model(f'local-dir:{export}')


def test_push_without_token_keeps_the_export(checkpoint, tmp_path, monkeypatch):
    export = export_model(str(checkpoint), tmp_path / 'export')
    before = sorted((p.name, p.stat().st_size) for p in export.iterdir())
    monkeypatch.delenv('HF_TOKEN', raising=False)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf-home'))
    monkeypatch.setattr('huggingface_hub.get_token', lambda: None)
    with pytest.raises(HubError, match='No Hugging Face token'):
        push_folder(export, 'me/sp-digits')
    assert sorted((p.name, p.stat().st_size) for p in export.iterdir()) == before


def test_push_offline_fails_clearly_and_keeps_the_export(checkpoint, tmp_path):
    export = export_model(str(checkpoint), tmp_path / 'export')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_TOKEN='hf_not_a_real_token', HF_HOME=str(tmp_path / 'hf-home'))
    result = subprocess.run([sys.executable, '-m', 'sp_timm', 'export', '--checkpoint', str(checkpoint), '--out',
                             str(export), '--push', '--repo-id', 'me/sp-digits'], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert 'failed' in result.stderr and 'is intact' in result.stderr
    assert (export / 'model.safetensors').is_file() and (export / 'README.md').is_file()


def test_hf_hub_loading_from_a_hub_cache(checkpoint, tmp_path):
    """hf-hub:ORG/NAME through timm and huggingface_hub for real, offline, from a cache laid out as the Hub's."""
    export = export_model(str(checkpoint), tmp_path / 'export')
    snapshot = tmp_path / 'hub' / 'models--me--sp-digits' / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    for name in ('config.json', 'model.safetensors', 'README.md', 'sp_timm.json'):
        (snapshot / name).write_bytes((export / name).read_bytes())
    (snapshot.parents[1] / 'refs').mkdir()
    (snapshot.parents[1] / 'refs' / 'main').write_text('0' * 40)
    code = ("import sp_timm, torch; from sp_timm.model_source import load_model; import timm\n"
            "m, rec = load_model('hf-hub:me/sp-digits'); "
            "t = timm.create_model('local-dir:%s', pretrained=True).eval()\n"
            "x = torch.rand(2, 3, 32, 32); print(torch.equal(m(x), t(x)), rec.run.loss)" % export)
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path / 'hub'))
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ['True', 'sp_ls']


CARDS = sorted((REPO / 'model_cards').glob('*.record.json'))


@pytest.mark.parametrize('record_path', CARDS, ids=lambda p: p.name.split('.')[0])
def test_committed_cards_match_what_export_writes(record_path):
    """model_cards/NAME.md is what `sp-timm export --out NAME` writes for the run record beside it."""
    name = record_path.name.split('.')[0]
    exported = read_export_record_json(json.loads(record_path.read_text()), str(record_path))  # an older record
    report_path = record_path.with_name(f'{name}.eval.json')
    reports = [read_report_json(json.loads(report_path.read_text()), str(report_path))] if report_path.exists() else []
    info = run_model_info(exported.run, name, exported.weights)
    assert render_model_card(info, reports, folder_name=name) == (REPO / 'model_cards' / f'{name}.md').read_text()


def test_demo_cards_are_committed_with_evaluations():
    names = {p.name.split('.')[0] for p in CARDS}
    assert names >= {'digits_small_cnn_ce', 'digits_small_cnn_sp', 'digits_lt_small_cnn_ce', 'digits_lt_small_cnn_sp'}
    assert all((REPO / 'model_cards' / f'{n}.eval.json').exists() for n in names)


# --- exact reproduction (train_args.yaml) and a complete model-index -------------------------------------------

def _without_unwritten(args):
    from sp_timm.export.card import TRAIN_ARGS_NOT_WRITTEN
    return {k: v for k, v in json.loads(json.dumps(args)).items() if k not in TRAIN_ARGS_NOT_WRITTEN}


@pytest.mark.parametrize('flags', [
    '--dataset cifar10 --adv pgd --adv-eps 8/255 --adv-step-size 0.0031 --clip-grad 5 --opt momentum --sched multistep '
    '--decay-milestones 30 60 --val-split 0.25 --model-kwargs drop_rate=0.1 global_pool=avg --seed 3',
    '--dataset digits-lt --imbalance-ratio 10 --imbalance-profile step --val-split 0 --adv trades --adv-norm L2 '
    '--adv-eps 0.5 --adv-step-size 0.1 --trades-beta 3 --lr 0.05 --amp --amp-dtype bfloat16 --weight-decay 1e-5',
    '--dataset cifar100 --val-split 500 --mixup 0.2 --cutmix 1.0 --torchcompile --warmup-epochs 5 --no-aug '
    '--no-progress --train-examples 1000 --model small_cnn_cifar --loss sp_focal --sp-gamma 2 --sp-pstar 0.8',
], ids=['pgd', 'trades-lt', 'mixup'])
def test_train_args_yaml_parses_back_to_the_same_arguments(flags, tmp_path, monkeypatch):
    from sp_timm.export.card import TRAIN_ARGS_FILE, train_args_yaml
    config = parse_train_args(flags.split() + ['--output', str(tmp_path / 'run')])
    info = run_model_info(replace(minimal_run(), config=config, model=config.model, dataset=config.dataset,
                                  loss=config.loss), 'run', 'raw')
    (tmp_path / TRAIN_ARGS_FILE).write_text(train_args_yaml(info))
    monkeypatch.chdir(tmp_path)
    again = parse_train_args(['--config', TRAIN_ARGS_FILE])
    assert _without_unwritten(again.to_json()) == _without_unwritten(config.to_json())
    assert again.output == '' and again.resume == ''
    text = (tmp_path / TRAIN_ARGS_FILE).read_text()
    assert 'output' not in yaml.safe_load(text) and 'no_progress' not in yaml.safe_load(text)
    if '--adv-eps 8/255' in flags:
        # exact k/255 as a fraction, others as floats
        assert 'adv_eps: 8/255' in text and 'adv_step_size: 0.0031' in text


def test_train_args_of_a_record_without_val_split_keep_test_validation():
    """A run recorded before --val-split existed validated on the test split: the upgraded record, its train_args
    and its card say val_split 0; a run that recorded auto keeps auto."""
    from sp_timm.export.card import train_config
    path = CARDS[0]
    older = json.loads(path.read_text())
    del older['args']['val_split']
    run = read_export_record_json(older, str(path)).run
    assert run.config.val_split == 0 and train_config(run)[0]['val_split'] == 0
    assert train_config(read_export_record_json(json.loads(path.read_text()), str(path)).run)[0]['val_split'] == 'auto'
    card = render_model_card(run_model_info(replace(run, config=replace(run.config, seed=0)), 'x', 'raw'))
    # 0 as a value, 0 as off
    assert '`--seed` | 0 |' in card and '`--val-split` | 0 |' in card and '`--smoothing`' not in card


def test_export_writes_train_args_that_reproduce_the_run(checkpoint, tmp_path, monkeypatch):
    from sp_timm.export.folder import EXPORT_MARKER
    from sp_timm.export.card import TRAIN_ARGS_FILE
    from sp_timm.files import sha256_file
    _, info = create_model_from_checkpoint(checkpoint)
    out = export_model(str(checkpoint), tmp_path / 'export')
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker['files'][TRAIN_ARGS_FILE] == sha256_file(out / TRAIN_ARGS_FILE)
    monkeypatch.chdir(out)
    again = parse_train_args(['--config', TRAIN_ARGS_FILE])
    assert _without_unwritten(again.to_json()) == _without_unwritten(info.run.config.to_json())
    card = (out / 'README.md').read_text()
    assert 'sp-timm train --config train_args.yaml' in card
    assert '`--imbalance-ratio` | 10 |' in card and '`--no-aug` | on |' in card and '`--sp-pstar` | 0.85 |' in card
    assert '--adv' not in card and '--trades' not in card  # a standard run: no inert adversarial flags
    monkeypatch.chdir(tmp_path)  # not from inside it: export refuses to replace the current folder
    assert export_model(str(checkpoint), out) == out  # an earlier export (train_args.yaml included) is replaced


def test_model_index_is_complete_with_audit_paper_and_license(checkpoint, tmp_path):
    _, info = create_model_from_checkpoint(checkpoint)
    audit = AuditSummary(config={}, attacked_points=3, attacks=[], skipped={}, autoattack_acc=12.5, robust_acc=10.0,
                         robust_ci=[3.5, 25.0], drop=2.5, broke_beyond_aa=1, threshold=1.0, checks={}, unreliable=True,
                         reasons=['a check failed'])
    report = fake_report(info, dataset='digits-lt', audit=audit)
    l2 = fake_report(info, dataset='digits-lt', threat_model='L2', eps='0.5', n=16)
    card = render_model_card(info, [report, l2], repo_id='me/sp-digits', license='mit')
    _, front, body = card.split('---\n', 2)
    meta = yaml.safe_load(front)
    assert meta['license'] == 'mit'
    results = meta['model-index'][0]['results']
    assert results
    for result in results:  # the balanced test split of digits (not on the Hub: no config), the imbalance in words
        assert result['dataset']['type'] == 'digits' and 'config' not in result['dataset']
        assert 'args' not in result['dataset'] and 'ratio-10 exp-profile long-tailed' in result['dataset']['name']
        for metric in result['metrics']:
            assert {'n_examples', 'threat_model', 'eps', 'audited'} <= set(metric['args'])
    metrics = {m['name']: m for r in results for m in r['metrics']}
    audited = metrics['audited robust accuracy (Linf, eps=8/255)']
    assert audited['value'] == 10.0 and audited['args']['audited'] is True and audited['args']['unreliable'] is True
    assert metrics['AutoAttack accuracy (L2, eps=0.5)']['args'] == {
        'n_examples': 16, 'threat_model': 'L2', 'eps': '0.5', 'audited': False, 'attack': 'AutoAttack standard',
        'unreliable': False}
    assert ('https://arxiv.org/abs/2302.09575' in body
            and '| audited robust accuracy (flagged unreliable) | 10.00 |' in body)
    assert yaml.safe_load(render_model_card(info, []).split('---\n', 2)[1])['license'] == 'apache-2.0'
    with pytest.raises(ValueError, match='licence'):
        export_model(str(checkpoint), tmp_path / 'bad', license='Apache 2.0')
    assert not (tmp_path / 'bad').exists()
    from sp_timm.cli.export import build_parser
    parser = build_parser()
    assert parser.parse_args(['--checkpoint', 'c', '--out', 'o']).license == 'apache-2.0'
    assert parser.parse_args(['--checkpoint', 'c', '--out', 'o', '--license', 'mit']).license == 'mit'
    assert 'MIT' in parser.format_help()


@pytest.mark.parametrize('record_path', CARDS, ids=lambda p: p.name.split('.')[0])
def test_committed_cards_reproduce_their_runs(record_path):
    """The committed cards: the run's configuration command, the flags that matter, no inert adversarial flags, and
    a model-index whose every result carries its config and every metric n, threat model and eps."""
    name = record_path.name.split('.')[0]
    args = json.loads(record_path.read_text())['args']
    card = (REPO / 'model_cards' / f'{name}.md').read_text()
    assert 'sp-timm train --config train_args.yaml' in card and '`--opt` |' in card
    assert ('`--clip-grad` |' in card) == (args.get('clip_grad') is not None)
    assert ('`--imbalance-ratio` |' in card) == args['dataset'].endswith('-lt')
    if args.get('adv', 'none') == 'none':
        assert '--adv' not in card
    meta = yaml.safe_load(card.split('---\n', 2)[1])
    dataset = dataset_info(args['dataset'])
    for result in meta['model-index'][0]['results']:
        assert result['dataset']['type'] == (dataset.hub_id or dataset.base) and 'args' not in result['dataset']
        assert result['dataset'].get('config') == dataset.hub_config
        assert all({'n_examples', 'threat_model', 'eps'} <= set(m.get('args', {})) for m in result['metrics'])


def _report_for(model_source: str, **changes) -> dict:
    """A minimal report in sp-timm eval's schema for the weights of ``model_source``."""
    from dataclasses import replace
    from sp_timm.records import to_json
    from test_hub import fake_report
    model, info = load_model(model_source)
    report = to_json(replace(fake_report(info, weights_sha256(model), n=4), model_name='tiny'))
    for key, value in changes.items():
        target = report
        *path, last = key.split('.')
        for part in path:
            target = target[part]
        target[last] = value
    return report


@pytest.mark.parametrize('field', ['leaderboard.dataset', 'model_name'])
def test_export_refuses_traversal_from_report_fields(run, tmp_path, capsys, field):
    report = tmp_path / 'work' / 'report.json'
    report.parent.mkdir()
    report.write_text(json.dumps(_report_for(str(run / 'last'), **{field: '../../../../escaped'})))
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', tmp_path / 'work' / 'export',
                           '--eval', report], capsys)
    assert status == 2 and 'escaped' in err and 'file name' in err
    assert not list(tmp_path.parent.rglob('escaped*')) and not (tmp_path / 'work' / 'export').exists()


def test_plain_timm_model_exports_evaluates_and_refuses_other_reports(plain_run, plain_report, run, tmp_path, capsys):
    report = json.loads(plain_report.read_text())
    model, _ = create_model_from_checkpoint(plain_run / 'last')
    assert report['model']['weights_sha256'] == weights_sha256(model)
    out = export_model(str(plain_run / 'last'), tmp_path / 'plain', reports=[plain_report])
    card = (out / 'README.md').read_text()
    assert 'uses them as they are' in card and 'AutoAttack accuracy' in card
    loaded, _ = load_model(f'local-dir:{out}')  # the export's weights have the same hash as the checkpoint's
    assert weights_sha256(loaded) == report['model']['weights_sha256']
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    before = snapshot(tmp_path)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', tmp_path / 'other', '--eval', plain_report],
                          capsys)
    assert status == 2 and 'evaluated other weights' in err and snapshot(tmp_path) == before


@pytest.mark.parametrize('content, message', [
    ('[1, 2]', 'JSON list'), ('{"clean_acc": 1}', 'not a report of sp-timm eval'), ('{not json', 'Cannot read'),
    (None, 'records no SHA-256'), ('no_eps', "protocol: Protocol field 'eps' is missing"),
    ('no_architecture', "leaderboard: LeaderboardEntry field 'architecture' is missing")])
def test_export_refuses_malformed_or_unverifiable_reports(run, tmp_path, capsys, content, message):
    report = tmp_path / 'report.json'
    if content in (None, 'no_eps', 'no_architecture'):  # a real report, one field removed
        data = _report_for(str(run / 'last'))
        del {None: data['model'], 'no_eps': data['protocol'], 'no_architecture': data['leaderboard']}[content][
            {None: 'weights_sha256', 'no_eps': 'eps', 'no_architecture': 'architecture'}[content]]
        content = json.dumps(data)
    report.write_text(content)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', tmp_path / 'out', '--eval', report], capsys)
    assert status == 2 and message in err and not (tmp_path / 'out').exists()


def test_export_of_a_plain_timm_model_publishes_the_preprocessing_it_was_trained_with(plain_run, tmp_path):
    """timm's convention (resolve_model_data_config + create_transform) on an export of a plain timm model trained on
    32 px [0, 1] digits gives the trained model's predictions, not ImageNet's 224 px normalised pipeline."""
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config
    from sp_timm.data import create_dataset
    out = export_model(str(plain_run / 'last'), tmp_path / 'export')
    cfg = json.loads((out / 'config.json').read_text())['pretrained_cfg']
    assert cfg['input_size'] == [3, 32, 32] and cfg['mean'] == [0.0] * 3 and cfg['std'] == [1.0] * 3
    assert cfg['crop_pct'] == 1.0 and not {'tag', 'paper_ids', 'origin_url', 'hf_hub_id', 'license'} & cfg.keys()
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model))
    test = create_dataset('digits', 'test')
    pixels = test.images[:100]  # uint8, as the files hold them
    pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in pixels]
    with torch.no_grad():
        direct = model(pixels.float() / 255).argmax(1)  # as sp-timm trained and evaluated it
        through_timm = model(torch.stack([transform(p) for p in pil])).argmax(1)
    assert (direct == through_timm).float().mean() >= 0.99


def test_export_of_a_cifar_network_keeps_its_own_pretrained_cfg(run, tmp_path):
    out = export_model(str(run / 'last'), tmp_path / 'export')
    cfg = json.loads((out / 'config.json').read_text())['pretrained_cfg']
    reference = timm.create_model('small_cnn_cifar').pretrained_cfg
    assert cfg['input_size'] == list(reference['input_size']) and cfg['license'] == reference['license']


# --- what a Hub folder publishes: no local path, how to install and load, the datasets, only measured claims ---------

def _text_files(folder: Path) -> dict:
    texts = {}
    for path in sorted(p for p in folder.rglob('*') if p.is_file()):
        try:
            texts[path.relative_to(folder).as_posix()] = path.read_text(encoding='utf-8')
        except UnicodeDecodeError:  # model.safetensors
            continue
    return texts


def test_export_names_no_path_of_the_machine(checkpoint, plain_run, plain_report, tmp_path, tmp_path_factory):
    """sp_timm.json, eval/<threat>.json, the leaderboard JSON, train_args.yaml and the card of a real evaluation's
    export, and of one whose report names local paths everywhere it can, hold no path of this machine."""
    model, info = create_model_from_checkpoint(checkpoint)
    audit = AuditSummary(config={}, attacked_points=3, attacks=[], skipped={}, autoattack_acc=12.5, robust_acc=10.0,
                         robust_ci=[3.5, 25.0], drop=2.5, broke_beyond_aa=1, threshold=1.0, checks={},
                         unreliable=False, reasons=[], surrogate=f'{plain_run / "last"} (raw weights)')
    report = fake_report(info, weights_sha256(model), audit=audit)
    report = replace(report, protocol=replace(report.protocol, data_source=f'{tmp_path / "data"} [first 32 images]'),
                     model=replace(report.model, source=str(checkpoint)),
                     warnings=[f"APGD-T on '{checkpoint}': the gradient vanished at {os.getcwd()}/x"])
    report_path = tmp_path / 'report.json'
    report_path.write_text(json.dumps(to_json(report)))
    exports = [export_model(str(checkpoint), tmp_path / 'export', reports=[report_path]),
               export_model(str(plain_run / 'last'), tmp_path / 'plain', reports=[plain_report])]
    local = {str(tmp_path_factory.getbasetemp()), str(tmp_path_factory.getbasetemp().resolve()), os.getcwd(),
             str(Path.cwd().resolve())}
    for out in exports:
        texts = _text_files(out)
        assert {'sp_timm.json', 'eval/Linf.json', 'README.md', 'train_args.yaml'} <= set(texts)
        assert not [(name, path) for name, text in texts.items() for path in local if path in text]
    exported = json.loads((exports[0] / 'eval' / 'Linf.json').read_text())
    assert exported['model']['source'] == '<local path>/best'
    assert exported['protocol']['data_source'] == '<local path>/data [first 32 images]'
    assert exported['audit']['surrogate'] == '<local path>/last (raw weights)'
    assert exported['warnings'] == ["APGD-T on '<local path>/best': the gradient vanished at <local path>/x"]
    _, reloaded = load_model(f'local-dir:{exports[1]}')  # the record still reads back
    assert reloaded.run.config.output == '<local path>/run' and reloaded.run.loss == 'ce'


def test_public_record_keeps_the_names_not_the_paths():
    """The run's folders (relative ones too) and a local data source keep their last component, so the card still
    asks for --data-dir; sources that name no local path (the Hub, scikit-learn) stay as they are."""
    from sp_timm.records import FlagChange
    run = replace(minimal_run(data_dir='/home/alice/data/cifar10', output='runs/wrn',
                              resume='/home/alice/runs/wrn/last', config='/home/alice/recipes/sp.yaml'),
                  data_source='/home/alice/data/cifar10 [minus 5000 validation images]',
                  args_history=[FlagChange(until_epoch=3, args={'data_dir': 'data/cifar10', 'lr': 0.1})])
    public = public_record(run)
    text = json.dumps(to_json(public))
    assert 'alice' not in text and 'runs/wrn' not in text and 'data/cifar10' not in text
    config = public.config
    assert (config.data_dir, config.output, config.resume, config.config) == (
        '<local path>/cifar10', '<local path>/wrn', '<local path>/last', '<local path>/sp.yaml')
    assert public.data_source == '<local path>/cifar10 [minus 5000 validation images]'
    assert public.args_history[0].args == {'data_dir': '<local path>/cifar10', 'lr': 0.1}
    assert '--data-dir /path/to/digits' in render_model_card(run_model_info(public, 'x', 'raw'))
    for source in ('uoft-cs/cifar10 [minus 5000 validation images]', 'sklearn.datasets.load_digits'):
        assert public_record(replace(run, data_source=source)).data_source == source
    assert public_record(public) == public


def _usage(card: str) -> str:
    return card.split('## How to use\n', 1)[1].split('\n## ', 1)[0]


def test_card_says_how_to_install_and_which_architectures_need_sp_timm(checkpoint, plain_run):
    """"How to use" starts with pip install sp-timm; a CIFAR architecture needs `import sp_timm` (plain timm fails with
    the error the card quotes), a timm architecture loads with plain timm."""
    _, cifar = create_model_from_checkpoint(checkpoint)
    _, plain = create_model_from_checkpoint(plain_run / 'last')
    assert [plain_timm_architecture(a) for a in (*CIFAR_MODELS, 'resnet18', 'resnet18.a1_in1k', 'no_such_net', None)
            ] == [False] * len(CIFAR_MODELS) + [True, True, False, False]
    usage = _usage(render_model_card(cifar, repo_id='me/sp-digits'))
    assert usage.lstrip().startswith('```bash\npip install sp-timm\n```')
    assert '`import sp_timm` registers' in usage and 'Unknown model (resnet20_cifar)' in usage
    assert 'plain timm' in usage.lower() and '`resnet18`' in usage
    plain_usage = _usage(render_model_card(plain, repo_id='me/plain'))
    assert plain_usage.lstrip().startswith('```bash\npip install sp-timm\n```')
    assert "`resnet18` is one of timm's own architectures: plain timm" in plain_usage
    assert 'Unknown model' not in plain_usage
    result = subprocess.run([sys.executable, '-c', "import timm; timm.create_model('resnet20_cifar')"],
                            capture_output=True, text=True)  # the error the card quotes, without sp_timm
    assert result.returncode != 0 and 'Unknown model (resnet20_cifar)' in result.stderr


@pytest.mark.parametrize('dataset, hub_id', [('cifar10-lt', 'uoft-cs/cifar10'), ('cifar100', 'uoft-cs/cifar100')])
def test_card_names_the_hub_dataset_and_the_balanced_test_split(dataset, hub_id):
    """The model-index names the Hub dataset and its load_dataset config; a long-tailed run's evaluation is on the
    balanced test split, so the imbalance goes in the dataset's name and the card's text, not in its args."""
    base = minimal_run(imbalance_ratio=100)
    run = replace(base, dataset=dataset, config=replace(base.config, dataset=dataset))
    info = run_model_info(run, 'x', 'raw')
    card = render_model_card(info, [fake_report(info, dataset=dataset)])
    _, front, body = card.split('---\n', 2)
    meta = yaml.safe_load(front)
    assert meta['datasets'] == [hub_id]
    name = ('CIFAR-10 (test split; model trained on the ratio-100 exp-profile long-tailed train split)'
            if dataset.endswith('-lt') else 'CIFAR-100')
    for result in meta['model-index'][0]['results']:
        ds = result['dataset']
        assert (ds['type'], ds['config'], ds['split'], ds['name']) == (hub_id, 'plain_text', 'test', name)
        assert 'args' not in ds
    if dataset.endswith('-lt'):
        assert 'the long-tailed training split of CIFAR-10 (imbalance ratio 100, exp profile)' in body
        assert 'images of the balanced test split' in body


@pytest.mark.parametrize('loss', ['ce', 'sp_ls'])
def test_card_cites_the_sp_paper_only_for_sp_models_and_claims_only_measurements(loss):
    card = render_model_card(run_model_info(minimal_run(loss), 'x', 'raw'))
    _, front, body = card.split('---\n', 2)
    sp = loss != 'ce'
    assert ('sp-loss' in yaml.safe_load(front)['tags']) == sp
    assert ('2302.09575' in card) == sp and ('Paper (the SP losses):' in body) == sp and ('@misc' in body) == sp
    assert ('baseline (not an SP loss) trained with sp-timm for comparison' in body) == (not sp)
    assert ('stationary point on the correct classification side' in body) == sp
    assert 'middle between classes' not in card and 'sharpening' not in card  # the paper's claim, not measured here


def test_card_says_when_an_evaluation_is_a_preview_of_local_data():
    """An evaluation of fewer points than the whole test split (sp-timm eval --preview) is no leaderboard result,
    and data read from --data-dir is a local copy: the card says both, as the entry's footnote and the issue do."""
    info = run_model_info(minimal_run('sp_ls'), 'x', 'raw')
    report = fake_report(info, dataset='cifar10')
    card = render_model_card(info, [report])
    assert 'A preview' not in card and 'local copy of the test' not in card  # not recorded (older report): no claim
    preview = replace(report, protocol=replace(report.protocol, full_test_split=False, local_data=True))
    card = render_model_card(info, [preview])
    assert 'on the first 32 test images (read from a local copy of the test split)' in card
    assert '**A preview**: not the whole test split, so not a leaderboard result.' in card
