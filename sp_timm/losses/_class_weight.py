""" Class re-weighting for every training loss of sp-timm (``sp-timm train --class-weight``, ``--drw-epoch``).

A class weight is a per-sample weight on the member's loss, and the batch loss is the weighted mean
``sum_i w_i l(z_i, y_i) / sum_i w_i`` with ``w_i = w[y_i]`` -- PyTorch's ``cross_entropy(weight=w)`` reduction, the one
LDAM-DRW's CE-DRW uses; with soft targets t (Mixup / CutMix, smoothing) the sample's weight is the target-expected
one, ``w_i = w . t_i``, on the member's soft-target loss. So the gradient of every sample is its unweighted gradient
times a positive constant ``w_i / sum_j w_j``: an SP member keeps its stationary point (the gradient is zero at the
same logits), only scaled. Dividing by ``sum_i w_i`` rather than the batch size keeps the loss's scale (and the
step size) that of the plain mean: ``effective`` weights sum to K over classes, so on a long-tailed batch their
per-sample mean is far below 1 (0.14 on digits-lt) and a plain mean would shrink every step by that much.
Weights off (before ``--drw-epoch``): the plain mean, the unweighted loss. With several processes each normalises
by its own batch's weights (as PyTorch's weighted cross-entropy under DDP).
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['CLASS_WEIGHT_MODES', 'CLASS_WEIGHT_REDUCTION', 'class_weights', 'ClassWeightedLoss', 'earlier_reduction',
           'per_sample_loss', 'PerSampleCrossEntropy']

CLASS_WEIGHT_MODES = ('none', 'balanced', 'effective')
# the run record's name for the batch loss (earlier: mean_i w_i l_i)
CLASS_WEIGHT_REDUCTION = 'sum_i w_i l_i / sum_i w_i'


def earlier_reduction(record: dict) -> Optional[str]:
    """The batch loss a run record's class weights trained with when it is not today's (``CLASS_WEIGHT_REDUCTION``):
    records from before the weighted mean name none, and trained with ``mean_i w_i l_i``. None: no class weights,
    or today's reduction."""
    weighting = record.get('class_weight')
    if not weighting or weighting.get('reduction') == CLASS_WEIGHT_REDUCTION:
        return None
    return weighting.get('reduction', 'mean_i w_i l_i')


def class_weights(counts: Sequence[int], mode: str, beta: float = 0.9999) -> torch.Tensor:
    """Per-class weights from the training images per class.

    balanced: inverse frequency ``N / (K n_k)`` (the count-weighted mean weight is 1).
    effective: Cui et al. 2019's inverse effective number ``(1 - beta) / (1 - beta^n_k)``, normalised to sum to K.
    A class without training images gets weight 0 (it never appears as a label).

    timm >= 1.0.31's ``compute_class_weights`` ('inv_freq', 'effective_num') gives these weights up to the
    normalisation (a class mean of 1), but weighs an empty class as one image and rejects ``beta = 0``; the formulas
    stay so that every timm version gives the same float32 weights (timm's, rescaled, differ in the last bit)."""
    if mode not in CLASS_WEIGHT_MODES[1:]:
        raise ValueError(f"class weight mode must be one of {CLASS_WEIGHT_MODES[1:]}, got {mode!r}.")
    if not 0 <= beta < 1:
        raise ValueError(f'class weight beta must be in [0, 1), got {beta}.')
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    present = n > 0
    weights = torch.zeros_like(n)
    if mode == 'balanced':
        weights[present] = n.sum() / (len(n) * n[present])
    else:
        weights[present] = (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), n[present]))
        weights = weights * len(n) / weights.sum()
    return weights.float()


def per_sample_loss(loss: nn.Module) -> nn.Module:
    """The per-sample (unreduced) form of a training loss of ``create_classification_loss``: SP members through
    ``reduction='none'``; timm's cross-entropy forms (plain, label smoothing, soft targets) by their formula.
    Other timm losses have no per-sample form here: ValueError."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from ._base import SPLoss
    if isinstance(loss, SPLoss):
        loss.reduction = 'none'
        return loss
    if type(loss) is nn.CrossEntropyLoss and loss.weight is None:
        return PerSampleCrossEntropy(loss.label_smoothing)
    if type(loss) is LabelSmoothingCrossEntropy:
        return PerSampleCrossEntropy(loss.smoothing)
    if type(loss) is SoftTargetCrossEntropy:
        return PerSampleCrossEntropy(0.0)
    raise ValueError(f'--class-weight works with the SP losses and cross-entropy (ce, with or without smoothing / '
                     f'Mixup), not with {type(loss).__name__}.')


class PerSampleCrossEntropy(nn.Module):
    """Cross-entropy per sample (B,): ``-sum_k t_k log p_k`` with ``t`` the soft target, or the one-hot label smoothed
    to ``t = (1 - s) e_y + s / K`` (``smoothing = s``)."""

    def __init__(self, smoothing: float = 0.0):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == logits.dim():  # soft targets
            return -(target * F.log_softmax(logits, dim=-1)).sum(-1)
        return F.cross_entropy(logits, target, reduction='none', label_smoothing=self.smoothing)

    def extra_repr(self) -> str:
        return f'smoothing={self.smoothing:g}'


class ClassWeightedLoss(nn.Module):
    """``sum_i w_i l(z_i, t_i) / sum_i w_i`` with ``w_i = weight[y_i]`` (class indices) or ``weight . t_i`` (soft
    targets); ``enabled=False`` (deferred re-weighting before its epoch): ``mean_i l(z_i, t_i)``."""

    def __init__(self, base: nn.Module, weight: torch.Tensor, enabled: bool = True):
        super().__init__()
        self.base = per_sample_loss(base)
        self.register_buffer('weight', torch.as_tensor(weight, dtype=torch.float32))
        self.enabled = enabled

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = self.base(logits, target)
        if not self.enabled:
            return per.mean()
        weight = self.weight.to(per.device)
        w = target.to(weight.dtype) @ weight if target.dim() == logits.dim() else weight[target]
        return (w * per).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}, weight={[round(v, 4) for v in self.weight.tolist()]}"
