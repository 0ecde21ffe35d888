""" SP margin: a squared distance of the soft margin to a target margin. """
import math
from typing import Tuple

import torch

from ._base import SPProbLoss, check_positive
from ._registry import register_loss


@register_loss('sp_margin')
class SPMargin(SPProbLoss):
    """``l(z, y) = 1/2 (m_s - m*)^2`` with the soft margin ``m_s = z_y - logsumexp_{j != y} z_j
    = log(p_y / (1 - p_y))``.

    Stationary on ``{m_s = m*}`` = ``{p_y = sigmoid(m*)}``, all correctly classified since ``m* > 0``.
    The symmetric point (reached from ``z = 0``) has margin ``m* + log(K - 1)``. ``log(1 - p_y)`` is computed
    without cancellation, so the loss stays finite as ``p_y -> 1``. Soft targets: ``sum_k t_k l(z, k)``.

    Args:
        margin: the target soft margin ``m* > 0``.
        **kwargs: ``reduction``, ``smoothing``, ``fused``, ``validate``, ``compile`` of ``SPLoss``.
    """
    formula = '(1/2) (m_s - m*)^2, m_s = z_y - logsumexp_{j!=y} z_j'
    stationary_set = 'm_s = m*'

    def __init__(self, margin: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = check_positive('margin', margin, ': the stationary point must classify correctly')

    def prob_loss(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        return 0.5 * (log_p - log_1mp - self.margin).square()

    def prob_grad(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        return log_p - log_1mp - self.margin

    def _stationary_margin(self, num_classes: int) -> float:
        return self.margin + math.log(num_classes - 1)

    def kernel_params(self) -> Tuple[str, float, float]:
        return 'sp_margin', self.margin, 0.0
