""" One Triton kernel for the SP losses' hot path: class indices, closed-form gradient, on CUDA.

Per call, one kernel reads the logits once (float32, float16 or bfloat16; computed in float32) and writes, per
row ``i``:

* the loss ``l(z_i, y_i)`` (float32),
* the gradient of the *reduced* loss, ``grad_scale * grad_z l(z_i, y_i)`` (``grad_scale = 1/B`` for 'mean'),
  in float32, so backward is one multiplication by the incoming gradient (cast to the logits' dtype on the way),
* with ``CHECK``, the value checks: a row with a non-finite logit or a label outside ``[0, K-1]`` clears the
  int32 flag ``ok`` (labels are clamped for the computation, so a bad label cannot read out of bounds).

The member's math, with ``lse`` the row's logsumexp, ``p = softmax(z)``, ``e_y`` the one-hot label:

* ``sp_ls``:     ``l = -(p* - r) log p_y - r sum_j log p_j``, ``r = (1 - p*)/(K - 1)``; grad ``p - r - (p* - r) e_y``.
* ``sp_logit``:  ``l = lam/2 ||z||^2 - log p_y``; grad ``p + lam z - e_y``.
* ``sp_ce``, ``sp_margin``, ``sp_focal`` (functions of ``p_y``): with ``z_y`` masked, ``lse_r`` and ``p_rest``
  over ``j != y``, the soft margin ``m_s = z_y - lse_r``, ``log p_y = logsigmoid(m_s)``,
  ``log(1 - p_y) = logsigmoid(-m_s)``; ``l = h(p_y)`` and grad ``g (e_y - p_rest)`` with
  ``g = p_y (1 - p_y) h'(p_y)``: ``sp_ce`` ``h = p_y/p* - log p_y``; ``sp_margin`` ``h = (m_s - m*)^2 / 2``,
  ``g = m_s - m*``; ``sp_focal`` ``h = c p_y - (1 - p_y)^gamma log p_y``.

These are the formulas of each member's ``loss_and_grad`` (``sp_timm/losses/sp_*.py``); the tests compare the
two. Rows up to ``MAX_CLASSES`` classes fit one block; wider rows and float64 logits use the ``torch.compile``
path (``_kernel_support.kernel_fits``).
Set ``TRITON_INTERPRET=1`` before the first use to run the kernel on CPU tensors (slow; for tests).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._kernel_support import MAX_CLASSES, SUPPORTED_DTYPES, kernel_fits

__all__ = ['MEMBER_CODES', 'launch_shape', 'sp_rows']

MEMBER_CODES = {'sp_ls': 0, 'sp_logit': 1, 'sp_ce': 2, 'sp_margin': 3, 'sp_focal': 4}
_ELEMENTS_PER_PROGRAM = 4096


@triton.jit
def _log1p(x):
    # log(1 + x) without losing x when x is tiny (Goldberg): exact where 1 + x rounds to 1
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * (x / tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - _log1p(tl.exp(-tl.abs(x)))


@triton.jit(do_not_specialize=['num_rows'])
def _sp_rows_kernel(z_ptr, y_ptr, loss_ptr, grad_ptr, ok_ptr, num_rows, num_classes, z_stride, grad_scale, a, b,
                    MEMBER: tl.constexpr, CHECK: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    row_in = rows < num_rows
    col_in = cols[None, :] < num_classes
    inside = row_in[:, None] & col_in
    z = tl.load(z_ptr + rows[:, None].to(tl.int64) * z_stride + cols[None, :], mask=inside, other=0.0)
    z = z.to(tl.float32)
    y = tl.load(y_ptr + rows, mask=row_in, other=0)
    if CHECK:
        finite = (z == z) & (tl.abs(z) < float('inf'))
        bad_rows = row_in & ((y < 0) | (y >= num_classes) | (tl.sum((~finite).to(tl.int32), axis=1) > 0))
        tl.atomic_min(ok_ptr, 0, mask=tl.sum(bad_rows.to(tl.int32), axis=0) > 0)
    y = tl.minimum(tl.maximum(y, 0), num_classes - 1)
    is_y = cols[None, :] == y[:, None]
    one_hot = is_y.to(tl.float32)
    z_in = tl.where(col_in, z, float('-inf'))  # rows past B stay finite (never stored)
    z_y = tl.sum(tl.where(is_y, z, 0.0), axis=1)
    if MEMBER <= 1:  # sp_ls, sp_logit: functions of the whole softmax
        top = tl.max(z_in, axis=1)
        exp_z = tl.exp(z_in - top[:, None])
        total = tl.sum(exp_z, axis=1)
        log_total = tl.log(total)
        log_p_y = (z_y - top) - log_total  # shifted first: no cancellation against a large common offset
        prob = exp_z / total[:, None]
        if MEMBER == 0:  # a = p* - r, b = r
            sum_log_p = tl.sum(tl.where(col_in, z - top[:, None], 0.0), axis=1) - num_classes * log_total
            loss = -a * log_p_y - b * sum_log_p
            grad = prob - b - a * one_hot
        else:  # a = lam
            loss = 0.5 * a * tl.sum(z * z, axis=1) - log_p_y
            grad = prob + a * z - one_hot
    else:  # sp_ce, sp_margin, sp_focal: functions of p_y, gradient g (e_y - p_rest)
        rest = tl.where(is_y, float('-inf'), z_in)
        top = tl.max(rest, axis=1)
        exp_rest = tl.exp(rest - top[:, None])
        total = tl.sum(exp_rest, axis=1)
        margin = (z_y - top) - tl.log(total)
        log_p, log_1mp = _logsigmoid(margin), _logsigmoid(-margin)
        p, one_minus_p = tl.exp(log_p), tl.exp(log_1mp)
        if MEMBER == 2:  # a = 1 / p*
            loss = a * p - log_p
            scale = one_minus_p * (a * p - 1.0)
        elif MEMBER == 3:  # a = m*
            loss = 0.5 * (margin - a) * (margin - a)
            scale = margin - a
        else:  # a = gamma, b = c
            focal = tl.exp(a * log_1mp)
            loss = b * p - focal * log_p
            scale = a * focal * p * log_p - focal * one_minus_p + b * p * one_minus_p
        grad = scale[:, None] * (one_hot - exp_rest / total[:, None])
    tl.store(loss_ptr + rows, loss, mask=row_in)
    tl.store(grad_ptr + rows[:, None].to(tl.int64) * num_classes + cols[None, :], grad * grad_scale, mask=inside)


def _kernel_constants(member: str, a: float, c: float, num_classes: int) -> Tuple[float, float]:
    """The member's constants as the kernel uses them, computed here in double precision."""
    if member == 'sp_ls':
        r = (1.0 - a) / (num_classes - 1)
        return a - r, r
    if member == 'sp_ce':
        return 1.0 / a, 0.0
    return a, c


def launch_shape(num_rows: int, num_classes: int) -> Tuple[int, int]:
    """``(ROWS, BLOCK)``: rows per program and columns per block, the compile-time sizes of the kernel (with the
    member and ``CHECK``, what makes one compiled variant differ from another)."""
    block = triton.next_power_of_2(num_classes)
    return max(1, min(64, _ELEMENTS_PER_PROGRAM // block, triton.next_power_of_2(num_rows))), block


def sp_rows(member: str, logits: torch.Tensor, target: torch.Tensor, grad_scale: float, a: float, c: float = 0.0,
            check: bool = True, rows: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor,
                                                                     Optional[torch.Tensor]]:
    """Per-row loss (B,) and ``grad_scale * grad_z`` (B, K), both float32, and, with ``check``, the int32 flag
    (0-dim, 1 = the value checks pass) of SP member ``member`` for class indices ``target`` (B,), in one kernel.
    ``a``: the member's parameter (p*, lam, p*, m*, gamma); ``c``: ``sp_focal``'s linear coefficient.

    The gradient stays float32 for float16 / bfloat16 logits: cast before the incoming gradient (e.g. AMP's loss
    scale) multiplies it, ``p - e_y`` over B would underflow in float16. ``rows``: rows per program instead of
    ``launch_shape``'s (the self-check runs a small batch through the variant a larger one compiles)."""
    num_rows, num_classes = logits.shape
    if not kernel_fits(logits):
        raise ValueError(f'The Triton SP kernel takes {SUPPORTED_DTYPES} logits with up to {MAX_CLASSES} classes, '
                         f'got {logits.dtype} with K = {num_classes}.')
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    target = target.contiguous()
    loss = torch.empty(num_rows, dtype=torch.float32, device=logits.device)
    grad = torch.empty((num_rows, num_classes), dtype=torch.float32, device=logits.device)
    ok = torch.ones((), dtype=torch.int32, device=logits.device) if check else loss
    default_rows, block = launch_shape(num_rows, num_classes)
    rows = rows or default_rows
    first, second = _kernel_constants(member, a, c, num_classes)
    launch = _sp_rows_kernel[(triton.cdiv(num_rows, rows),)]
    args = (logits, target, loss, grad, ok, num_rows, num_classes, logits.stride(0), grad_scale, first, second)
    options = dict(MEMBER=MEMBER_CODES[member], CHECK=check, ROWS=rows, BLOCK=block,
                   num_warps=4 if block < 2048 else (8 if block < 8192 else 16))
    if logits.is_cuda and logits.device.index != torch.cuda.current_device():  # Triton launches on the current one
        with torch.cuda.device(logits.device):
            launch(*args, **options)
    else:
        launch(*args, **options)
    return loss, grad, ok if check else None
