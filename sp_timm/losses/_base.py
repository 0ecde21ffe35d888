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
(``loss_and_grad``), and a single autograd node applies it: forward computes the reduced loss and the
gradient of that reduced loss, backward is one multiplication by the incoming gradient. That node is
first-order only; ``fused=False`` builds the loss from differentiable ops instead (for double backward, e.g.
gradient-norm penalties). On CUDA that node's forward is one hand-written Triton kernel (``kernel=None``, the
default; ``sp_timm/losses/_triton.py``): it reads the logits once (float32 / float16 / bfloat16, math in float32)
and writes the per-row loss, the float32 gradient and the validation flag, so a training step pays one kernel
plus the reduction forward and one multiplication backward (which casts to the logits' dtype after the incoming
gradient, e.g. AMP's loss scale, has multiplied it: no float16 underflow). Before a compiled variant of the kernel
serves for the first time on a device, it checks itself against the torch code on an edge-case batch
(``_kernel_check``); if it fails that check, or cannot build or launch, it warns once and the torch code takes over.
Everything else (soft targets, smoothing, no gradient, float64, K > 8192, ``kernel='torch'``) runs as one
``torch.compile``'d function on CUDA (``compile=None``, the default), a few fused kernels instead of ~20 small ones;
it falls back to the same code in eager mode if compilation fails.

Validation (``validate``): the shape / dtype checks are host-side and always immediate. The value checks
(finite logits, labels in ``[0, K-1]``, soft-target rows non-negative and summing to 1) are one on-device
flag, ``ok = isfinite(sum z) & (0 <= min y) & (max y < K)`` (soft: ``min t >= 0 & max |sum_k t_k - 1| <= tol``):

* ``'full'`` (default on CPU): reads the flag at once (one host sync) and raises the ``ValueError`` before the
  loss is computed.
* ``'async'`` (default on CUDA and other accelerators): no host sync. The labels are clamped into range for the
  computation (so a bad label cannot trip a device-side assert), the flag is copied to pinned host memory
  without blocking, and the same ``ValueError`` (same text) is raised later: at the start of the next call of
  this loss once the device has computed the flag (on CPU always at the next call), or at ``check_inputs()``,
  which waits for it (the trainer calls it at every log interval and at the end of every epoch). The loss
  returned for the bad batch itself is meaningless.
* ``'off'``: no value checks (out-of-range labels then fail inside PyTorch's kernels; the Triton kernel clamps
  them).
"""
import inspect
import math
import types
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'SPLoss', 'SPProbLoss', 'take_classes', 'log_complement_prob', 'symmetric_logits', 'symmetric_margin',
    'check_open_interval', 'check_positive',
]

_REDUCTIONS = ('mean', 'sum', 'none')
_VALIDATE_MODES = ('full', 'async', 'off')
_KERNELS = ('triton', 'torch')
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


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == 'mean':
        return loss.mean()
    return loss.sum() if reduction == 'sum' else loss


class _ClosedFormGradient(torch.autograd.Function):
    """One autograd node for ``member.loss_and_grad``: forward returns the reduced loss and keeps the gradient
    of that reduced loss (``grad_z l / B`` for 'mean'); backward multiplies it by the incoming gradient.
    ``flags`` receives the on-device validation flag when ``check`` is set."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, member: 'SPLoss', check: bool,
                flags: List[torch.Tensor], use_kernel: bool) -> torch.Tensor:
        body = member._kernel_closed_form if use_kernel else member._compiled('_closed_form')
        loss, grad, flag = body(logits, target, check)
        if flag is not None:
            flags.append(flag)
        ctx.save_for_backward(grad)
        ctx.name, ctx.per_sample, ctx.dtype = member.name, member.reduction == 'none', logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative is wanted
            raise RuntimeError(
                f"'{ctx.name}': the fused closed-form gradient is first-order only and cannot be differentiated again "
                f"(double backward / create_graph=True, e.g. gradient penalties); build the loss with fused=False, "
                f"e.g. create_loss('{ctx.name}', fused=False).")
        (grad,) = ctx.saved_tensors
        incoming = grad_loss.unsqueeze(-1) if ctx.per_sample else grad_loss
        if grad.dtype == ctx.dtype:
            return grad * incoming, None, None, None, None, None
        # float32 gradient of low-precision logits (the kernel's): multiplied, then cast, in one kernel
        out = torch.empty(grad.shape, dtype=ctx.dtype, device=grad.device)
        return torch.mul(grad, incoming, out=out), None, None, None, None, None


class _PendingCheck:
    """The validation flag of one ``'async'`` call, readable without blocking once ``ready()``."""

    def __init__(self, flag: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, soft: bool):
        self.logits, self.target, self.soft = logits, target, soft
        self.event = None
        if flag.is_cuda:
            self.flag = torch.empty((), dtype=flag.dtype, pin_memory=True)
            self.flag.copy_(flag, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.flag = flag

    def ready(self) -> bool:
        if self.event is not None:
            return self.event.query()
        return self.flag.device.type == 'cpu'

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


class SPLoss(nn.Module):
    """Base class of the SP members: validation, target forms, reduction, stationary-point helpers.

    Subclasses implement ``class_losses`` (the per-class loss ``l(z, k)``, from differentiable ops),
    ``loss_and_grad`` (class-index loss and its gradient in closed form) and ``stationary_margin``.

    Args:
        reduction: 'mean' | 'sum' | 'none' over the batch.
        smoothing: label smoothing ``s in [0, 1)`` applied to class-index targets (see module docstring).
        fused: use the closed-form gradient for class-index targets (first-order only).
        validate: 'full' | 'async' | 'off', or None: 'full' for CPU logits, 'async' otherwise (module docstring).
        compile: None: ``torch.compile`` the loss body (inductor) for CUDA logits only; True: always (inductor);
            a string: always, with that ``torch.compile`` backend; False: never.
        kernel: None: the Triton kernel for the fused class-index path on CUDA where it applies (module docstring),
            else the torch code; 'triton': always where it applies (on CPU only under ``TRITON_INTERPRET=1``);
            'torch': never.
    """
    name: str = ''
    formula: str = ''  # one-line statement of l(z, y), for listings
    stationary_set: str = ''  # where the gradient vanishes, for listings

    def __init__(self, reduction: str = 'mean', smoothing: float = 0.0, fused: bool = True,
                 validate: Optional[str] = None, compile: Optional[Union[bool, str]] = None,
                 kernel: Optional[str] = None):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        if not 0.0 <= float(smoothing) < 1.0:
            raise ValueError(f'smoothing must lie in [0, 1), got {smoothing!r}.')
        if validate is not None and validate not in _VALIDATE_MODES:
            raise ValueError(f"validate must be one of {_VALIDATE_MODES} or None (per device), got {validate!r}.")
        if not (compile is None or isinstance(compile, (bool, str))):
            raise ValueError(f'compile must be None, a bool or a torch.compile backend name, got {compile!r}.')
        if kernel is not None and kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS} or None (Triton on CUDA), got {kernel!r}.")
        self.reduction = reduction
        self.smoothing = float(smoothing)
        self.fused = bool(fused)
        self.validate = validate
        self.compile_backend = compile  # not `compile`: that would hide nn.Module.compile()
        self.kernel = kernel
        self._kernel_failed = False
        self._pending: List[_PendingCheck] = []
        self._compiled_fns: Dict[str, Callable] = {}

    # --- to implement --------------------------------------------------------------------------------
    def class_losses(self, logits: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        """``l(z, k)`` for ``k = index`` (shape (B, 1)) or for every class (``index=None``, shape (B, K))."""
        raise NotImplementedError

    def loss_and_grad(self, logits: torch.Tensor, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``l(z, y)`` (B,) and ``grad_z l(z, y)`` (B, K) for class indices ``index`` (B, 1)."""
        raise NotImplementedError

    def _stationary_margin(self, num_classes: int) -> float:
        """``stationary_margin`` for ``num_classes >= 2``."""
        raise NotImplementedError

    def kernel_params(self) -> Optional[Tuple[str, float, float]]:
        """``(formula, a, c)``: the member's formula in the Triton kernel (``_triton.MEMBER_CODES``) and its
        parameters there, or None (no kernel). Only a class that defines it itself uses the kernel: a subclass that
        changes the math gets the torch code."""
        return None

    def stationary_margin(self, num_classes: int) -> float:
        """Margin ``z_y - max_{j != y} z_j`` of the stationary point that gradient descent from ``z = 0``
        reaches, for class-index targets without smoothing (K >= 2)."""
        _check_num_classes(num_classes)
        return self._stationary_margin(num_classes)

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
        skip = ('self', 'reduction', 'smoothing', 'fused', 'validate', 'compile', 'kernel')
        return {p.name: getattr(self,
                                p.name) for p in params if p.name not in skip and p.kind is p.POSITIONAL_OR_KEYWORD}

    def extra_repr(self) -> str:
        parts = [f'{k}={v:g}' for k, v in self.hparams().items()]
        if self.smoothing:
            parts.append(f'smoothing={self.smoothing:g}')
        if self.reduction != 'mean':
            parts.append(f'reduction={self.reduction!r}')
        return ', '.join(parts)

    def __getstate__(self) -> Dict[str, Any]:  # pickle / deepcopy: no events, no compiled functions
        return dict(self.__dict__, _pending=[], _compiled_fns={}, _kernel_failed=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The reduced loss of ``logits`` (B, K) against class indices (B,) of any integer dtype or soft targets
        (B, K). An empty batch gives what ``F.cross_entropy`` gives: NaN for 'mean', 0 for 'sum'."""
        self._raise_pending(wait=False)
        logits, target, soft = _check_form(logits, target, self.name)
        mode = self.validate or ('async' if logits.is_cuda else 'full')
        if logits.shape[0] == 0:
            return _reduce(logits.sum(-1, dtype=torch.float32), self.reduction)
        if mode == 'full' and not bool(_value_flag(logits, target, soft)):
            _raise_value_error(logits, target, soft, self.name)
        check, flags = mode == 'async', []
        if not soft and self.smoothing == 0 and self.fused and logits.requires_grad and torch.is_grad_enabled():
            use_kernel = self._uses_kernel(logits)
            if logits.dtype in _LOW_PRECISION and not use_kernel:
                logits = logits.float()
            loss = _ClosedFormGradient.apply(logits, target, self, check, flags, use_kernel)
        else:
            if logits.dtype in _LOW_PRECISION:
                logits = logits.float()
            loss, flag = self._compiled('_autograd_form')(logits, target, soft, check)
            flags.append(flag)
        if check:
            self._pending.append(_PendingCheck(flags[0], logits.detach(), target, soft))
        return loss

    def check_inputs(self) -> None:
        """Raise the ``ValueError`` of the first bad input among this loss's earlier ``'async'`` calls, waiting
        for the device to compute their flags (a host sync). A no-op in 'full' / 'off' mode."""
        self._raise_pending(wait=True)

    def _raise_pending(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0].ready()):
            entry = self._pending.pop(0)
            entry.wait()
            if not bool(entry.flag):
                self._pending.clear()
                _raise_value_error(entry.logits, entry.target, entry.soft, self.name)

    def _compiled(self, method: str) -> Callable:
        """``getattr(self, method)``, through ``torch.compile`` as the ``compile`` option says."""
        eager = getattr(self, method)
        backend = self.compile_backend
        if backend is None:
            backend = 'inductor' if torch.cuda.is_available() else False
        if backend is False or method in self._compiled_fns and self._compiled_fns[method] is None:
            return eager
        if method not in self._compiled_fns:
            self._compiled_fns[method] = torch.compile(_own_code(self, method), fullgraph=True,
                                                       backend='inductor' if backend is True else backend)
        compiled = self._compiled_fns[method]

        def run(logits: torch.Tensor, *args: Any):
            if self.compile_backend is None and not logits.is_cuda:
                return eager(logits, *args)
            try:
                return compiled(logits, *args)
            except Exception as err:  # noqa: BLE001 -- any compiler failure: the eager code computes the same
                self._compiled_fns[method] = None
                warnings.warn(f"'{self.name}': torch.compile of the loss failed ({type(err).__name__}: "
                              f"{str(err)[:200]}); using the eager loss.", RuntimeWarning, stacklevel=3)
                return eager(logits, *args)
        return run

    def _checked_target(self, logits: torch.Tensor, target: torch.Tensor, soft: bool,
                        check: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The validation flag (when ``check``) and, for class indices, the labels clamped into ``[0, K-1]``."""
        if not check:
            return target, None
        flag = _value_flag(logits, target, soft)
        return (target if soft else target.clamp(0, logits.shape[-1] - 1)), flag

    def _uses_kernel(self, logits: torch.Tensor) -> bool:
        """Whether the fused class-index path runs the Triton kernel for these logits (the ``kernel`` option)."""
        if self.kernel == 'torch' or (self.kernel is None and (not logits.is_cuda or self._kernel_failed)) \
                or 'kernel_params' not in vars(type(self)) or self.kernel_params() is None:
            return False
        from . import _kernel_support
        if not _kernel_support.kernel_fits(logits):
            return False
        if self.kernel is None:
            return _kernel_support.triton_available()
        _kernel_support.require_triton(logits, self.name)
        return True

    def _kernel_closed_form(self, logits: torch.Tensor, target: torch.Tensor,
                            check: bool) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``_closed_form`` in one Triton kernel (plus the reduction); the gradient is float32. The kernel serves a
        compiled variant only after its first-use self-check on this device passed (``_kernel_check``). With
        ``kernel=None`` a kernel that fails to build or launch (no C compiler for Triton's launcher, an unsupported
        GPU) warns once and hands over to the torch code for good, and one that fails its self-check warns once
        and hands over for that variant; ``kernel='triton'`` raises instead."""
        formula, a, c = self.kernel_params()
        grad_scale = 1.0 / logits.shape[0] if self.reduction == 'mean' else 1.0
        try:
            from ._kernel_check import failure_message, verify_kernel
            from ._triton import sp_rows
            verdict = verify_kernel(self, logits, check)
            if verdict.passed:
                rows, grad, flag = sp_rows(formula, logits, target, grad_scale, a, c, check)
                return _reduce(rows, self.reduction), grad, flag
        except Exception as err:  # noqa: BLE001 -- any build / launch failure: the torch code computes the same
            if self.kernel == 'triton':
                raise
            self._kernel_failed = True
            warnings.warn(f"'{self.name}': the Triton kernel failed ({type(err).__name__}: {str(err)[:200]}); using "
                          f"the torch code (kernel='torch').", RuntimeWarning, stacklevel=4)
            return self._compiled('_closed_form')(logits.float(), target, check)
        if self.kernel == 'triton':
            raise RuntimeError(failure_message(self.name, verdict) + "; use kernel=None (falls back to the torch "
                               "code) or kernel='torch'.")
        return self._compiled('_closed_form')(logits.float(), target, check)

    def _closed_form(self, logits: torch.Tensor, target: torch.Tensor,
                     check: bool) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Reduced loss, its gradient ``d loss / d z`` and the validation flag, for class indices (no autograd)."""
        target, flag = self._checked_target(logits, target, False, check)
        loss, grad = self.loss_and_grad(logits, target.unsqueeze(-1))
        if self.reduction == 'mean':
            grad = grad / logits.shape[0]
        return _reduce(loss, self.reduction), grad, flag

    def _autograd_form(self, logits: torch.Tensor, target: torch.Tensor, soft: bool,
                       check: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Reduced loss from differentiable ops (``class_losses``) and the validation flag, for either target form."""
        target, flag = self._checked_target(logits, target, soft, check)
        if not soft and self.smoothing > 0:
            num_classes = logits.shape[-1]
            target = F.one_hot(target,
                               num_classes).to(logits.dtype) * (1.0 - self.smoothing) + self.smoothing / num_classes
            soft = True
        loss = self.soft_target_losses(logits, target) if soft else self.index_losses(logits, target)
        return _reduce(loss, self.reduction), flag

    def index_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (B,) for class indices, from differentiable ops."""
        return self.class_losses(logits, target.unsqueeze(-1)).squeeze(-1)

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


def _own_code(member: 'SPLoss', method: str) -> Callable:
    """``member.method`` bound to a copy of its code object named after the class: torch.compile keeps its
    caches (and its recompile limit) per code object, so each member class gets its own instead of sharing one."""
    func = getattr(type(member), method)
    name = f'{method}_{type(member).__name__}'
    code = func.__code__.replace(co_name=name, co_qualname=name)
    return types.MethodType(types.FunctionType(code, func.__globals__, name, func.__defaults__, func.__closure__),
                            member)


def _check_form(logits: Any, target: Any, name: str) -> Tuple[torch.Tensor, torch.Tensor, bool]:
    """Host-side checks of types, shapes and dtypes (no sync). Returns the logits, the target (class indices as
    int64) and whether the target is soft."""
    for what, value in (('logits', logits), ('target', target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"'{name}': {what} must be a torch.Tensor, got {type(value).__name__}; convert it with "
                            f"torch.as_tensor(..., device=logits.device) (labels as an integer tensor).")
    if logits.ndim != 2:
        raise ValueError(f"'{name}': logits must have shape (B, K), got {tuple(logits.shape)}.")
    batch, num_classes = logits.shape
    _check_num_classes(num_classes)
    if not logits.is_floating_point():
        raise ValueError(f"'{name}': logits must be floating point, got {logits.dtype}.")
    if target.ndim == 1 and target.shape[0] == batch and not target.is_floating_point() and not target.is_complex() \
            and target.dtype != torch.bool:
        return logits, target.long(), False
    if target.ndim == 2 and tuple(target.shape) == (batch, num_classes) and target.is_floating_point():
        return logits, target, True
    raise ValueError(
        f"'{name}': target of shape {tuple(target.shape)} and dtype {target.dtype} fits neither form: "
        f"class indices need an integer tensor of shape ({batch},), soft targets a float tensor of shape "
        f"({batch}, {num_classes}).")


def _soft_target_tolerance(target: torch.Tensor) -> float:
    return 2e-2 if target.dtype in _LOW_PRECISION else 1e-3


def _value_flag(logits: torch.Tensor, target: torch.Tensor, soft: bool) -> torch.Tensor:
    """On-device 0-dim bool: the value checks pass. One reduction per input: a NaN or +-Inf anywhere makes the
    float32 sum of the logits non-finite (a sum of finite logits that overflows only costs an exact re-check)."""
    ok = torch.isfinite(logits.sum(dtype=torch.float32))
    if soft:
        row_error = (target.float().sum(-1) - 1).abs().amax()
        return ok & (target.amin() >= 0) & (row_error <= _soft_target_tolerance(target))
    low, high = torch.aminmax(target)
    return ok & (low >= 0) & (high < logits.shape[-1])


def _raise_value_error(logits: torch.Tensor, target: torch.Tensor, soft: bool, name: str) -> None:
    """Raise the ``ValueError`` that names what is wrong with inputs whose value flag failed (host syncs); return
    if the exact re-check finds nothing (finite logits whose float32 sum overflowed)."""
    batch, num_classes = logits.shape
    bad_rows = int((~torch.isfinite(logits)).any(-1).sum())
    if bad_rows:
        raise ValueError(f"'{name}': logits contain NaN or Inf in {bad_rows} of {batch} rows; check the model output "
                         f"(a diverged run, or an AMP overflow).")
    if soft:
        bad_targets = int((~torch.isfinite(target)).any(-1).sum())
        if bad_targets:
            raise ValueError(f"'{name}': soft targets contain NaN or Inf in {bad_targets} of {batch} rows; check what "
                             f"built them (Mixup / CutMix inputs, label smoothing).")
        negative = int((target < 0).any(-1).sum())
        if negative:
            raise ValueError(f"'{name}': soft targets must be non-negative; {negative} of {batch} rows have negative "
                             f"entries (smallest {float(target.amin()):.4g}).")
        row_sums = target.float().sum(-1)
        if bool((row_sums - 1).abs().amax() > _soft_target_tolerance(target)):
            raise ValueError(f"'{name}': soft targets must be non-negative distributions whose rows sum to 1 "
                             f"(row sums seen: {float(row_sums.min()):.4g} .. {float(row_sums.max()):.4g}).")
        return
    low, high = (int(v) for v in torch.aminmax(target))
    if low < 0 or high >= num_classes:
        raise ValueError(f"'{name}': labels must lie in [0, {num_classes - 1}] for K = {num_classes} classes, got "
                         f"values from {low} to {high}; check --num-classes and the dataset labels.")
