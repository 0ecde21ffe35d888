""" ``sp-timm train``: timm flags, Accelerate, SP losses, PGD-AT / TRADES, exact resume.

The names below load their modules (and torch) on first use: ``sp-timm train --help`` imports neither torch nor timm.
"""
from typing import Optional, Sequence

from .._lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(('pgd_attack', 'project', 'trades_attack', 'trades_kl'), 'adversary'),
    **dict.fromkeys(('build_train_parser', 'parse_fraction', 'parse_train_args'), 'args'),
    **dict.fromkeys(('METRICS_FILE', 'build_run_record', 'read_metrics', 'train'), 'loop'),
}
__all__ = sorted(_NAMES) + ['main']
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``sp-timm train ...`` and ``accelerate launch -m sp_timm.train ...``: the flags are parsed (``--help``
    answered) before torch is imported."""
    from .._cli_utils import run_reporting_errors
    from .args import parse_train_args
    args = parse_train_args(argv)
    from .loop import train
    return run_reporting_errors('sp-timm train', train, args)
