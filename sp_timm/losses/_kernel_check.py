""" The Triton kernel proves itself before it serves: a first-use self-check per compiled variant and device.

The first time the kernel would compute a loss for a *variant*, the pair (device, logits dtype, member and its
parameters, ``CHECK``, ``ROWS``, ``BLOCK``), ``verify_kernel`` runs that very variant (the compile-time sizes
``_triton.launch_shape`` picks for the served batch) on a small batch built to reach the edges:

* random rows (``3 N(0, 1)``), rows at the member's stationary point (``SPLoss.stationary_point``, plus
  ``1e-3 N(0, 1)``), confident rows (label logit +30), confidently wrong rows (another class +30, the label -30),
  rows with a large common offset (``+-min(1e4, max(dtype) / 8)``) and rows with extreme spread (``1e3 N(0, 1)``);
  labels include 0 and K-1;

and compares the per-row loss and gradient (``grad_scale = 1``) with the member's own torch code
(``loss_and_grad``) in float64 on the same, dtype-rounded logits. The kernel computes in float32 whatever the
logits' dtype, so the tolerance is float32's, scaled by how much the exact result itself moves when every logit
moves by one float32 rounding (``z (1 + eps u)``, ``|u| <= 1``, two draws; the *noise*):

    ``|kernel - reference| <= 1e-5 (1 + |reference|) + 64 noise``    (elementwise)

A formula, sign or constant that differs on real hardware misses this by orders of magnitude; float32 rounding,
the GPU's approximate ``exp`` / ``log`` and reduction order stay far inside it (the tests check both, in Triton's
CPU interpreter). With ``CHECK`` the validation flag must also report the valid batch as valid.

Verdicts are cached per process (``kernel_verdicts``), so the check runs once per variant; its cost is one kernel
launch plus three float64 evaluations of the torch code on 48 rows (``benchmarks/gpu_suite.py`` measures it).
"""
import math
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Tuple

import torch

__all__ = ['KernelVariant', 'KernelVerdict', 'clear_kernel_verdicts', 'kernel_verdicts', 'self_check_batch',
           'verify_kernel']

_ROWS_PER_KIND = 8
_FLOAT32_EPS = torch.finfo(torch.float32).eps
_ABSOLUTE_TOLERANCE = 1e-5
_NOISE_FACTOR = 64.0


@dataclass(frozen=True)
class KernelVariant:
    """One compiled variant of the kernel on one device: what a self-check verdict holds for."""
    device: str
    dtype: torch.dtype
    formula: str
    a: float
    c: float
    check: bool
    rows: int
    block: int


@dataclass(frozen=True)
class KernelVerdict:
    """The outcome of one self-check: ``passed``, the worst error as a multiple of its tolerance (``<= 1`` passes),
    where it happened, and the check's wall time (host-synchronised; the kernel's compilation included on the
    first launch of a variant)."""
    variant: KernelVariant
    num_classes: int
    passed: bool
    worst_ratio: float
    detail: str
    seconds: float


_VERDICTS: Dict[KernelVariant, KernelVerdict] = {}


def kernel_verdicts() -> Dict[KernelVariant, KernelVerdict]:
    """The self-check verdicts of this process so far (a copy)."""
    return dict(_VERDICTS)


def clear_kernel_verdicts() -> None:
    """Forget every verdict: the next use of each variant checks it again (benchmarks, tests)."""
    _VERDICTS.clear()


def self_check_batch(member, num_classes: int, dtype: torch.dtype,
                     device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The self-check's logits (48, K) of ``dtype`` and labels (48,), the same for every call (seeded)."""
    generator = torch.Generator().manual_seed(20230219)
    count = 6 * _ROWS_PER_KIND
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    labels[0], labels[1] = 0, num_classes - 1
    noise = torch.randn(count, num_classes, generator=generator, dtype=torch.float64)
    logits = 3.0 * noise
    kinds = [slice(k * _ROWS_PER_KIND, (k + 1) * _ROWS_PER_KIND) for k in range(6)]
    for row in range(kinds[1].start, kinds[1].stop):  # at the stationary point
        logits[row] = member.stationary_point(num_classes, int(labels[row])) + 1e-3 * noise[row]
    rows = torch.arange(count)
    confident, wrong = rows[kinds[2]], rows[kinds[3]]
    logits[confident, labels[confident]] = 30.0
    logits[wrong, labels[wrong]] = -30.0
    logits[wrong, (labels[wrong] + 1) % num_classes] = 30.0
    offset = min(1e4, torch.finfo(dtype).max / 8)
    logits[kinds[4]] += offset * torch.tensor([1.0, -1.0]).repeat(_ROWS_PER_KIND // 2).unsqueeze(1).double()
    logits[kinds[5]] = 1e3 * noise[kinds[5]]
    return logits.to(dtype).to(device), labels.to(device)


def verify_kernel(member, logits: torch.Tensor, check: bool) -> KernelVerdict:
    """The verdict for the variant that would serve ``logits`` (B, K) for ``member`` (an ``SPLoss`` with
    ``kernel_params``): cached, else computed now. A failed check warns once, naming the member, dtype, K and the
    error; the caller then uses the torch code (``kernel=None``) or raises (``kernel='triton'``)."""
    from ._triton import launch_shape
    formula, a, c = member.kernel_params()
    rows, block = launch_shape(logits.shape[0], logits.shape[1])
    variant = KernelVariant(str(logits.device), logits.dtype, formula, float(a), float(c), bool(check), rows, block)
    verdict = _VERDICTS.get(variant)
    if verdict is None:
        verdict = _VERDICTS[variant] = _run_check(member, variant, logits.shape[1], logits.device)
        if not verdict.passed:
            warnings.warn(failure_message(member.name, verdict) + "; using the torch code (kernel='torch') for this "
                          'case from now on.', RuntimeWarning, stacklevel=5)
    return verdict


def failure_message(name: str, verdict: KernelVerdict) -> str:
    """What went wrong, in one sentence (without the consequence)."""
    variant = verdict.variant
    return (f"'{name}': the Triton kernel disagrees with the torch code on {variant.device} "
            f"({str(variant.dtype).replace('torch.', '')} logits, K = {verdict.num_classes}, {variant.rows} rows x "
            f"{variant.block} columns per program): {verdict.detail}")


def _run_check(member, variant: KernelVariant, num_classes: int, device: torch.device) -> KernelVerdict:
    from ._triton import sp_rows
    begin = time.perf_counter()
    logits, labels = self_check_batch(member, num_classes, variant.dtype, device)
    loss, grad, flag = sp_rows(variant.formula, logits, labels, 1.0, variant.a, variant.c, variant.check,
                               rows=variant.rows)
    exact = logits.double()
    reference = _reference(member, exact, labels)
    noise = [torch.zeros_like(r) for r in reference]
    for draw in range(2):
        wobble = torch.rand(exact.shape, generator=torch.Generator().manual_seed(draw), dtype=torch.float64) * 2 - 1
        moved = _reference(member, exact * (1 + _FLOAT32_EPS * wobble.to(device)), labels)
        noise = [torch.maximum(n, (m - r).abs()) for n, m, r in zip(noise, moved, reference)]
    worst_ratio, detail = 0.0, 'within tolerance'
    for what, got, ref, spread in (('loss', loss, reference[0], noise[0]), ('gradient', grad, reference[1], noise[1])):
        tolerance = _ABSOLUTE_TOLERANCE * (1 + ref.abs()) + _NOISE_FACTOR * spread
        error = (got.double() - ref).abs()
        ratio = torch.where(torch.isfinite(got.double()), error / tolerance, torch.full_like(error, math.inf))
        index = int(ratio.argmax())
        if float(ratio.flatten()[index]) > worst_ratio:
            worst_ratio = float(ratio.flatten()[index])
            row = index // (1 if ratio.ndim == 1 else ratio.shape[1])
            detail = (f'{what} error {float(error.flatten()[index]):.3g} (tolerance '
                      f'{float(tolerance.flatten()[index]):.3g}, kernel {float(got.flatten()[index]):.6g}, torch '
                      f'{float(ref.flatten()[index]):.6g}) at row {row} of the self-check batch')
    passed = worst_ratio <= 1.0
    if passed and flag is not None and int(flag) != 1:
        passed, detail = False, 'its validation flag reports the valid self-check batch as invalid'
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return KernelVerdict(variant, num_classes, passed, worst_ratio, detail, time.perf_counter() - begin)


def _reference(member, logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    loss, grad = member.loss_and_grad(logits, labels.unsqueeze(-1))
    return loss.reshape(-1), grad
