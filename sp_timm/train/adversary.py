""" The attacks of adversarial training, as the reference implementations run them: the model in eval mode,
a random start, signed (Linf) or normalised (L2) gradient steps, projection onto the eps-ball, and clipping
to the [0, 1] image box after every step. """
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['pgd_attack', 'trades_attack', 'trades_kl', 'project']

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _l2_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The closest point of the ``norm``-ball of radius ``eps`` (per example)."""
    if norm == 'Linf':
        return delta.clamp(-eps, eps)
    return delta * (eps / _l2_norm(delta)).clamp(max=1.0)


def _ascent_step(grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    return step_size * (grad.sign() if norm == 'Linf' else grad / _l2_norm(grad))


def _mean_to_sum_scale(batch: int) -> float:
    """``2**ceil(log2 batch)``: a batch-mean loss times this has about its sum's per-example input gradients,
    which a mean's ``1 / batch`` can push below fp16's smallest number under autocast (no step at all). A power of
    two, so in fp32 every gradient is scaled exactly: Linf steps (the sign) are bit-identical to the mean's; L2
    steps too, but where the mean's gradient norm was under ``_l2_norm``'s 1e-12 floor (a shrunken step then)."""
    return float(2 ** max(0, (batch - 1).bit_length()))


def _run_in_eval(model: nn.Module, attack: Callable[[], torch.Tensor]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return attack()
    finally:
        model.train(was_training)


def pgd_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, step_size: float,
               steps: int, norm: str = 'Linf', loss_fn: LossFn = F.cross_entropy, random_start: bool = True) -> torch.Tensor:
    """PGD (Madry et al., 2018): maximise ``loss_fn(model(x'), y)`` over ``||x' - x|| <= eps``, ``x'`` in [0, 1].

    x'_0 = clip(x + U(-eps, eps)) (Linf) or x + a random direction of norm U(0, eps) (L2);
    x'_{t+1} = clip_[0,1](x + P_eps(x'_t + alpha * step(grad) - x)), step = sign (Linf) or grad / ||grad||_2 (L2).
    Returns detached adversarial images; ``model``'s train/eval mode is restored.
    """
    images = images.detach()

    def attack() -> torch.Tensor:
        if random_start:
            if norm == 'Linf':
                delta = torch.empty_like(images).uniform_(-eps, eps)
            else:
                direction = torch.randn_like(images)
                radius = torch.rand(images.shape[0], device=images.device).view(-1, *([1] * (images.dim() - 1)))
                delta = direction / _l2_norm(direction) * radius * eps
        else:
            delta = torch.zeros_like(images)
        adv = (images + delta).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = loss_fn(model(adv).float(), labels)
            grad, = torch.autograd.grad(loss * _mean_to_sum_scale(len(images)), adv)
            adv = adv.detach() + _ascent_step(grad, step_size, norm)
            adv = (images + project(adv - images, eps, norm)).clamp(0, 1)
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
            adv = adv.detach() + _ascent_step(grad, step_size, norm)
            adv = (images + project(adv - images, eps, norm)).clamp(0, 1)
        return adv.detach()

    return _run_in_eval(model, attack)
