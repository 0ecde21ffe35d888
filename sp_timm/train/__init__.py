""" ``sp-timm train``'s Python side: timm flags, Accelerate, SP losses, PGD-AT / TRADES, exact resume.

The names below load their modules (and torch) on first use: ``sp-timm train --help`` imports neither torch nor timm.
"""
from .._lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(('build_train_parser', 'parse_fraction', 'parse_train_args'), 'args'),
    **dict.fromkeys(('METRICS_FILE', 'read_metrics'), 'metrics'),
    'build_run_record': 'record',
    **dict.fromkeys(('Trainer', 'train', 'reseed'), 'trainer'),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
