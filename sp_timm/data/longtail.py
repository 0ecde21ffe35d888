""" Long-tailed subsampling exactly as LDAM-DRW's ``imbalance_cifar.py`` builds CIFAR-LT. """
from typing import Dict, List, Sequence

import numpy as np

__all__ = ['longtail_counts', 'longtail_indices', 'class_groups', 'IMBALANCE_PROFILES', 'GROUP_BOUNDS']

IMBALANCE_PROFILES = ('exp', 'step')
# Training images per class: many > 100, medium 20..100, few < 20 (Liu et al. 2019, used by LT reports).
GROUP_BOUNDS = {'many': (101, None), 'medium': (20, 100), 'few': (0, 19)}


def longtail_counts(n_max: int, num_classes: int, ratio: float, profile: str = 'exp') -> List[int]:
    """Training images kept per class.

    ``exp``: class ``i`` keeps ``int(n_max * (1/ratio) ** (i / (C - 1)))``; ``step``: the first ``C // 2``
    classes keep ``n_max``, the rest ``int(n_max / ratio)``. CIFAR-10 at ratio 100:
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50].
    """
    if profile not in IMBALANCE_PROFILES:
        raise ValueError(f"imbalance profile must be one of {IMBALANCE_PROFILES}, got {profile!r}.")
    if ratio < 1:
        raise ValueError(f'imbalance ratio must be >= 1 (n_max / n_min), got {ratio!r}.')
    if num_classes < 2:
        raise ValueError(f'need at least 2 classes, got {num_classes}.')
    factor = 1.0 / ratio
    if profile == 'exp':
        return [int(n_max * (factor ** (i / (num_classes - 1.0)))) for i in range(num_classes)]
    half = num_classes // 2
    return [int(n_max)] * half + [int(n_max * factor)] * (num_classes - half)


def longtail_indices(labels: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the kept images: per class in label order, a shuffle under numpy seed ``seed`` (LDAM-DRW
    uses 0), then the first ``counts[c]``."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    kept = []
    for cls, count in zip(np.unique(labels), counts):
        idx = np.where(labels == cls)[0]
        if count > len(idx):
            raise ValueError(f'class {cls} has {len(idx)} images, fewer than the {count} asked for.')
        rng.shuffle(idx)
        kept.append(idx[:count])
    return np.concatenate(kept)


def class_groups(train_counts: Sequence[int]) -> Dict[str, List[int]]:
    """Class indices in the many / medium / few-shot groups, from the training counts."""
    groups = {}
    for name, (low, high) in GROUP_BOUNDS.items():
        groups[name] = [c for c, n in enumerate(train_counts) if n >= low and (high is None or n <= high)]
    return groups
