""" SP cross-entropy: cross-entropy plus a linear reward ceiling in ``p_y``. """
from typing import Tuple

import torch

from ._base import SPProbLoss, check_open_interval, symmetric_margin
from ._registry import register_loss


@register_loss('sp_ce')
class SPCrossEntropy(SPProbLoss):
    """``l(z, y) = -log p_y + p_y / p*``.

    A function of ``p_y`` alone with ``dl/dp_y = -1/p_y + 1/p*``: stationary on the whole set
    ``{p_y = p*}``, where every ``z`` classifies correctly because ``p* > 1/2``. Gradient descent from
    ``z = 0`` reaches its symmetric point, margin ``log(p* (K - 1)/(1 - p*))``; the smallest margin on the set
    is ``log(p*/(1 - p*))``. Soft targets: ``sum_k t_k (-log p_k + p_k / p*)``.

    Args:
        pstar: true-class probability at the stationary point, in (1/2, 1).
        **kwargs: ``reduction``, ``smoothing``, ``fused``, ``validate``, ``compile`` of ``SPLoss``.
    """
    formula = 'CE(z, y) + p_y / p*'
    stationary_set = 'p_y = p*'

    def __init__(self, pstar: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.pstar = check_open_interval('pstar', pstar, 0.5, 1.0, 'the stationary set must classify correctly (> '
                                                                   '1/2) and be finite (< 1)')

    def prob_loss(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        return log_p.exp() / self.pstar - log_p

    def prob_grad(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        return log_1mp.exp() * (log_p.exp() / self.pstar - 1.0)

    def _stationary_margin(self, num_classes: int) -> float:
        return symmetric_margin(self.pstar, num_classes)

    def kernel_params(self) -> Tuple[str, float, float]:
        return 'sp_ce', self.pstar, 0.0
