""" --model-ema (timm's ModelEmaV3): the decay schedule, validation and best on the EMA, saved and verified EMA
weights, eval and export use them by default and the raw ones on request, 2 processes equal 1. """
import shutil
import sys
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from sp_timm.cli.train import parse_train_args
from sp_timm.train import train
from conftest import SYNC_ATOL, SYNC_RTOL, last_weights, one_and_two_processes


EMA = ('--dataset digits --model small_cnn_cifar --train-examples 64 --batch-size 16 --val-examples 32 --no-aug '
       '--no-progress --lr 0.05 --loss ce --deterministic --epochs 2 --model-ema --model-ema-decay 0.9').split()


EMA_STEPS = 2 * (64 // 16)  # epochs x updates per epoch


def _ema_reference(snapshots: list, decay: float, warmup: bool) -> dict:
    """timm's schedule, computed here (float64): after update t (1-based), ema = d_t ema + (1 - d_t) w_t for every
    floating-point entry, integer buffers copied; d_t = 1 - (1 + (t - 1))^(-2/3) clipped to [0, decay] with warmup,
    else decay, and d_1 = 0 either way (timm's ``get_decay``: ``step - 1 <= 0`` -> 0)."""
    ema = None
    for t, weights in enumerate(snapshots, 1):
        d = 0.0 if t == 1 else (min(decay, 1 - t ** (-2 / 3)) if warmup else decay)
        if ema is None:
            ema = {k: v.double() if v.is_floating_point() else v.clone() for k, v in weights.items()}
            continue
        ema = {k: d * ema[k] + (1 - d) * v.double() if v.is_floating_point() else v.clone() for k, v in weights.items()}
    return ema


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


def _model_with(checkpoint: Path, filename: str) -> nn.Module:
    import json
    import timm
    record = json.loads((checkpoint / 'run.json').read_text())
    model = timm.create_model(record['model'], **record['model_args'])
    model.load_state_dict(load_file(str(checkpoint / filename)))
    return model.eval()


@pytest.fixture(scope='module')
def ema_run(tmp_path_factory) -> Path:
    return train(parse_train_args(EMA + ['--output', str(tmp_path_factory.mktemp('ema') / 'run')]))


def test_model_ema_flags_have_timms_names_and_defaults():
    args = parse_train_args(['--dataset', 'digits'])
    assert (args.model_ema, args.model_ema_decay, args.model_ema_warmup) == (False, 0.9998, False)  # timm train.py's
    args = parse_train_args(['--dataset', 'digits', '--model-ema', '--model-ema-decay', '0.999', '--model-ema-warmup'])
    assert (args.model_ema, args.model_ema_decay, args.model_ema_warmup) == (True, 0.999, True)


@pytest.mark.parametrize('decay', ['-0.1', '1.0', '1.5'])
def test_bad_model_ema_decay_is_a_clear_error(decay, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(['--dataset', 'digits', '--model-ema', '--model-ema-decay', decay])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'Traceback' not in err
    assert 'sp-timm train: error: --model-ema-decay must be in [0, 1)' in err and f'got {float(decay)}' in err


@pytest.mark.parametrize('warmup', [False, True])
def test_ema_weights_follow_timms_decay_schedule(tmp_path, monkeypatch, warmup):
    """The EMA saved after N updates equals the schedule computed independently from the weights after each update;
    the other schedule (warmup on/off) does not match, so the test tells them apart."""
    from timm.utils import ModelEmaV3
    snapshots, steps, update = [], [], ModelEmaV3.update

    def spy(self, model, step=None):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        steps.append(step)
        return update(self, model, step=step)

    monkeypatch.setattr(ModelEmaV3, 'update', spy)
    out = train(parse_train_args(EMA + ['--output', str(tmp_path / 'run')]
                                 + (['--model-ema-warmup'] if warmup else [])))
    assert len(snapshots) == EMA_STEPS and steps == list(range(1, EMA_STEPS + 1))  # timm: step = updates so far
    raw, ema = last_weights(out), load_file(str(out / 'last' / 'model_ema.safetensors'))
    assert all(torch.equal(snapshots[-1][k], raw[k]) for k in raw)  # the EMA followed the trained (unwrapped) model
    expected, other = _ema_reference(snapshots, 0.9, warmup), _ema_reference(snapshots, 0.9, not warmup)
    assert ema.keys() == expected.keys()
    for k in ema:
        if not ema[k].is_floating_point():  # num_batches_tracked: copied
            assert torch.equal(ema[k], expected[k]), k
            continue
        assert torch.allclose(ema[k].double(), expected[k], atol=1e-6, rtol=0), \
            (k, (ema[k].double() - expected[k]).abs().max())
    assert max((ema[k].double() - other[k]).abs().max().item() for k in ema if ema[k].is_floating_point()) > 1e-3
    assert max((ema[k] - raw[k]).abs().max().item() for k in ema if ema[k].is_floating_point()) > 1e-3


def test_ema_is_validated_recorded_and_picks_best(ema_run):
    import json
    from sp_timm.train import read_metrics
    rows = read_metrics(ema_run / 'metrics.jsonl')
    assert [r['epoch'] for r in rows] == [1, 2]
    assert all({'val_acc', 'val_loss', 'ema_val_acc', 'ema_val_loss'} <= set(r) for r in rows)
    assert rows[-1]['ema_val_loss'] != rows[-1]['val_loss']  # two different models were validated
    record = json.loads((ema_run / 'last' / 'run.json').read_text())
    assert record['model_ema']['decay'] == 0.9 and record['model_ema']['warmup'] is False
    assert record['model_ema']['implementation'] == 'timm.utils.ModelEmaV3' and record['config']['model_ema'] is True
    state = json.loads((ema_run / 'last' / 'state.json').read_text())
    assert set(state['sha256']) >= {'model.safetensors', 'model_ema.safetensors'}
    assert state['best_metric'] == max(r['ema_val_acc'] for r in rows)


def test_selection_metric_is_the_emas_when_on():
    from types import SimpleNamespace
    from sp_timm.train.trainer import Trainer
    metrics = {'val_acc': 50.0, 'val_adv_acc': 20.0, 'ema_val_acc': 40.0, 'ema_val_adv_acc': 30.0}
    assert Trainer._selection_metric(SimpleNamespace(model_ema=object()), metrics) == 30.0
    assert Trainer._selection_metric(SimpleNamespace(model_ema=None), metrics) == 20.0
    clean = {'val_acc': 50.0, 'ema_val_acc': 40.0}
    assert Trainer._selection_metric(SimpleNamespace(model_ema=object()), clean) == 40.0


def test_adversarial_training_validates_the_ema_with_pgd(tmp_path):
    from sp_timm.train import read_metrics
    out = train(parse_train_args(EMA + ['--epochs', '1', '--adv', 'pgd', '--adv-steps', '2', '--adv-val-examples', '16',
                                        '--output', str(tmp_path / 'run')]))
    row = read_metrics(out / 'metrics.jsonl')[0]
    assert {'val_adv_acc', 'ema_val_adv_acc'} <= set(row)


def test_resume_with_changed_ema_flags_is_refused(ema_run):
    from sp_timm.errors import CheckpointError
    before = {p: p.read_bytes() for p in ema_run.rglob('*') if p.is_file()}
    for flags, change in ((['--model-ema-decay', '0.99'], '--model-ema-decay 0.9 -> 0.99'),
                          (['--model-ema-warmup'], '--model-ema-warmup False -> True')):
        with pytest.raises(CheckpointError, match=change.replace('.', r'\.')):
            train(parse_train_args(EMA + flags + ['--epochs', '3', '--resume', str(ema_run)]))
    assert before == {p: p.read_bytes() for p in ema_run.rglob('*') if p.is_file()}


def test_load_model_gives_ema_weights_by_default_and_raw_on_request(ema_run, tmp_path):
    from sp_timm.errors import CheckpointError
    from sp_timm.model_source import load_model
    last = ema_run / 'last'
    ema_model, ema_record = load_model(str(last))
    raw_model, raw_record = load_model(str(last), weights='raw')
    assert (ema_record.weights, raw_record.weights) == ('ema', 'raw')
    assert torch.equal(_logits(ema_model), _logits(_model_with(last, 'model_ema.safetensors')))
    assert torch.equal(_logits(raw_model), _logits(_model_with(last, 'model.safetensors')))
    assert not torch.allclose(_logits(ema_model), _logits(raw_model), atol=1e-4)
    assert torch.equal(_logits(load_model(str(last), weights='ema')[0]), _logits(ema_model))
    plain = train(parse_train_args(EMA[:-3] + ['--epochs', '1', '--output', str(tmp_path / 'plain')]))  # no --model-ema
    assert load_model(str(plain / 'last'))[1].weights == 'raw'
    with pytest.raises(CheckpointError, match='no EMA weights'):
        load_model(str(plain / 'last'), weights='ema')


def test_tampered_ema_weights_are_refused(ema_run, tmp_path):
    from sp_timm.errors import CheckpointError
    from sp_timm.model_source import load_model
    copy = tmp_path / 'ckpt'
    shutil.copytree(ema_run / 'last', copy)
    data = bytearray((copy / 'model_ema.safetensors').read_bytes())
    data[-1] ^= 1
    (copy / 'model_ema.safetensors').write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='does not match the SHA-256'):
        load_model(str(copy))
    assert load_model(str(copy), weights='raw')[1].weights == 'raw'  # the raw weights are still intact
    (copy / 'model_ema.safetensors').unlink()
    with pytest.raises(CheckpointError, match='records EMA weights but model_ema.safetensors is missing'):
        load_model(str(copy))


def test_eval_uses_ema_weights_by_default_and_raw_on_request(ema_run, capsys):
    import json
    from sp_timm.model_source import load_model
    from sp_timm.checkpoint import weights_sha256
    from sp_timm.cli import main as cli_main
    flags = ['eval', '--checkpoint', str(ema_run / 'last'), '--n-examples', '4', '-b', '4', '--min-pert-examples', '0',
             '--no-progress']
    assert cli_main(flags) == 0
    assert cli_main(flags + ['--weights', 'raw']) == 0
    out = capsys.readouterr().out
    assert 'ema weights' in out and 'raw weights' in out
    folders = sorted((ema_run / 'eval').iterdir())
    assert [f.name for f in folders] == ['epoch-0002-eval-Linf-8_255', 'epoch-0002-eval-Linf-8_255-raw']
    reports = [json.loads((f / 'report.json').read_text())['model'] for f in folders]
    assert [r['weights'] for r in reports] == ['ema', 'raw']
    summaries = [(f / 'summary.md').read_text() for f in folders]
    assert ('EMA weights' in summaries[0] and 'trained (raw)' not in summaries[0]
            and 'trained (raw) weights' in summaries[1])
    assert reports[0]['weights_sha256'] == weights_sha256(_model_with(ema_run / 'last', 'model_ema.safetensors'))
    assert reports[1]['weights_sha256'] == weights_sha256(_model_with(ema_run / 'last', 'model.safetensors'))
    assert reports[0]['weights_sha256'] == weights_sha256(load_model(str(ema_run / 'last'))[0])


def test_export_uses_ema_weights_by_default_and_raw_on_request(ema_run, tmp_path, capsys):
    import json
    from sp_timm.errors import CheckpointError
    from sp_timm.model_source import load_model
    from sp_timm.cli import main as cli_main
    last = ema_run / 'last'
    assert cli_main(['export', '--checkpoint', str(last), '--out', str(tmp_path / 'ema')]) == 0
    assert cli_main(['export', '--checkpoint', str(last), '--out', str(tmp_path / 'raw'), '--weights', 'raw']) == 0
    out = capsys.readouterr().out
    assert '(ema weights)' in out and '(raw weights)' in out
    for name, filename in (('ema', 'model_ema.safetensors'), ('raw', 'model.safetensors')):
        folder = tmp_path / name
        assert json.loads((folder / 'sp_timm.json').read_text())['weights'] == name
        model, record = load_model(f'local-dir:{folder}')
        assert record.weights == name
        assert torch.equal(_logits(model), _logits(_model_with(last, filename)))
    card_ema, card_raw = (tmp_path / 'ema' / 'README.md').read_text(), (tmp_path / 'raw' / 'README.md').read_text()
    assert 'The weights are the **EMA weights** of the run' in card_ema and 'decay 0.9' in card_ema
    assert 'EMA weights' not in card_raw
    with pytest.raises(CheckpointError, match='holds the ema weights of its run only'):
        load_model(f'local-dir:{tmp_path / "ema"}', weights='raw')


@pytest.mark.slow
def test_two_processes_with_ema_match_one_process(tmp_path):
    """--model-ema under Accelerate with 2 CPU processes (gloo): each process updates its copy from the same
    parameters, the main process saves it; with --sync-bn (BatchNorm statistics of the global batch) the EMA weights
    equal those of 1 process x the global batch within --sync-bn's tolerance, and both EMA files exist."""
    if shutil.which('accelerate', path=str(Path(sys.executable).parent)) is None:
        pytest.skip('accelerate launcher not installed next to this interpreter')
    from sp_timm.train import read_metrics
    flags = EMA[:EMA.index('--batch-size')] + EMA[EMA.index('--batch-size') + 2:] + ['--model-ema-warmup']
    assert '--model-ema: timm ModelEmaV3' in one_and_two_processes(flags, tmp_path)
    a = load_file(str(tmp_path / 'one' / 'last' / 'model_ema.safetensors'))
    b = load_file(str(tmp_path / 'two' / 'last' / 'model_ema.safetensors'))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=SYNC_ATOL, rtol=SYNC_RTOL), \
            (k, (a[k].double() - b[k].double()).abs().max().item())
    rows_one, rows_two = (read_metrics(tmp_path / 'one' / 'metrics.jsonl'),
                          read_metrics(tmp_path / 'two' / 'metrics.jsonl'))
    for r1, r2 in zip(rows_one, rows_two):
        assert r1['ema_val_loss'] == pytest.approx(r2['ema_val_loss'], rel=1e-3)
