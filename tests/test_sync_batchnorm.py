""" --sync-bn (timm's meaning): BatchNorm statistics of the global batch over processes, through PyTorch's
SyncBatchNorm, and its CPU (gloo) form equal to BatchNorm on the whole batch. """
import shutil
import socket
import sys
from pathlib import Path
import pytest
import torch
from torch import nn
from sp_timm.cli.train import parse_train_args
from sp_timm.train import train
from sp_timm.train.sync_batchnorm import convert_sync_batchnorm, CpuSyncBatchNorm
from conftest import SYNC_ATOL, SYNC_RTOL, last_weights, one_and_two_processes


SMALL = ('--dataset digits --model small_cnn_cifar --train-examples 256 --val-examples 64 --no-aug --no-progress '
         '--lr 0.05 --loss ce --deterministic --weight-decay 0 --epochs 1').split()


def _bn_stats(weights: dict) -> dict:
    return {k: v for k, v in weights.items() if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}


def test_sync_bn_flag_defaults_off_and_parses():
    assert parse_train_args(['--dataset', 'digits']).sync_bn is False
    assert parse_train_args(['--dataset', 'digits', '--sync-bn']).sync_bn is True


def test_sync_bn_one_process_is_a_logged_no_op(tmp_path, capsys):
    plain = train(parse_train_args(SMALL + ['--output', str(tmp_path / 'plain')]))
    synced = train(parse_train_args(SMALL + ['--sync-bn', '--output', str(tmp_path / 'sync')]))
    out = capsys.readouterr().out
    assert '--sync-bn with one process' in out and 'nothing to synchronise' in out
    a, b = last_weights(plain), last_weights(synced)
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


@pytest.mark.slow
def test_two_processes_with_sync_bn_match_one_process_batchnorm_statistics(tmp_path):
    if shutil.which('accelerate', path=str(Path(sys.executable).parent)) is None:
        pytest.skip('accelerate launcher not installed next to this interpreter')
    stdout = one_and_two_processes(SMALL, tmp_path)
    assert 'BatchNorm layers synchronised over 2 processes' in stdout
    a, b = _bn_stats(last_weights(tmp_path / 'one')), _bn_stats(last_weights(tmp_path / 'two'))
    assert len(a) == 9 and a.keys() == b.keys()  # small_cnn_cifar: 3 BatchNorm layers x 3 buffers
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=SYNC_ATOL, rtol=SYNC_RTOL), \
            (k, (a[k].double() - b[k].double()).abs().max().item())
    assert int(b['conv_stem.1.num_batches_tracked']) == 8  # 256 images / global batch 32
