""" Attack budgets: parsing ``8/255``, checking them against the threat model, writing them as RobustBench does. """
import argparse
import math
from typing import Any

__all__ = ['THREAT_MODELS', 'DEFAULT_EPS', 'parse_eps', 'check_eps', 'format_eps']

THREAT_MODELS = ('Linf', 'L2')
DEFAULT_EPS = {'Linf': 8 / 255, 'L2': 0.5}  # RobustBench's CIFAR budgets


def parse_eps(text: Any) -> float:
    """``0.5``, ``8/255`` -> float (the literature writes pixel budgets as fractions of 255)."""
    try:
        if '/' in str(text):
            num, den = str(text).split('/', 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or a fraction like 8/255") from None


def check_eps(eps: float, threat_model: str, input_dim: int = 3 * 32 * 32) -> float:
    """``eps`` if it is a usable budget for images in [0, 1]; a ``ValueError`` naming the fix otherwise.

    Linf: 0 < eps <= 1 (a larger budget is the classic ``8`` written for ``8/255``). L2: 0 < eps <= sqrt(d), the
    diameter of [0, 1]^d."""
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"threat model '{threat_model}' is not one of {', '.join(THREAT_MODELS)}.")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps)) or eps <= 0:
        raise ValueError(f'eps must be a positive number, got {eps!r}; RobustBench uses 8/255 (Linf) and 0.5 (L2).')
    if threat_model == 'Linf' and eps > 1:
        raise ValueError(f'Linf eps {eps:g} is larger than the whole [0, 1] pixel range: write {eps:g}/255, not {eps:g}.')
    if threat_model == 'L2' and eps > math.sqrt(input_dim):
        raise ValueError(f'L2 eps {eps:g} exceeds the diameter sqrt({input_dim}) = {math.sqrt(input_dim):.1f} of [0, 1] '
                         f'images; RobustBench uses 0.5.')
    return float(eps)


def format_eps(value: Any) -> str:
    """RobustBench's spelling: ``8/255`` for multiples of 1/255 below 1, ``0.5`` otherwise."""
    if isinstance(value, float) and 0 < value < 1 and abs(value * 255 - round(value * 255)) < 1e-6:
        return f'{round(value * 255)}/255'
    return f'{value:g}' if isinstance(value, float) else str(value)
