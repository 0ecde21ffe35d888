""" sp-timm train features of issue 14: --sync-bn (timm's meaning) and the timm Python API path
(timm.task.ClassificationTask with an SP criterion). Small: digits subsets, small_cnn_cifar / resnet20_cifar. """
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sp_timm.cli.train import parse_train_args
from sp_timm.train import train
from sp_timm.train.sync_batchnorm import convert_sync_batchnorm, CpuSyncBatchNorm

SMALL = ('--dataset digits --model small_cnn_cifar --train-examples 256 --val-examples 64 --no-aug --no-progress '
         '--lr 0.05 --loss ce --deterministic --weight-decay 0 --epochs 1').split()
CLI = [sys.executable, '-m', 'sp_timm']


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def _one_and_two_processes(flags, tmp_path: Path) -> str:
    """Train ``flags`` twice side by side: 1 process x batch 32 into ``tmp_path/one``, and 2 CPU processes (Accelerate,
    gloo) x batch 16 with --sync-bn into ``tmp_path/two``; both must succeed. Returns the 2-process run's stdout."""
    launcher = str(Path(sys.executable).parent / 'accelerate')
    one = subprocess.Popen(CLI + ['train', *flags, '--batch-size', '32', '--output', str(tmp_path / 'one')], env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    two = subprocess.run([launcher, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                          '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'sp_timm.train', *flags,
                          '--sync-bn', '--batch-size', '16', '--output', str(tmp_path / 'two')],
                         env=dict(_env(), ACCELERATE_USE_CPU='1'), capture_output=True, text=True, timeout=600)
    assert one.wait(timeout=600) == 0, one.stderr.read()[-2000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert '2 process(es) x batch 16 = global batch 32' in two.stdout
    return two.stdout


def _weights(folder: Path) -> dict:
    return load_file(str(folder / 'last' / 'model.safetensors'))


def _bn_stats(weights: dict) -> dict:
    return {k: v for k, v in weights.items() if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}


# ---------------------------------------------------------------------------------------------------- --sync-bn

def test_sync_bn_flag_defaults_off_and_parses():
    assert parse_train_args(['--dataset', 'digits']).sync_bn is False
    assert parse_train_args(['--dataset', 'digits', '--sync-bn']).sync_bn is True


def test_sync_bn_one_process_is_a_logged_no_op(tmp_path, capsys):
    plain = train(parse_train_args(SMALL + ['--output', str(tmp_path / 'plain')]))
    synced = train(parse_train_args(SMALL + ['--sync-bn', '--output', str(tmp_path / 'sync')]))
    out = capsys.readouterr().out
    assert '--sync-bn with one process' in out and 'nothing to synchronise' in out
    a, b = _weights(plain), _weights(synced)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical: nothing converted


def test_convert_keeps_parameters_and_state_dict_keys():
    import timm
    model = timm.create_model('small_cnn_cifar')
    keys = list(model.state_dict())
    params = [id(p) for p in model.parameters()]
    same, count = convert_sync_batchnorm(model, 1, torch.device('cpu'))
    assert same is model and count == 0 and not any(isinstance(m, CpuSyncBatchNorm) for m in model.modules())
    converted, count = convert_sync_batchnorm(model, 2, torch.device('cpu'))
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in timm.create_model('small_cnn_cifar').modules()) > 0
    assert list(converted.state_dict()) == keys and [id(p) for p in converted.parameters()] == params
    # on CPU: torch's SyncBatchNorm layers become the gloo form (DDP refuses SyncBatchNorm on CPU)
    assert all(not isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    # on a GPU device torch's own SyncBatchNorm is kept (conversion only; nothing runs here)
    gpu, _ = convert_sync_batchnorm(timm.create_model('small_cnn_cifar'), 2, torch.device('cuda', 0))
    assert any(type(m) is nn.SyncBatchNorm for m in gpu.modules())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _sync_bn_worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        full = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 1
        layer, _ = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)).double(), world, torch.device('cpu'))
        with torch.no_grad():
            layer[0].weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
            layer[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        x = full.chunk(world)[rank].clone().requires_grad_(True)
        out = layer(x)
        (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin()).sum().backward()
        torch.save({'out': out.detach(), 'grad_x': x.grad, 'grad_w': layer[0].weight.grad, 'grad_b': layer[0].bias.grad,
                    'state': layer.state_dict()}, f'{folder}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


def test_cpu_sync_bn_layer_equals_batchnorm_on_the_global_batch(tmp_path):
    """Forward, input gradient, parameter gradient (summed over processes, as DDP sums before averaging) and
    running statistics of 2 gloo processes x 4 images equal plain BatchNorm on the 8 images (float64)."""
    torch.multiprocessing.spawn(_sync_bn_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(2)]
    torch.manual_seed(0)
    full = (torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 1).requires_grad_(True)
    ref = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        ref.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    out = ref(full)
    halves = out.chunk(2)
    loss = sum((h * torch.arange(h.numel(), dtype=h.dtype).view_as(h).sin()).sum() for h in halves)
    loss.backward()
    for r, got in enumerate(ranks):
        assert torch.allclose(got['out'], halves[r].detach(), atol=1e-12)
        assert torch.allclose(got['grad_x'], full.grad.chunk(2)[r], atol=1e-12)
        for k, v in ref.state_dict().items():
            assert torch.allclose(got['state'][f'0.{k}'].double(), v.double(), atol=1e-12), k
    assert torch.allclose(ranks[0]['grad_w'] + ranks[1]['grad_w'], ref.weight.grad, atol=1e-12)
    assert torch.allclose(ranks[0]['grad_b'] + ranks[1]['grad_b'], ref.bias.grad, atol=1e-12)
    # the control: each process's own half (what BatchNorm does without --sync-bn) gives other statistics
    local = nn.BatchNorm2d(3).double()
    local(full.detach().chunk(2)[0])
    assert not torch.allclose(local.running_var, ref.running_var, atol=1e-3)


# measured on this box (1 epoch, 8 steps of global batch 32): --sync-bn matches 1 process to <= 3e-6 in every BN
# buffer; without --sync-bn the 2-process running statistics differ by 3e-3 .. 5e-2. Tolerance: atol 1e-4 + rtol 1e-3.
SYNC_ATOL, SYNC_RTOL = 1e-4, 1e-3


@pytest.mark.slow
def test_two_processes_with_sync_bn_match_one_process_batchnorm_statistics(tmp_path):
    if shutil.which('accelerate', path=str(Path(sys.executable).parent)) is None:
        pytest.skip('accelerate launcher not installed next to this interpreter')
    stdout = _one_and_two_processes(SMALL, tmp_path)
    assert 'BatchNorm layers synchronised over 2 processes' in stdout
    a, b = _bn_stats(_weights(tmp_path / 'one')), _bn_stats(_weights(tmp_path / 'two'))
    assert len(a) == 9 and a.keys() == b.keys()  # small_cnn_cifar: 3 BatchNorm layers x 3 buffers
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=SYNC_ATOL, rtol=SYNC_RTOL), \
            (k, (a[k].double() - b[k].double()).abs().max().item())
    assert int(b['conv_stem.1.num_batches_tracked']) == 8  # 256 images / global batch 32


# ------------------------------------------------------------------------------------------- timm Python API

def test_timm_task_classification_task_with_an_sp_criterion():
    task_module = pytest.importorskip('timm.task', reason='this timm has no timm.task (timm >= 1.0.31)')
    import timm
    import sp_timm
    torch.manual_seed(0)
    model = timm.create_model('resnet20_cifar', num_classes=4)
    criterion = sp_timm.create_classification_loss('sp_margin', sp_margin=1.0)
    task = task_module.ClassificationTask(model, criterion=criterion, verbose=False)
    assert task.criterion is criterion and task.get_trainable_module() is model
    x = torch.rand(16, 3, 32, 32)
    y = torch.arange(16) % 4
    x += y.view(-1, 1, 1, 1) * 0.2  # separable classes
    optimizer = torch.optim.SGD(task.parameters(), lr=0.01, momentum=0.9)
    task.train()
    losses = []
    for _ in range(8):
        result = task(x, y)
        assert set(result) >= {'loss', 'output'} and result['output'].shape == (16, 4)
        assert torch.allclose(result['loss'], criterion(result['output'], y))  # the SP criterion, not timm's default
        optimizer.zero_grad()
        result['loss'].backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 5.0)
        optimizer.step()
        losses.append(result['loss'].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] * 0.25, losses  # measured: 2.45 -> 0.06


# ------------------------------------------------------------------------------ --class-weight / --drw-epoch

SP_NAMES = ['sp_ce', 'sp_focal', 'sp_logit', 'sp_ls', 'sp_margin']


def test_balanced_and_effective_weights_match_their_formulas():
    from sp_timm.losses._class_weight import class_weights
    counts = [100, 10, 1, 0]  # a class without images gets weight 0
    n, k = 111, 4
    assert torch.allclose(class_weights(counts, 'balanced'), torch.tensor([n / (k * 100), n / (k * 10), n / k, 0.]))
    beta = 0.99
    raw = torch.tensor([(1 - beta) / (1 - beta ** c) for c in counts[:3]] + [0.], dtype=torch.float64)
    assert torch.allclose(class_weights(counts, 'effective', beta).double(), raw * k / raw.sum(), atol=1e-6)
    assert torch.allclose(class_weights([5, 5, 5], 'balanced'), torch.ones(3))
    assert torch.allclose(class_weights([5, 5, 5], 'effective', 0.9), torch.ones(3))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            class_weights(counts, 'effective', bad)


@pytest.mark.parametrize('name', ['ce', *SP_NAMES])
@pytest.mark.parametrize('soft', [False, True])
def test_weighted_loss_is_the_normalised_weighted_mean_and_off_is_the_plain_loss(name, soft):
    from sp_timm.losses import create_classification_loss
    from sp_timm.losses._class_weight import ClassWeightedLoss
    torch.manual_seed(0)
    z, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1, 1])
    t = (0.7 * nn.functional.one_hot(y, 4) + 0.3 * nn.functional.one_hot(y.roll(1), 4)).double() if soft else y
    make = lambda: create_classification_loss(name, soft_targets=soft)
    w = torch.tensor([0.5, 2.0, 1.0, 4.0])
    plain, weighted = make(), ClassWeightedLoss(make(), w, enabled=False)
    assert torch.allclose(weighted(z, t), plain(z, t), atol=1e-10)  # before --drw-epoch: the unweighted loss
    weighted.enabled = True
    per = torch.stack([plain(z[i:i + 1], t[i:i + 1]) for i in range(6)])  # one sample at a time: l(z_i, t_i)
    wi = t @ w.double() if soft else w.double()[y]
    assert torch.allclose(weighted(z, t), (wi * per).sum() / wi.sum(), atol=1e-10)
    assert not torch.allclose(weighted(z, t), plain(z, t), atol=1e-3)  # the weights matter here
    scaled = ClassWeightedLoss(make(), 10 * w)  # only the ratios of the weights count, as in cross_entropy(weight=)
    assert torch.allclose(scaled(z, t), weighted(z, t), atol=1e-10)
    if name == 'ce' and not soft:
        reference = nn.functional.cross_entropy(z, y, weight=w.double())
        assert torch.allclose(weighted(z, t), reference, atol=1e-10)


@pytest.mark.parametrize('name', SP_NAMES)
def test_weights_keep_an_sp_members_stationary_point_and_scale_its_gradient(name):
    from sp_timm.losses import create_classification_loss
    from sp_timm.losses._class_weight import ClassWeightedLoss
    k, label, w = 5, 2, torch.tensor([1.0, 1.0, 3.0, 1.0, 1.0])
    plain = create_classification_loss(name)
    weighted = ClassWeightedLoss(create_classification_loss(name), w)
    labels = torch.tensor([label, 0])  # weights 3 and 1: the first sample's gradient scales by 3 / (3 + 1)

    def grad(loss, z, z_other):
        z = z.clone().requires_grad_(True)
        loss(torch.stack([z, z_other]), labels).backward()
        return z.grad

    star, elsewhere = plain.stationary_point(k, label=label), torch.tensor([0.2, -0.1, 0.4, 0.0, 0.3])
    assert grad(weighted, star, elsewhere).abs().max() < 1e-6  # zero at the same point
    other = star + torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=star.dtype)
    g_plain, g_weighted = grad(plain, other, elsewhere), grad(weighted, other, elsewhere)  # plain: 1 / 2
    assert g_plain.abs().max() > 1e-4 and torch.allclose(g_weighted, 1.5 * g_plain, atol=1e-10)


@pytest.mark.parametrize('argv, message', [
    (['--class-weight-beta', '1.0'], r'--class-weight-beta must be in \[0, 1\)'),
    (['--class-weight', 'effective', '--class-weight-beta', '-0.5'], r'--class-weight-beta must be in \[0, 1\)'),
    (['--class-weight', 'balanced', '--epochs', '5', '--drw-epoch', '5'], r'--drw-epoch must be in \[1, --epochs - 1\]'),
    (['--class-weight', 'balanced', '--epochs', '5', '--drw-epoch', '0'], r'--drw-epoch must be in'),
    (['--drw-epoch', '2'], r'--drw-epoch defers class weights'),
    (['--class-weight', 'inverse'], r"invalid choice: 'inverse'"),
])
def test_bad_class_weight_flags_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_train_args(['--dataset', 'digits', *argv])
    import re
    assert re.search(message, capsys.readouterr().err)


def test_class_weight_on_a_balanced_training_set_is_allowed_and_logged(capsys):
    from types import SimpleNamespace
    from sp_timm.data import ImageData
    from sp_timm.losses import create_classification_loss
    from sp_timm.train.trainer import Trainer
    data = ImageData(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2]), ['a', 'b', 'c'], 'toy')
    fake = SimpleNamespace(config=parse_train_args(['--dataset', 'digits', '--class-weight', 'balanced']),
                           loss_fn=create_classification_loss('sp_ls'), accelerator=SimpleNamespace(device='cpu'),
                           main=True)
    loss, record = Trainer._class_weighting(fake, data, 3)
    assert torch.equal(loss.weight, torch.ones(3)) and loss.enabled
    assert 'on a balanced training set (2 images per class)' in capsys.readouterr().out
    assert record.weights == [1.0, 1.0, 1.0] and record.mode == 'balanced'


def test_drw_trains_unweighted_before_its_epoch_and_weighted_after(tmp_path, capsys):
    flags = ['--dataset', 'digits-lt', '--model', 'resnet20_cifar', '--batch-size', '32', '--train-examples', '192',
             '--val-examples', '32', '--no-aug', '--no-progress', '--lr', '0.05', '--loss', 'sp_ls', '--epochs', '2',
             '--deterministic']
    plain = train(parse_train_args(flags + ['--output', str(tmp_path / 'plain')]))
    drw = train(parse_train_args(flags + ['--class-weight', 'balanced', '--drw-epoch', '1',
                                          '--output', str(tmp_path / 'drw')]))
    assert 'class weights (balanced) on from epoch 2' in capsys.readouterr().out
    from sp_timm.train import read_metrics
    p, d = read_metrics(plain / 'metrics.jsonl'), read_metrics(drw / 'metrics.jsonl')
    assert d[0]['train_loss'] == pytest.approx(p[0]['train_loss'], rel=1e-5)  # epoch 1: the unweighted loss
    assert d[1]['train_loss'] != pytest.approx(p[1]['train_loss'], rel=1e-3)  # epoch 2: weighted
    import json
    record = json.loads((drw / 'last' / 'run.json').read_text())
    counts = record['class_weight']['class_counts']
    assert record['class_weight']['drw_epoch'] == 1 and len(set(counts)) > 1  # digits-lt: imbalanced
    n, k = sum(counts), len(counts)
    assert record['class_weight']['weights'] == pytest.approx([n / (k * c) if c else 0 for c in counts], rel=1e-5)


# ------------------------------------------------------------------------------------------------ --model-ema

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
    out = train(parse_train_args(EMA + ['--output', str(tmp_path / 'run')] + (['--model-ema-warmup'] if warmup else [])))
    assert len(snapshots) == EMA_STEPS and steps == list(range(1, EMA_STEPS + 1))  # timm: step = updates so far
    raw, ema = _weights(out), load_file(str(out / 'last' / 'model_ema.safetensors'))
    assert all(torch.equal(snapshots[-1][k], raw[k]) for k in raw)  # the EMA followed the trained (unwrapped) model
    expected, other = _ema_reference(snapshots, 0.9, warmup), _ema_reference(snapshots, 0.9, not warmup)
    assert ema.keys() == expected.keys()
    for k in ema:
        if not ema[k].is_floating_point():  # num_batches_tracked: copied
            assert torch.equal(ema[k], expected[k]), k
            continue
        assert torch.allclose(ema[k].double(), expected[k], atol=1e-6, rtol=0), (k, (ema[k].double() - expected[k]).abs().max())
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
    assert 'EMA weights' in summaries[0] and 'trained (raw)' not in summaries[0] and 'trained (raw) weights' in summaries[1]
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
    assert '--model-ema: timm ModelEmaV3' in _one_and_two_processes(flags, tmp_path)
    a = load_file(str(tmp_path / 'one' / 'last' / 'model_ema.safetensors'))
    b = load_file(str(tmp_path / 'two' / 'last' / 'model_ema.safetensors'))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=SYNC_ATOL, rtol=SYNC_RTOL), \
            (k, (a[k].double() - b[k].double()).abs().max().item())
    rows_one, rows_two = read_metrics(tmp_path / 'one' / 'metrics.jsonl'), read_metrics(tmp_path / 'two' / 'metrics.jsonl')
    for r1, r2 in zip(rows_one, rows_two):
        assert r1['ema_val_loss'] == pytest.approx(r2['ema_val_loss'], rel=1e-3)


def test_cifar10_pgdat_recipes_average_weights_and_the_demo_does_not():
    recipes = Path(__file__).resolve().parents[1] / 'recipes'
    for name in ('cifar10_wrn28_10_pgdat_ce', 'cifar10_wrn28_10_pgdat_sp'):
        args = parse_train_args(['--config', str(recipes / f'{name}.yaml')])
        assert args.model_ema is True and args.model_ema_decay == 0.999 and args.model_ema_warmup is False, name
    for name in ('digits_small_cnn_ce', 'digits_small_cnn_sp'):  # the demo's defaults are unchanged
        assert parse_train_args(['--config', str(recipes / f'{name}.yaml')]).model_ema is False
