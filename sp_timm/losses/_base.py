"""Common machinery of the stationary point (SP) losses.

Notation used by every member: logits ``z`` of shape (B, K), ``p = softmax(z)``, label ``y``, soft target
``t`` (a distribution over the K classes, as timm's Mixup / CutMix produce), margin
``m(z, y) = z_y - max_{j != y} z_j``. An SP loss has a stationary point ``z*`` (``grad_z loss = 0``) with
``m(z*, y) > 0``; cross-entropy has none.

Each member defines its per-class loss ``l(z, k)``. One definition then serves every target form:

* class indices ``y`` (B,):    ``loss = l(z, y)``
* soft targets ``t`` (B, K):   ``loss = sum_k t_k * l(z, k)``, the expectation of the loss under the target,
  which is exactly Mixup's loss mixing ``lam * l(z, a) + (1 - lam) * l(z, b)``. For CE this is timm's
  ``SoftTargetCrossEntropy``; for ``sp_ls`` it is CE against ``q(t)``; for ``sp_logit`` CE(t) + penalty.
* ``smoothing = s`` with class indices: the soft target ``t = (1 - s) e_y + s / K``, as timm's
  ``Mixup(label_smoothing=s)`` builds it. With soft targets ``smoothing`` is ignored, as in timm's factory
  (Mixup has applied it already).

Speed: with class indices (the hot path) each member also states its gradient in closed form
(``loss_and_grad``), and a single autograd node applies it, so forward + backward cost about one softmax
pass more than ``F.cross_entropy``. That node is first-order only; ``fused=False`` builds the loss from
differentiable ops instead (for double backward, e.g. gradient-norm penalties).
"""
import inspect
import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    'SPLoss', 'SPProbLoss', 'take_classes', 'log_complement_prob', 'symmetric_logits', 'symmetric_margin',
    'check_open_interval', 'check_positive',
]

_REDUCTIONS = ('mean', 'sum', 'none')
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_open_interval(name: str, value: float, low: float, high: float, why: str) -> float:
    """Return ``float(value)`` if ``low < value < high`` else raise a ValueError that says why."""
    value = float(value)
    if not (low < value < high):
        raise ValueError(f'{name} must lie in ({low:g}, {high:g}), got {value!r}: {why}.')
    return value


def check_positive(name: str, value: float, why: str, allow_zero: bool = False) -> float:
    """Return ``float(value)`` if it is finite and > 0 (>= 0 with ``allow_zero``), else raise a ValueError."""
    value = float(value)
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}{why}.")
    return value


def take_classes(values: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
    """``values[:, index]`` row-wise for ``index`` of shape (B, 1), or every class when ``index`` is None."""
    return values if index is None else values.gather(-1, index)


def log_complement_prob(logits: torch.Tensor, index: Optional[torch.Tensor] = None,
                        log_probs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``log(1 - p_k) = logsumexp_{j != k} z_j - logsumexp_j z_j`` for the selected classes ``k``.

    Computed without cancellation when ``p_k -> 1``: for the row's arg-max class by a logsumexp with that
    class masked out; for every other class ``p_k <= 1/2``, where ``log1p(-p_k)`` is exact. Pass
    ``log_probs = logits.log_softmax(-1)`` when the caller has it already.
    """
    if log_probs is None:
        log_probs = logits.log_softmax(-1)
    top = logits.argmax(-1, keepdim=True)
    log_rest_of_top = log_probs.scatter(-1, top, float('-inf')).logsumexp(-1, keepdim=True)
    if index is None:
        index = torch.arange(logits.shape[-1], device=logits.device).unsqueeze(0)
        prob = log_probs.exp()
    else:
        prob = log_probs.gather(-1, index).exp()
    is_top = index == top
    # The zero on the arg-max entries keeps the unused branch finite, so its gradient is not NaN.
    off_top = torch.log1p(-torch.where(is_top, torch.zeros_like(prob), prob))
    return torch.where(is_top, log_rest_of_top, off_top)


def symmetric_margin(prob: float, num_classes: int) -> float:
    """Margin of the symmetric logits whose true-class probability is ``prob``: ``log(prob (K-1)/(1-prob))``."""
    return math.log(prob * (num_classes - 1) / (1.0 - prob))


def symmetric_logits(margin: float, num_classes: int, label: int = 0, dtype=torch.float64) -> torch.Tensor:
    """The mean-zero logits with ``z_y - z_j = margin`` for every ``j != y``:
    ``z_y = margin (K-1)/K``, ``z_j = -margin/K``. Gradient descent from ``z = 0`` keeps this shape."""
    z = torch.full((num_classes,), -margin / num_classes, dtype=dtype)
    z[label] = margin * (num_classes - 1) / num_classes
    return z


class _ClosedFormGradient(torch.autograd.Function):
    """One autograd node for ``member.loss_and_grad``: per-sample loss forward, stored gradient backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor, member: 'SPLoss') -> torch.Tensor:
        loss, grad = member.loss_and_grad(logits, index)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.unsqueeze(-1), None, None


class SPLoss(nn.Module):
    """Base class of the SP members: validation, target forms, reduction, stationary-point helpers.

    Subclasses implement ``class_losses`` (the per-class loss ``l(z, k)``, from differentiable ops),
    ``loss_and_grad`` (class-index loss and its gradient in closed form) and ``stationary_margin``.

    Args:
        reduction: 'mean' | 'sum' | 'none' over the batch.
        smoothing: label smoothing ``s in [0, 1)`` applied to class-index targets (see module docstring).
        fused: use the closed-form gradient for class-index targets (first-order only).
    """
    name: str = ''
    formula: str = ''  # one-line statement of l(z, y), for listings
    stationary_set: str = ''  # where the gradient vanishes, for listings

    def __init__(self, reduction: str = 'mean', smoothing: float = 0.0, fused: bool = True):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        if not 0.0 <= float(smoothing) < 1.0:
            raise ValueError(f'smoothing must lie in [0, 1), got {smoothing!r}.')
        self.reduction = reduction
        self.smoothing = float(smoothing)
        self.fused = bool(fused)

    # --- to implement --------------------------------------------------------------------------------
    def class_losses(self, logits: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        """``l(z, k)`` for ``k = index`` (shape (B, 1)) or for every class (``index=None``, shape (B, K))."""
        raise NotImplementedError

    def loss_and_grad(self, logits: torch.Tensor, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``l(z, y)`` (B,) and ``grad_z l(z, y)`` (B, K) for class indices ``index`` (B, 1)."""
        raise NotImplementedError

    def stationary_margin(self, num_classes: int) -> float:
        """Margin ``z_y - max_{j != y} z_j`` of the stationary point that gradient descent from ``z = 0``
        reaches, for class-index targets without smoothing."""
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------------
    def stationary_point(self, num_classes: int, label: int = 0, dtype=torch.float64) -> torch.Tensor:
        """Stationary logits (K,) for ``label``: the symmetric, mean-zero point of ``stationary_margin``."""
        _check_num_classes(num_classes)
        return symmetric_logits(self.stationary_margin(num_classes), num_classes, label, dtype)

    def stationary_prob(self, num_classes: int) -> float:
        """``p_y`` at ``stationary_point``."""
        m = self.stationary_margin(num_classes)
        return 1.0 / (1.0 + (num_classes - 1) * math.exp(-m))

    def hparams(self) -> Dict[str, Any]:
        """The constructor parameters that define this member (without reduction / smoothing / fused)."""
        params = inspect.signature(type(self).__init__).parameters.values()
        skip = ('self', 'reduction', 'smoothing', 'fused')
        return {p.name: getattr(self, p.name) for p in params if p.name not in skip and p.kind is p.POSITIONAL_OR_KEYWORD}

    def extra_repr(self) -> str:
        parts = [f'{k}={v:g}' for k, v in self.hparams().items()]
        if self.smoothing:
            parts.append(f'smoothing={self.smoothing:g}')
        if self.reduction != 'mean':
            parts.append(f'reduction={self.reduction!r}')
        return ', '.join(parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = _validate(logits, target, self.name)
        if logits.dtype in _LOW_PRECISION:
            logits = logits.float()
        if not soft and self.smoothing > 0:
            num_classes = logits.shape[-1]
            target = F.one_hot(target, num_classes).to(logits.dtype) * (1.0 - self.smoothing) + self.smoothing / num_classes
            soft = True
        loss = self.soft_target_losses(logits, target) if soft else self.index_losses(logits, target)
        if self.reduction == 'mean':
            return loss.mean()
        if self.reduction == 'sum':
            return loss.sum()
        return loss


    def index_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (B,) for class indices: the closed-form gradient node when training."""
        index = target.unsqueeze(-1)
        if self.fused and logits.requires_grad and torch.is_grad_enabled():
            return _ClosedFormGradient.apply(logits, index, self)
        return self.class_losses(logits, index).squeeze(-1)

    def soft_target_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (B,) for soft targets: ``sum_k t_k l(z, k)``."""
        return (self.class_losses(logits, None) * target.to(logits.dtype)).sum(-1)


class SPProbLoss(SPLoss):
    """An SP loss that depends on z only through ``p_y``: ``l(z, y) = h(p_y)``, stationary on ``{p_y = p0}``.

    Subclasses give ``h`` and ``g = p_y (1 - p_y) h'(p_y)``, both from ``log p_y`` and ``log(1 - p_y)``.
    Since ``grad_z p_y = p_y (e_y - p) = p_y (1 - p_y) (e_y - p_rest)``, with ``p_rest`` the softmax over the
    classes ``j != y`` (0 at y), the gradient is ``g * (e_y - p_rest)``. One log-softmax of the logits with
    ``z_y`` masked gives ``p_rest`` and the soft margin ``m_s = z_y - logsumexp_{j != y} z_j``, and then
    ``log p_y = logsigmoid(m_s)``, ``log(1 - p_y) = logsigmoid(-m_s)``: no cancellation, even as ``p_y -> 1``.
    """

    def prob_loss(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        """``h(p_y)``."""
        raise NotImplementedError

    def prob_grad(self, log_p: torch.Tensor, log_1mp: torch.Tensor) -> torch.Tensor:
        """``p_y (1 - p_y) h'(p_y)``."""
        raise NotImplementedError

    def class_losses(self, logits: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        log_probs = logits.log_softmax(-1)
        return self.prob_loss(take_classes(log_probs, index), log_complement_prob(logits, index, log_probs))

    def loss_and_grad(self, logits: torch.Tensor, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        rest = logits.scatter(-1, index, float('-inf'))
        log_p_rest = rest.log_softmax(-1)
        # logsumexp_{j != y} z_j = max_j rest_j - max_j log_p_rest_j (both maxima sit at the same j)
        log_sum_rest = rest.amax(-1, keepdim=True) - log_p_rest.amax(-1, keepdim=True)
        soft_margin = logits.gather(-1, index) - log_sum_rest
        log_p, log_1mp = F.logsigmoid(soft_margin), F.logsigmoid(-soft_margin)
        scale = self.prob_grad(log_p, log_1mp)
        grad = log_p_rest.exp_().mul_(-scale).scatter_add_(-1, index, scale)  # scale * (e_y - p_rest)
        return self.prob_loss(log_p, log_1mp).squeeze(-1), grad


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f'A classification loss needs K >= 2 classes, got K = {num_classes}.')


def _validate(logits: torch.Tensor, target: torch.Tensor, name: str) -> bool:
    """Check shapes, dtypes and values; return True for soft targets.

    The value checks cost one reduction and one host sync: a NaN or +-Inf anywhere makes the sum of the
    logits non-finite (an overflowing sum of finite logits only triggers the exact re-check below).
    """
    if logits.ndim != 2:
        raise ValueError(f"'{name}': logits must have shape (B, K), got {tuple(logits.shape)}.")
    batch, num_classes = logits.shape
    _check_num_classes(num_classes)
    if not logits.is_floating_point():
        raise ValueError(f"'{name}': logits must be floating point, got {logits.dtype}.")
    logits_ok = torch.isfinite(logits.sum(dtype=torch.float32))
    if target.ndim == 1 and target.shape[0] == batch and not target.is_floating_point() and target.dtype != torch.bool:
        soft = False
        low, high = torch.aminmax(target)
        target_ok = (low >= 0) & (high < num_classes)
    elif target.ndim == 2 and tuple(target.shape) == (batch, num_classes) and target.is_floating_point():
        soft = True
        tol = 2e-2 if target.dtype in _LOW_PRECISION else 1e-3
        row_sums = target.float().sum(-1)
        target_ok = (target.amin() >= 0) & ((row_sums - 1).abs().amax() <= tol)
    else:
        raise ValueError(
            f"'{name}': target of shape {tuple(target.shape)} and dtype {target.dtype} fits neither form: "
            f"class indices need an integer tensor of shape ({batch},), soft targets a float tensor of shape "
            f"({batch}, {num_classes}).")
    if bool(logits_ok & target_ok):
        return soft
    bad_rows = int((~torch.isfinite(logits)).any(-1).sum())
    if bad_rows:
        raise ValueError(f"'{name}': logits contain NaN or Inf in {bad_rows} of {batch} rows; check the model output "
                         f"(a diverged run, or an AMP overflow).")
    if soft:
        raise ValueError(f"'{name}': soft targets must be non-negative distributions whose rows sum to 1 "
                         f"(row sums seen: {float(row_sums.min()):.4g} .. {float(row_sums.max()):.4g}).")
    if not bool(target_ok):
        raise ValueError(f"'{name}': labels must lie in [0, {num_classes - 1}] for K = {num_classes} classes, got "
                         f"values from {int(target.min())} to {int(target.max())}; check --num-classes and the "
                         f"dataset labels.")
    return soft  # finite logits whose float32 sum overflowed
