""" Mixup / CutMix through timm's ``Mixup``, which yields the soft targets every SP loss accepts. """
from typing import Optional

from timm.data import Mixup

__all__ = ['create_mixup']


def create_mixup(num_classes: int, mixup: float = 0.0, cutmix: float = 0.0, smoothing: float = 0.0,
                 prob: float = 1.0, switch_prob: float = 0.5, mode: str = 'batch') -> Optional[Mixup]:
    """timm's ``Mixup`` for the ``--mixup`` / ``--cutmix`` / ``--smoothing`` flags, or None when both alphas
    are 0 (then the loss sees class indices and applies ``smoothing`` itself). Batches must be even."""
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode=mode,
                 label_smoothing=smoothing, num_classes=num_classes)
