""" Attack budgets: parsing ``8/255``, checking them against the threat model, and writing them: as RobustBench
does (``format_eps``), exactly enough to be parsed back to the same float (``exact_eps``), or at three significant
digits for tables and figures of measured distances (``format_budget``). Light: no torch. """
import argparse
import math
from typing import Any, Optional, Union

__all__ = ['THREAT_MODELS', 'DEFAULT_EPS', 'LINF_SCALE', 'parse_eps', 'check_eps', 'format_eps', 'exact_eps',
           'format_budget']

THREAT_MODELS = ('Linf', 'L2')
DEFAULT_EPS = {'Linf': 8 / 255, 'L2': 0.5}  # RobustBench's CIFAR budgets
LINF_SCALE = 255.0  # Linf budgets are written in units of 1/255 of the pixel range


def parse_eps(text: Any) -> float:
    """``0.5``, ``8/255`` -> float (the literature writes pixel budgets as fractions of 255)."""
    try:
        if '/' in str(text):
            num, den = str(text).split('/', 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or a fraction like 8/255") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number; budgets read like 8/255 or 0.5")
    return value


def check_eps(eps: float, threat_model: str, input_dim: int = 3 * 32 * 32) -> float:
    """``eps`` if it is a usable budget for images in [0, 1]; a ``ValueError`` naming the fix otherwise.

    Linf: 0 < eps <= 1 (a larger budget is the classic ``8`` written for ``8/255``). L2: 0 < eps <= sqrt(d), the
    diameter of [0, 1]^d."""
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"threat model '{threat_model}' is not one of {', '.join(THREAT_MODELS)}.")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps)) or eps <= 0:
        raise ValueError(f'eps must be a positive number, got {eps!r}; RobustBench uses 8/255 (Linf) and 0.5 (L2).')
    if threat_model == 'Linf' and eps > 1:
        raise ValueError(f'Linf eps {eps:g} is larger than the whole [0, 1] pixel range: write {eps:g}/255, not '
                         f'{eps:g}.')
    if threat_model == 'L2' and eps > math.sqrt(input_dim):
        raise ValueError(f'L2 eps {eps:g} exceeds the diameter sqrt({input_dim}) = {math.sqrt(input_dim):.1f} of [0, '
                         '1] images; RobustBench uses 0.5.')
    return float(eps)


def _multiple_of_255(value: Any, tolerance: float) -> Optional[int]:
    """``k`` when ``value`` is ``k / 255`` (within ``tolerance`` of a multiple, in units of 1/255), else None."""
    if not isinstance(value, float) or value <= 0:
        return None
    k = round(value * LINF_SCALE)
    return k if abs(value * LINF_SCALE - k) <= tolerance else None


def format_eps(value: Any) -> str:
    """RobustBench's spelling: ``8/255`` for multiples of 1/255 below 1, ``0.5`` otherwise."""
    k = _multiple_of_255(value, 1e-6) if isinstance(value, float) and value < 1 else None
    if k is not None:
        return f'{k}/255'
    return f'{value:g}' if isinstance(value, float) else str(value)


def exact_eps(value: Any) -> Union[str, Any]:
    """``'8/255'`` for a float that is exactly ``k / 255`` (as ``parse_eps('8/255')`` gives), else the value itself:
    what a configuration file writes, so that reading it back gives the same float."""
    k = _multiple_of_255(value, 0.0) if isinstance(value, float) and value <= 1 else None
    return f'{k}/255' if k is not None and k / LINF_SCALE == value else value


def format_budget(value: float, norm: str) -> str:
    """A measured budget (e.g. a median minimal perturbation) at three significant digits: ``2.43/255`` for Linf,
    ``0.5`` for L2."""
    if norm == 'Linf':
        return f'{value * LINF_SCALE:.3g}/255'
    return f'{value:.3g}'
