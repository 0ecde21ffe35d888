""" Long-tailed subsampling exactly as LDAM-DRW's ``imbalance_cifar.py`` builds CIFAR-LT. """
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ['longtail_counts', 'longtail_indices', 'class_groups', 'group_rule', 'IMBALANCE_PROFILES', 'GROUP_BOUNDS',
           'GROUP_RULES']

IMBALANCE_PROFILES = ('exp', 'step')
# Training images per class: many > 100, medium 20..100, few < 20 (Liu et al. 2019, used by LT reports).
BALANCED_RATIO = 2.0  # max / min training images below which a dataset counts as balanced (one group)
GROUP_BOUNDS = {'many': (101, None), 'medium': (20, 100), 'few': (0, 19)}
THIRDS = ('head', 'middle', 'tail')
# how class_groups cuts the classes; the name and text go into every report that shows groups
GROUP_RULES = {
    'shots': 'many / medium / few shots: > 100, 20..100, < 20 training images (Liu et al. 2019)',
    'thirds': 'head / middle / tail: the classes sorted by training images (most first), the first and last '
              'floor(C/3) classes are head and tail, the rest middle (the shot thresholds leave a group empty here)',
}


def longtail_counts(n_max: int, num_classes: int, ratio: float, profile: str = 'exp') -> List[int]:
    """Training images kept per class.

    ``exp``: class ``i`` keeps ``int(n_max * (1/ratio) ** (i / (C - 1)))``; ``step``: the first ``C // 2``
    classes keep ``n_max``, the rest ``int(n_max / ratio)``. CIFAR-10 at ratio 100:
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50].
    """
    if profile not in IMBALANCE_PROFILES:
        raise ValueError(f"imbalance profile must be one of {IMBALANCE_PROFILES}, got {profile!r}.")
    if not np.isfinite(ratio) or ratio < 1:
        raise ValueError(f'imbalance ratio must be a number >= 1 (n_max / n_min), got {ratio!r}.')
    if num_classes < 2:
        raise ValueError(f'need at least 2 classes, got {num_classes}.')
    factor = 1.0 / ratio
    if profile == 'exp':
        counts = [int(n_max * (factor ** (i / (num_classes - 1.0)))) for i in range(num_classes)]
    else:
        half = num_classes // 2
        counts = [int(n_max)] * half + [int(n_max * factor)] * (num_classes - half)
    if min(counts) < 1:
        raise ValueError(f'imbalance ratio {ratio:g} leaves the smallest class no training image (it keeps '
                         f'int({n_max} / ratio), the largest class {n_max}): use a ratio below {n_max}.')
    return counts


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


def _shot_groups(train_counts: Sequence[int]) -> Dict[str, List[int]]:
    return {name: [c for c, n in enumerate(train_counts) if n >= low and (high is None or n <= high)]
            for name, (low, high) in GROUP_BOUNDS.items()}


def group_rule(train_counts: Sequence[int]) -> str:
    """The rule (a key of ``GROUP_RULES``) ``class_groups`` applies: the literature's shot thresholds
    ('shots'; CIFAR-100-LT at ratio 100: 35 / 35 / 30 classes) unless they leave a group empty on imbalanced counts
    ('thirds'; CIFAR-10-LT at ratio 100 has 8 / 2 / 0 classes by shots, 3 / 4 / 3 by thirds). Balanced counts keep
    'shots' (one group: thirds of nearly equal counts, max / min < 2, would be arbitrary)."""
    shots = _shot_groups(train_counts)
    balanced = max(train_counts) < BALANCED_RATIO * max(1, min(train_counts))  # e.g. digits: 121..127 per class
    return 'shots' if all(shots.values()) or balanced else 'thirds'


def class_groups(train_counts: Sequence[int], rule: Optional[str] = None) -> Dict[str, List[int]]:
    """Class indices per group, from the training counts: many / medium / few (rule 'shots') or head / middle /
    tail (rule 'thirds'); ``rule`` defaults to ``group_rule(train_counts)``."""
    rule = rule or group_rule(train_counts)
    if rule == 'shots':
        return _shot_groups(train_counts)
    if rule != 'thirds':
        raise ValueError(f"group rule must be one of {', '.join(GROUP_RULES)}, got {rule!r}.")
    order = sorted(range(len(train_counts)), key=lambda c: (-train_counts[c], c))
    third = len(order) // 3
    cuts = (order[:third], order[third:len(order) - third], order[len(order) - third:])
    return {name: sorted(members) for name, members in zip(THIRDS, cuts)}
