""" SP logit penalty: cross-entropy plus an L2 penalty on the logits. """
import math
from typing import Optional, Tuple

import torch

from ._base import SPLoss, check_positive, take_classes
from ._registry import register_loss


@register_loss('sp_logit')
class SPLogitPenalty(SPLoss):
    """``l(z, y) = -log p_y + (lam / 2) ||z||^2``, gradient ``p - e_y + lam z``.

    Strictly convex in z, with the unique stationary point ``z* = (e_y - p(z*)) / lam``, so
    ``z*_y > 0 > z*_j``. It is symmetric and mean-zero; its margin ``m`` solves
    ``lam m (e^m + K - 1) = K`` (no closed form: found by bisection). Soft targets: ``CE(t) + (lam/2)||z||^2``.

    Args:
        lam: weight of the logit penalty, > 0.
        **kwargs: ``reduction``, ``smoothing``, ``fused``, ``validate``, ``compile`` of ``SPLoss``.
    """
    formula = 'CE(z, y) + (lam/2) ||z||^2'
    stationary_set = 'z = (e_y - p)/lam (unique)'

    def __init__(self, lam: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.lam = check_positive('lam', lam, ': with lam <= 0 the loss has no stationary point')

    def _losses(self, logits: torch.Tensor, log_probs: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        return 0.5 * self.lam * logits.square().sum(-1, keepdim=True) - take_classes(log_probs, index)

    def class_losses(self, logits: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        return self._losses(logits, logits.log_softmax(-1), index)

    def loss_and_grad(self, logits: torch.Tensor, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        log_probs = logits.log_softmax(-1)
        loss = self._losses(logits, log_probs, index).squeeze(-1)
        grad = log_probs.exp_().add_(logits, alpha=self.lam)
        grad.scatter_add_(-1, index, torch.full(index.shape, -1.0, dtype=grad.dtype, device=grad.device))
        return loss, grad

    def kernel_params(self) -> Tuple[str, float, float]:
        return 'sp_logit', self.lam, 0.0

    def _stationary_margin(self, num_classes: int) -> float:
        def excess(m: float) -> float:
            return self.lam * m * (math.exp(m) + num_classes - 1) - num_classes
        low, high = 0.0, 1.0
        while excess(high) < 0:
            low, high = high, 2.0 * high
        for _ in range(200):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if excess(mid) < 0 else (low, mid)
        return 0.5 * (low + high)
