""" Training: ``train(TrainConfig(...))`` runs one plain loop through Accelerate (timm's model, optimizer and
scheduler factories, sp_timm's losses, PGD-AT / TRADES, exact resume); ``sp-timm train`` is its command line.

The names below load their modules (and torch) on first use.
"""
from .._lazy import lazy_attributes
from ..records import TrainConfig  # the config of a run: light (no torch)

_NAMES = {
    'check_train_config': 'config',
    **dict.fromkeys(('METRICS_FILE', 'read_metrics'), 'metrics'),
    'build_run_record': 'record',
    **dict.fromkeys(('Trainer', 'train', 'reseed'), 'trainer'),
}
__all__ = sorted(_NAMES) + ['TrainConfig']
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
