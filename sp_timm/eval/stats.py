""" Accuracy with confidence intervals, per class, per many / medium / few-shot group, and paired comparisons. """
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ['accuracy_ci', 'mean_ci', 'per_class_accuracy', 'group_accuracy', 'balanced_accuracy', 'paired_test',
           'CONFIDENCE']

CONFIDENCE = 0.95


def accuracy_ci(correct: int, total: int, confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of an accuracy, in percent. It never undercovers, which matters
    for the small test sets (a few hundred points) robustness claims are often made on."""
    from scipy.stats import binomtest
    if total <= 0:
        raise ValueError('an accuracy needs at least one point.')
    interval = binomtest(int(correct), int(total)).proportion_ci(confidence, method='exact')
    return 100 * interval.low, 100 * interval.high


def mean_ci(values: Sequence[Optional[float]], confidence: float = CONFIDENCE) -> Tuple[Optional[float],
                                                                                        Optional[float]]:
    """Mean over seeds and the half-width of its Student-t interval, ``t_{(1+c)/2, n-1} s / sqrt(n)`` (``s`` the
    sample standard deviation of the n values); None entries are skipped. ``(None, None)`` without values, and
    no half-width for a single value (one seed says nothing about the spread)."""
    from scipy.stats import t
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def per_class_accuracy(correct: torch.Tensor, labels: torch.Tensor, num_classes: int) -> List[Optional[float]]:
    """Accuracy (percent) of each class over the evaluated points; None for a class with no point."""
    hits = torch.bincount(labels[correct.bool()], minlength=num_classes).double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    return [100 * (h / c).item() if c > 0 else None for h, c in zip(hits, counts)]


def balanced_accuracy(per_class: Sequence[Optional[float]]) -> float:
    """Mean of the per-class accuracies (classes with points): the accuracy of a balanced test set."""
    present = [a for a in per_class if a is not None]
    return sum(present) / len(present)


def group_accuracy(per_class: Sequence[Optional[float]], groups: Dict[str, Sequence[int]]) -> Dict[str,
                                                                                                   Optional[float]]:
    """Mean per-class accuracy of each class group (e.g. many / medium / few-shot by training images)."""
    result = {}
    for name, members in groups.items():
        values = [per_class[c] for c in members if per_class[c] is not None]
        result[name] = sum(values) / len(values) if values else None
    return result


def paired_test(correct_a: torch.Tensor, correct_b: torch.Tensor) -> Dict[str, float]:
    """McNemar's exact test of two models on the same points: ``b`` counts points only A gets right, ``c`` points
    only B gets right; under H0 (equal accuracy) b ~ Binomial(b + c, 1/2). Returns b, c and the two-sided p-value."""
    from scipy.stats import binomtest
    a, b_ = correct_a.bool(), correct_b.bool()
    only_a, only_b = int((a & ~b_).sum()), int((~a & b_).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {'only_first': only_a, 'only_second': only_b, 'p_value': float(p)}
