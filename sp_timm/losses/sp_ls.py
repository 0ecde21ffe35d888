""" SP label smoothing: cross-entropy against a target that stops at ``p*``. """
from typing import Optional, Tuple

import torch

from ._base import SPLoss, check_open_interval, symmetric_margin, take_classes
from ._registry import register_loss


@register_loss('sp_ls')
class SPLabelSmoothing(SPLoss):
    """``l(z, y) = -sum_k q_k log p_k`` with ``q = p* e_y + (1 - p*)/(K - 1) (1 - e_y)``.

    Gradient ``p - q``: zero exactly where ``p = q`` (up to a constant shift of z), with margin
    ``log(p* (K - 1) / (1 - p*)) > 0``. Convex in z. Soft targets: ``q(t) = p* t + (1 - p*)(1 - t)/(K - 1)``
    (sums to 1). Equivalent to timm's label smoothing ``s`` at ``p* = 1 - s + s/K`` (s = 0.2, K = 10: 0.82).

    Per class: ``l(z, k) = -(p* - r) log p_k - r sum_j log p_j`` with ``r = (1 - p*)/(K - 1)``. It is the function
    PyTorch computes as ``F.cross_entropy(label_smoothing=(1 - p*) K/(K - 1))``; the closed-form gradient
    ``p - q`` here runs faster than that path.

    Args:
        pstar: target probability of the true class at the stationary point, in (1/2, 1).
        **kwargs: ``reduction``, ``smoothing``, ``fused``, ``validate``, ``compile`` of ``SPLoss``.
    """
    formula = 'CE(z, q), q = p* e_y + (1-p*)/(K-1) (1-e_y)'
    stationary_set = 'p = q'

    def __init__(self, pstar: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.pstar = check_open_interval('pstar', pstar, 0.5, 1.0, 'the stationary point must classify correctly (> '
                                                                   '1/2) and be finite (< 1)')

    def _losses(self, log_probs: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        r = (1.0 - self.pstar) / (log_probs.shape[-1] - 1)
        return -(self.pstar - r) * take_classes(log_probs, index) - r * log_probs.sum(-1, keepdim=True)

    def class_losses(self, logits: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        return self._losses(logits.log_softmax(-1), index)

    def loss_and_grad(self, logits: torch.Tensor, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        log_probs = logits.log_softmax(-1)
        loss = self._losses(log_probs, index).squeeze(-1)
        r = (1.0 - self.pstar) / (logits.shape[-1] - 1)
        grad = log_probs.exp_().sub_(r)  # p - q
        grad.scatter_add_(-1, index, torch.full(index.shape, r - self.pstar, dtype=grad.dtype, device=grad.device))
        return loss, grad

    def _stationary_margin(self, num_classes: int) -> float:
        return symmetric_margin(self.pstar, num_classes)

    def kernel_params(self) -> Tuple[str, float, float]:
        return 'sp_ls', self.pstar, 0.0
