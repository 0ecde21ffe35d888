""" Projected gradient ascent inside a threat model's ball, one set of primitives for adversarial training and the
audit, and the attacks of adversarial training as the reference implementations run them (the model in eval mode,
a random start, signed (Linf) or normalised (L2) gradient steps, projection onto the eps-ball, and clipping to the
[0, 1] image box after every step).

With ``B(x, eps) = {x' : ||x' - x|| <= eps}`` and the box ``[0, 1]^d``:

* ``project(x', x, eps, norm)``: ``clip_[0,1](x + P_eps(x' - x))``, with ``P_eps`` the per-example projection onto
  the ball (Linf: clamp to ``[-eps, eps]``; L2: scale by ``min(1, eps / ||delta||_2)``);
* ``steepest_direction(g, norm)``: ``sign(g)`` (Linf) or ``g / ||g||_2`` (L2), the unit step of steepest ascent;
* ``random_init(x, eps, norm)``: a uniform point of the Linf ball, or a uniformly random direction at a radius
  ``U(0, 1) eps`` for L2, clipped to the box.
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['LossFn', 'l2_norm', 'project_delta', 'project', 'steepest_direction', 'random_init', 'perturbation_norm',
           'pgd_attack', 'trades_attack', 'trades_kl']

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_NORM_FLOOR = 1e-12


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, floored at 1e-12 (no division by zero), shaped to broadcast against ``x``."""
    return x.flatten(1).norm(dim=1).clamp_min(_NORM_FLOOR).view(-1, *([1] * (x.dim() - 1)))


def project_delta(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The closest point of the ``norm``-ball of radius ``eps`` (per example)."""
    if norm == 'Linf':
        return delta.clamp(-eps, eps)
    return delta * (eps / l2_norm(delta)).clamp(max=1.0)


def project(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``adv`` moved into ``B(x, eps)`` and then into the [0, 1] box."""
    return (x + project_delta(adv - x, eps, norm)).clamp(0.0, 1.0)


def steepest_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step of steepest ascent for ``norm``: ``sign(grad)`` (Linf) or ``grad / ||grad||_2`` (L2)."""
    return grad.sign() if norm == 'Linf' else grad / l2_norm(grad)


def random_init(x: torch.Tensor, eps: float, norm: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random point of ``B(x, eps)`` in the box. Without ``generator`` it is drawn on ``x``'s device from the
    global generator (adversarial training, seeded per epoch); with one, on the CPU from it (the audit, whose
    result must depend only on its seed and points)."""
    if generator is None:
        if norm == 'Linf':
            delta = torch.empty_like(x).uniform_(-eps, eps)
        else:
            direction = torch.randn_like(x)
            radius = torch.rand(x.shape[0], device=x.device).view(-1, *([1] * (x.dim() - 1)))
            delta = direction / l2_norm(direction) * radius * eps
        return (x + delta).clamp(0, 1)
    noise = torch.rand(x.shape, generator=generator) * 2 - 1
    if norm == 'L2':
        noise = steepest_direction(torch.randn(x.shape, generator=generator), 'L2') * torch.rand(
            len(x), generator=generator).view(-1, *[1] * (x.dim() - 1))
    return project(x + eps * noise.to(x.device), x, eps, norm)


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """``||delta||`` per example in the threat model's norm."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == 'Linf' else flat.norm(dim=1)


def _mean_to_sum_scale(batch: int) -> float:
    """``2**ceil(log2 batch)``: a batch-mean loss times this has about its sum's per-example input gradients,
    which a mean's ``1 / batch`` can push below fp16's smallest number under autocast (no step at all). A power of
    two, so in fp32 every gradient is scaled exactly: Linf steps (the sign) are bit-identical to the mean's; L2
    steps too, but where the mean's gradient norm was under ``l2_norm``'s 1e-12 floor (a shrunken step then)."""
    return float(2 ** max(0, (batch - 1).bit_length()))


def _run_in_eval(model: nn.Module, attack: Callable[[], torch.Tensor]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return attack()
    finally:
        model.train(was_training)


def pgd_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, step_size: float,
               steps: int, norm: str = 'Linf', loss_fn: LossFn = F.cross_entropy,
               random_start: bool = True) -> torch.Tensor:
    """PGD (Madry et al., 2018): maximise ``loss_fn(model(x'), y)`` over ``||x' - x|| <= eps``, ``x'`` in [0, 1].

    x'_0 = ``random_init(x)`` (or x without ``random_start``);
    x'_{t+1} = ``project(x'_t + alpha * steepest_direction(grad))``.
    Returns detached adversarial images; ``model``'s train/eval mode is restored.
    """
    images = images.detach()

    def attack() -> torch.Tensor:
        adv = random_init(images, eps, norm) if random_start else images.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = loss_fn(model(adv).float(), labels)
            grad, = torch.autograd.grad(loss * _mean_to_sum_scale(len(images)), adv)
            adv = project(adv.detach() + step_size * steepest_direction(grad, norm), images, eps, norm)
        return adv.detach()

    return _run_in_eval(model, attack)


def trades_kl(adv_logits: torch.Tensor, natural_logits: torch.Tensor) -> torch.Tensor:
    """KL(f(x) || f(x')) averaged over the batch, the robustness term of TRADES (``batchmean``)."""
    return F.kl_div(F.log_softmax(adv_logits.float(), dim=1), F.softmax(natural_logits.float(), dim=1),
                    reduction='batchmean')


def trades_attack(model: nn.Module, images: torch.Tensor, eps: float, step_size: float, steps: int,
                  norm: str = 'Linf') -> torch.Tensor:
    """TRADES's inner maximisation (Zhang et al., 2019): maximise KL(f(x) || f(x')) from x + 0.001 N(0, I),
    with the same steps, projection and clipping as PGD."""
    images = images.detach()

    def attack() -> torch.Tensor:
        with torch.no_grad():
            natural = model(images).float()
        adv = (images + 0.001 * torch.randn_like(images)).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.kl_div(F.log_softmax(model(adv).float(), dim=1), F.softmax(natural, dim=1), reduction='sum')
            grad, = torch.autograd.grad(loss, adv)
            adv = project(adv.detach() + step_size * steepest_direction(grad, norm), images, eps, norm)
        return adv.detach()

    return _run_in_eval(model, attack)
