""" Logit adjustment (Menon et al. 2021) and balanced softmax (Ren et al. 2020): any single-label loss evaluated on
logits shifted by ``tau * log(prior)``, ``prior_k = n_k / N`` from the training images per class.

    l_LA(z, y) = l(z + tau * log(pi), y)

With ``l`` = cross-entropy and ``tau = 1`` this is the balanced softmax ``-log(n_y e^{z_y} / sum_j n_j e^{z_j})``
that AT-BSL (Yue et al. 2024) uses for adversarial training on long-tailed data. The shift is a constant, so
``grad_z l_LA(z, y) = (grad l)(z + tau log pi, y)``: an SP member keeps a stationary set, moved by ``-tau log pi``
(see ``LogitAdjustedLoss``). The adjustment belongs to the training loss only; the model, what is evaluated and
exported, is the plain network (its argmax is the adjusted-loss minimiser's balanced-error decision rule).
"""
import math
from typing import Optional, Sequence, Union

import torch
from torch import nn

__all__ = ['LogitAdjustedLoss', 'log_prior']


def log_prior(class_counts: Union[torch.Tensor, Sequence[float]]) -> torch.Tensor:
    """``log(n_k / N)`` per class (float32). A class without training images is given one image (its label never
    occurs in training, and the shift stays finite)."""
    counts = torch.as_tensor(list(class_counts) if not isinstance(class_counts, torch.Tensor) else class_counts,
                             dtype=torch.float64)
    if counts.dim() != 1 or len(counts) < 2:
        raise ValueError(f'class_counts must list the training images of each of >= 2 classes, got '
                         f'{list(counts.shape)} values.')
    if not torch.isfinite(counts).all() or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f'class_counts must be finite, >= 0 and not all 0, got {counts.tolist()}.')
    counts = counts.clamp_min(1)
    return (counts / counts.sum()).log().float()


class LogitAdjustedLoss(nn.Module):
    """``l(z + tau * log(pi), y)``: ``base`` (cross-entropy, its label-smoothing / soft-target forms, or an SP member)
    on logits shifted by the scaled log prior of the training classes.

    Stationary points: where ``base`` has the stationary set ``S`` (e.g. ``sp_margin``: soft margin ``m_s(z) = m*``),
    the adjusted loss has ``S - tau log pi``: ``m_s(z + tau log pi) = m*``. In raw logits a sample of class ``y``
    settles at a larger margin against head classes ``j`` (``pi_j > pi_y``) and a smaller one against tail classes,
    by ``tau log(pi_j / pi_y)`` -- the boundary moves towards the head classes, which is the point of the adjustment.
    For head-class samples it can sit on the wrong side of the raw boundary against a much rarer class (e.g. when
    ``m* < tau log(pi_y / pi_j)`` for two classes): the stationary point is on the correct side of the *adjusted*
    boundary, not always of the raw one.

    Args:
        base: the loss of the adjusted logits; its own reduction applies.
        class_counts: training images per class (the images actually trained on, after any validation split).
        tau: the scale of the shift (1: balanced softmax; 0: ``base`` unchanged).
    """

    def __init__(self, base: nn.Module, class_counts: Union[torch.Tensor, Sequence[float]], tau: float = 1.0):
        super().__init__()
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau >= 0):
            raise ValueError(f'logit adjustment tau must be a finite number >= 0 (1: balanced softmax), got {tau!r}.')
        self.base = base
        self.tau = float(tau)
        self.register_buffer('shift', self.tau * log_prior(class_counts))

    @property
    def num_classes(self) -> int:
        return len(self.shift)

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """``z + tau * log(pi)``; the number of classes must match the counts."""
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f'logit adjustment: the logits have {logits.shape[-1]} classes, the class counts '
                             f'{self.num_classes}.')
        return logits + self.shift.to(device=logits.device, dtype=logits.dtype)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base(self.adjust(logits), target)

    def stationary_point(self, num_classes: int, label: int = 0, dtype=torch.float64) -> Optional[torch.Tensor]:
        """A stationary point of the adjusted loss for ``label`` (class indices, no smoothing): the base member's
        ``stationary_point`` minus the shift; None when ``base`` has none (cross-entropy)."""
        point = getattr(self.base, 'stationary_point', None)
        if point is None:
            return None
        if num_classes != self.num_classes:
            raise ValueError(f'num_classes {num_classes} differs from the {self.num_classes} class counts.')
        return point(num_classes, label, dtype) - self.shift.to(dtype)

    def extra_repr(self) -> str:
        return f'tau={self.tau:g}, shift={[round(v, 4) for v in self.shift.tolist()]}'
