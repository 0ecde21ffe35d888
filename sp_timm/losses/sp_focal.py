""" SP focal: focal loss plus a linear term that puts its minimum at ``p*``. """
import math
from typing import Tuple

import torch

from ._base import SPProbLoss, check_open_interval, check_positive, symmetric_margin
from ._registry import register_loss


@register_loss('sp_focal')
class SPFocal(SPProbLoss):
    """``l(z, y) = -(1 - p_y)^gamma log p_y + c p_y`` with
    ``c = (1 - p*)^gamma / p* - gamma (1 - p*)^(gamma - 1) log p*``, the value that makes ``dl/dp_y = 0``
    at ``p_y = p*``.

    The focal term is convex in ``p_y``, so ``p*`` is its only stationary value; the stationary set is
    ``{p_y = p*}`` (correctly classified since ``p* > 1/2``), and the symmetric point reached from ``z = 0``
    has margin ``log(p* (K - 1)/(1 - p*))``. ``gamma = 0`` gives ``sp_ce``. ``(1 - p_y)^gamma`` is computed
    as ``exp(gamma log(1 - p_y))`` without cancellation. Soft targets: ``sum_k t_k l(z, k)``.

    Args:
        gamma: focusing parameter, >= 0.
        pstar: true-class probability at the stationary point, in (1/2, 1).
        **kwargs: ``reduction``, ``smoothing``, ``fused``, ``validate``, ``compile`` of ``SPLoss``.
    """
    formula = '-(1-p_y)^gamma log p_y + c p_y'
    stationary_set = 'p_y = p*'

    def __init__(self, gamma: float = 2.0, pstar: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.gamma = check_positive('gamma', gamma, '', allow_zero=True)
        self.pstar = check_open_interval('pstar', pstar, 0.5, 1.0, 'the stationary set must classify correctly (> '
                                                                   '1/2) and be finite (< 1)')
        q = 1.0 - self.pstar
        self.coef = q ** gamma / self.pstar - (gamma * q ** (gamma - 1) * math.log(self.pstar) if gamma else 0.0)

    def prob_loss(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        return self.coef * log_p.exp() - (self.gamma * log_1mp).exp() * log_p

    def prob_grad(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        # p (1 - p) h'(p) = gamma (1-p)^gamma p log p - (1-p)^(gamma+1) + c p (1-p)
        p, focal_weight = log_p.exp(), (self.gamma * log_1mp).exp()
        return self.gamma * focal_weight * p * log_p - focal_weight * log_1mp.exp() + self.coef * p * log_1mp.exp()

    def _stationary_margin(self, num_classes: int) -> float:
        return symmetric_margin(self.pstar, num_classes)

    def kernel_params(self) -> Tuple[str, float, float]:
        return 'sp_focal', self.gamma, self.coef
