""" Shared test helpers: tiny training runs on scikit-learn's digits (real data, no download, seconds on a CPU) as
typed ``TrainConfig``s, and evaluation reports built from ``evaluate_points`` results. The tests folder is on
``sys.path`` (pytest puts a conftest's folder there), so test modules import each other's helpers directly. """
from pathlib import Path
from typing import Any, Dict

import pytest

from sp_timm.records import TrainConfig

# a run of a few seconds: 64 training images, 32 validation images, one epoch, no augmentation, no progress bars
TINY: Dict[str, Any] = dict(dataset='digits', model='small_cnn_cifar', batch_size=32, train_examples=64, val_examples=32,
                            no_aug=True, no_progress=True, epochs=1)


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
    """A ``RunRecord`` with only what a test sets (the loss, its parameters, flags of its config); the rest plausible."""
    from sp_timm.records import RunRecord
    return RunRecord(model='small_cnn_cifar', model_args={'num_classes': 10}, num_classes=10,
                     classes=[str(c) for c in range(10)], dataset='digits', data_source='test', train_class_counts=[1] * 10,
                     split_class_counts=[1] * 10, class_groups={'many': list(range(10))}, group_rule='shots',
                     input_range=[0.0, 1.0], input_mean=None, input_std=None, loss=loss, loss_params=loss_params or {},
                     config=TrainConfig(dataset='digits', loss=loss, **config), num_processes=1, global_batch_size=32,
                     sp_timm_version='0', timm_version='0', torch_version='0')
