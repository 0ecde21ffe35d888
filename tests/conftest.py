""" Shared test helpers: tiny training runs on scikit-learn's digits (real data, no download, seconds on a CPU) as
typed ``TrainConfig``s, and evaluation reports built from ``evaluate_points`` results. The tests folder is on
``sys.path`` (pytest puts a conftest's folder there), so test modules import each other's helpers directly. """
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from sp_timm.records import TrainConfig

# a run of a few seconds: 64 training images, 32 validation images, one epoch, no augmentation, no progress bars
TINY: Dict[str, Any] = dict(dataset='digits', model='small_cnn_cifar', batch_size=32, train_examples=64,
                            val_examples=32, no_aug=True, no_progress=True, epochs=1)


def tiny_config(**overrides: Any) -> TrainConfig:
    """``TINY`` with ``overrides`` (e.g. ``output=...``, ``loss='ce'``)."""
    return TrainConfig(**dict(TINY, **overrides))


def train_tiny(output: Path, **overrides: Any) -> Path:
    """Train a tiny run into ``output``; returns the run folder."""
    from sp_timm.train import train
    return train(tiny_config(output=str(output), **overrides))


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny sp_ls run, shared by the tests that only read it (copy it before changing anything)."""
    return train_tiny(tmp_path_factory.mktemp('tiny') / 'run', loss='sp_ls')


def toy_protocol(n: int, eps: float = 4 / 255, dataset: str = 'toy', threat_model: str = 'Linf'):
    """The protocol of an evaluation of ``n`` points (the settings tests do not vary filled in)."""
    from sp_timm.eval.config import STANDARD_ATTACKS
    from sp_timm.records import Protocol
    from sp_timm.threat.budget import format_eps
    return Protocol(dataset=dataset, split='test', threat_model=threat_model, eps=format_eps(eps), eps_value=eps,
                    n_examples=n, version='standard', attacks=list(STANDARD_ATTACKS), seed=0, batch_size=16,
                    chunk_size=16, num_processes=1, device='cpu', pyautoattack_version='0.2.0', fab_iters=100,
                    min_pert_examples=0, data_source='test points')


def toy_model(name: str = 'toy'):
    from sp_timm.records import EvaluatedModel
    return EvaluatedModel(name=name, source=None, weights_sha256=None, architecture=None, loss=None, loss_params=None,
                          adversarial_training=None, trained_on=None, weights=None)


def toy_report(result, labels, num_classes: int = 10, eps: float = 4 / 255, meta: Dict[str, Any] = None, **options):
    """``build_report`` of an ``evaluate_points`` result on toy points (``options``: ``long_tail``, ``protocol``)."""
    from sp_timm.eval.report import build_report
    protocol = options.pop('protocol', None) or toy_protocol(len(labels), eps)
    return build_report(result, labels, [str(c) for c in range(num_classes)], protocol=protocol, model=toy_model(),
                        warnings=result.warnings, model_name='toy', seconds=0.0, meta=meta or {}, **options)


def minimal_run(loss: str = 'ce', loss_params: Dict[str, Any] = None, **config: Any):
    """A ``RunRecord`` with only what a test sets (the loss, its parameters, flags of its config); the rest
    plausible."""
    from sp_timm.records import RunRecord
    return RunRecord(model='small_cnn_cifar', model_args={'num_classes': 10}, num_classes=10,
                     classes=[str(c) for c in range(10)], dataset='digits', data_source='test',
                     train_class_counts=[1] * 10, split_class_counts=[1] * 10,
                     class_groups={'many': list(range(10))}, group_rule='shots',
                     input_range=[0.0, 1.0], input_mean=None, input_std=None, loss=loss, loss_params=loss_params or {},
                     config=TrainConfig(dataset='digits', loss=loss, **config), num_processes=1, global_batch_size=32,
                     sp_timm_version='0', timm_version='0', torch_version='0')


# ---- shared by the tests of output folders, exports and errors ------------------------------------------------------
TINY_FLAGS = ('--dataset digits --batch-size 32 --train-examples 64 --val-examples 32 --no-aug --no-progress '
              '--epochs 1 --lr 0.05').split()


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (links as their target) with its bytes: equal snapshots = nothing touched."""
    import os
    return {p.relative_to(folder).as_posix(): (os.readlink(p) if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob('*')) if p.is_symlink() or p.is_file()}


def run_cli(argv, capsys) -> tuple:
    """``sp-timm ARGV`` in this process: (exit status, stderr); a traceback is a test failure."""
    from sp_timm.cli import main as cli_main
    capsys.readouterr()
    status = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    return status, err


def launch_env() -> Dict[str, str]:
    """The environment of a launched multi-process test run: one thread per process, unbuffered output."""
    import os
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')


CLI = [sys.executable, '-m', 'sp_timm']
# 1 process x batch 32 and 2 gloo processes x batch 16 agree to float32 reduction order, not bit for bit
SYNC_ATOL, SYNC_RTOL = 1e-4, 1e-3


def one_and_two_processes(flags, tmp_path: Path) -> str:
    """Train ``flags`` twice side by side: 1 process x batch 32 into ``tmp_path/one``, and 2 CPU processes (Accelerate,
    gloo) x batch 16 with --sync-bn into ``tmp_path/two``; both must succeed. Returns the 2-process run's stdout."""
    import subprocess
    launcher = str(Path(sys.executable).parent / 'accelerate')
    one = subprocess.Popen(CLI + ['train', *flags, '--batch-size', '32', '--output', str(tmp_path / 'one')],
                           env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    two = subprocess.run([launcher, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                          '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'sp_timm.train', *flags,
                          '--sync-bn', '--batch-size', '16', '--output', str(tmp_path / 'two')],
                         env=dict(launch_env(), ACCELERATE_USE_CPU='1'), capture_output=True, text=True, timeout=600)
    assert one.wait(timeout=600) == 0, one.stderr.read()[-2000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert '2 process(es) x batch 16 = global batch 32' in two.stdout
    return two.stdout


def last_weights(run_folder: Path) -> dict:
    """The model weights of a run's ``last`` checkpoint, as a name -> tensor dict."""
    from safetensors.torch import load_file
    return load_file(str(run_folder / 'last' / 'model.safetensors'))


@pytest.fixture(scope='session')
def run(tmp_path_factory) -> Path:
    """A tiny sp_ls run of small_cnn_cifar on digits (one epoch), shared: copy it before changing anything."""
    return train_tiny(tmp_path_factory.mktemp('run') / 'run', loss='sp_ls', lr=0.05)


@pytest.fixture(scope='session')
def plain_run(tmp_path_factory) -> Path:
    """A plain timm model (no normalisation inside), as the README's `--model resnet18` trains it."""
    return train_tiny(tmp_path_factory.mktemp('plain') / 'run', model='resnet18', num_classes=10, loss='ce', lr=0.05)


@pytest.fixture(scope='session')
def plain_report(plain_run, tmp_path_factory) -> Path:
    """A real sp-timm eval report of the plain model (4 points)."""
    from sp_timm.cli import main as cli_main
    out = tmp_path_factory.mktemp('eval') / 'eval'
    status = cli_main(['eval', '--checkpoint', str(plain_run / 'last'), '--n-examples', '4', '-b', '4',
                       '--min-pert-examples', '0', '--no-progress', '--out', str(out)])
    assert status == 0
    return out / 'report.json'
