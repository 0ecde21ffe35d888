"""Loss registry, in the style of timm's model registry (``timm/models/_registry.py``).

A loss class is registered under a factory name with ``@register_loss('sp_ls')``; ``list_losses`` and
``create_loss`` (in ``_factory.py``) look names up here.
"""
import difflib
import fnmatch
from typing import Callable, Dict, List, Sequence, Type, TypeVar

import torch.nn as nn

__all__ = ['register_loss', 'list_registered', 'is_registered', 'get_loss_cls', 'unknown_name_error']

_LOSS_REGISTRY: Dict[str, Type[nn.Module]] = {}

LossT = TypeVar('LossT', bound=Type[nn.Module])


def register_loss(name: str) -> Callable[[LossT], LossT]:
    """Class decorator: register a loss ``nn.Module`` under ``name`` (also stored as ``cls.name``)."""
    def _register(cls: LossT) -> LossT:
        existing = _LOSS_REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"Loss name '{name}' is already registered to {existing.__qualname__}.")
        cls.name = name
        _LOSS_REGISTRY[name] = cls
        return cls
    return _register


def list_registered(pattern: str = '*') -> List[str]:
    """Registered names matching the shell-style ``pattern``, sorted."""
    return sorted(n for n in _LOSS_REGISTRY if fnmatch.fnmatch(n, pattern))


def is_registered(name: str) -> bool:
    return name in _LOSS_REGISTRY


def get_loss_cls(name: str) -> Type[nn.Module]:
    return _LOSS_REGISTRY[name]


def unknown_name_error(name: str, valid: Sequence[str]) -> ValueError:
    """A ValueError that lists the valid names and suggests the closest one."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ''
    return ValueError(f"Unknown loss '{name}'.{hint} Valid names: {', '.join(valid)}.")
