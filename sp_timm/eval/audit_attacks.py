""" The attacks of the adaptive audit, each one registered class (as AutoAttack's attacks are classes with one
interface): ``name``, ``kind`` (white-box or black-box), ``skip_reason`` (whether it applies to K classes and to the
inputs at hand) and ``run`` (points -> adversarial images within the budget: where the attack broke a point, an image
the model misclassifies; the audit keeps those, an external evaluation's evidence). A new
attack is one class with ``@register_audit_attack``; the audit runs the registered attacks in registration order,
reports each one's row, and its checks count black-box attacks apart.

The attacks (Athalye et al. 2018; Tramer et al. 2020: what an adaptive evaluation of a new loss needs):

- ``apgd-ce`` / ``apgd-dlr``: APGD on CE and on DLR, ``restarts`` restarts (DLR needs K >= 3 classes);
- ``apgd-t``: APGD on the targeted DLR loss over ``min(K - 1, max_targets)`` targets (needs K >= 4);
- ``pgd-margin``: PGD on the CW logit margin with ``margin_restarts`` random starts and a step-size decay;
- ``apgd-loss``: APGD ascending the model's own training loss (``AuditInputs.train_loss``);
- ``square``: Square (black box) with ``square_queries`` queries and ``square_restarts`` restarts;
- ``transfer``: adversarial examples crafted with APGD-CE on a surrogate model (``AuditInputs.surrogate``).
"""
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple, Type, TypeVar

import torch
from torch import nn

from ..threat.pgd import LossFn, project, random_init, steepest_direction
from .attacks import AUTOATTACK_LOGGER
from .config import AuditConfig

__all__ = ['AuditInputs', 'AuditContext', 'AuditAttack', 'register_audit_attack', 'audit_attack', 'audit_attack_names',
           'margin_loss', 'pgd_margin_step_size', 'apgd', 'correct']

WHITE, BLACK = 'white-box', 'black-box'


class AuditInputs(NamedTuple):
    """What some attacks need beyond the model and the points: a surrogate model of the same classes and inputs
    (``transfer``), and the model's per-sample training loss (``apgd-loss``; ``loss_note`` says why there is none)."""
    surrogate: Optional[nn.Module] = None
    train_loss: Optional[LossFn] = None
    loss_note: str = ''


@dataclass(frozen=True)
class AuditContext:
    """Everything an audit stage needs besides the model and the points."""
    eps: float
    norm: str
    seed: int
    device: Any
    config: AuditConfig
    num_classes: int
    inputs: AuditInputs = AuditInputs()


class AuditAttack:
    """One attack of the audit. ``run`` attacks every point it is given and returns one image per point within the
    budget around it: misclassified where the attack succeeded (``correct`` gives the robust flags)."""
    name: ClassVar[str] = ''
    kind: ClassVar[str] = WHITE

    def skip_reason(self, num_classes: int, inputs: AuditInputs) -> Optional[str]:
        """Why the attack does not apply (None: it applies)."""
        return None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: AuditContext) -> torch.Tensor:
        raise NotImplementedError


_REGISTRY: Dict[str, AuditAttack] = {}
AttackT = TypeVar('AttackT', bound=Type[AuditAttack])


def register_audit_attack(cls: AttackT) -> AttackT:
    """Class decorator: add an attack to the audit (after those registered before it)."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"audit attack {cls.__name__} needs a name no other attack has, got {cls.name!r}.")
    if cls.kind not in (WHITE, BLACK):
        raise ValueError(f"audit attack '{cls.name}': kind must be '{WHITE}' or '{BLACK}', got {cls.kind!r}.")
    _REGISTRY[cls.name] = cls()
    return cls


def audit_attack(name: str) -> AuditAttack:
    return _REGISTRY[name]


def audit_attack_names(kind: Optional[str] = None) -> Tuple[str, ...]:
    """The registered attacks in run order (of one ``kind`` when given)."""
    return tuple(n for n, a in _REGISTRY.items() if kind is None or a.kind == kind)


# --- shared pieces ----------------------------------------------------------------------------------------------

def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CW logit margin ``m(z, y) = max_{j != y} z_j - z_y`` per sample: > 0 exactly when misclassified, and
    invariant to softmax saturation (its gradient is ``grad z_j* - grad z_y``, never CE's ``(1 - p_y)``-scaled one)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float('-inf'))
    return others.amax(1) - true


def _apgd_on_loss(model: nn.Module, loss_fn: LossFn, **kwargs: Any):
    """APGD on an arbitrary per-sample loss. pyautoattack 0.2.0 dispatches APGD's loss by name ('ce', 'dlr'), so
    the loss goes in through the 'dlr' slot: APGD's iterations, momentum, step-size halving on oscillation,
    restarts, seeding and zero-gradient check are unchanged."""
    from pyautoattack.autopgd_base import APGDAttack
    adversary = APGDAttack(model, loss='dlr', **kwargs)
    adversary.dlr_loss = lambda logits, labels: loss_fn(logits.float(), labels)
    return adversary


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: AuditContext, loss: Any,
         eps: Optional[float] = None, restarts: Optional[int] = None) -> torch.Tensor:
    """APGD (Croce & Hein 2020): x_{k+1} = P(x_k + eta_k s(grad L) ) with momentum 0.75, eta_0 = 2 eps halved when
    the loss stops rising; ``loss`` 'ce', 'dlr' (-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)) or a per-sample callable.
    ``eps`` / ``restarts``: the context's budget and ``config.restarts`` unless given. Returns the adversarial images
    (``x`` itself where APGD found none)."""
    from pyautoattack.autopgd_base import APGDAttack
    common = dict(norm=context.norm, eps=context.eps if eps is None else eps, n_iter=context.config.n_iter,
                  n_restarts=context.config.restarts if restarts is None else restarts, seed=context.seed,
                  device=context.device, logger=logging.getLogger(AUTOATTACK_LOGGER))
    adversary = (APGDAttack(model, loss=loss, **common) if isinstance(loss, str)
                 else _apgd_on_loss(model, loss, **common))
    return adversary.perturb(x, y)


def pgd_margin_step_size(step: int, steps: int, eps: float) -> float:
    """The step-size schedule of ``pgd-margin``: eps/4 for the first half of the steps, eps/10 to 3/4, eps/40 after."""
    return eps / 4 if step < steps // 2 else eps / 10 if step < 3 * steps // 4 else eps / 40


# --- the attacks, in run order ------------------------------------------------------------------------------------

@register_audit_attack
class ApgdCE(AuditAttack):
    name = 'apgd-ce'

    def run(self, model, x, y, context):
        return apgd(model, x, y, context, 'ce')


@register_audit_attack
class ApgdDLR(AuditAttack):
    name = 'apgd-dlr'

    def skip_reason(self, num_classes, inputs):
        return f'the DLR loss needs >= 3 classes ({num_classes} here)' if num_classes < 3 else None

    def run(self, model, x, y, context):
        return apgd(model, x, y, context, 'dlr')


@register_audit_attack
class ApgdTargeted(AuditAttack):
    """APGD on the targeted DLR loss -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) for each of the most likely
    other classes t (one restart each)."""
    name = 'apgd-t'

    def skip_reason(self, num_classes, inputs):
        return f'the targeted DLR loss needs >= 4 classes ({num_classes} here)' if num_classes < 4 else None

    def run(self, model, x, y, context):
        from pyautoattack.autopgd_base import APGDAttack_targeted
        targets = min(context.num_classes - 1, context.config.max_targets)
        adversary = APGDAttack_targeted(model, norm=context.norm, eps=context.eps, n_iter=context.config.n_iter,
                                        n_restarts=1, n_target_classes=targets, seed=context.seed,
                                        device=context.device, logger=logging.getLogger(AUTOATTACK_LOGGER))
        return adversary.perturb(x, y)


@register_audit_attack
class PgdMargin(AuditAttack):
    """PGD on the CW margin m = max_{j!=y} z_j - z_y: x_{t+1} = P_{B(x, eps) cap [0,1]^d}(x_t + a_t s(grad m)),
    s = sign (Linf) or g / ||g||_2 (L2), a_t by ``pgd_margin_step_size``, from a uniform random start in the ball
    each restart; a point counts broken as soon as any iterate of any restart is misclassified (that iterate is its
    adversarial image)."""
    name = 'pgd-margin'

    def run(self, model, x, y, context):
        eps, norm, steps = context.eps, context.norm, context.config.margin_steps
        generator = torch.Generator().manual_seed(context.seed)
        robust = torch.ones(len(y), dtype=torch.bool, device=y.device)
        found = x.detach().clone()
        for _ in range(context.config.margin_restarts):
            index = robust.nonzero().flatten()
            if not len(index):
                break
            x0, y0 = x[index], y[index]
            adv = random_init(x0, eps, norm, generator)
            for step in range(steps + 1):
                adv.requires_grad_(True)
                with torch.enable_grad():
                    logits = model(adv)
                    grad, = torch.autograd.grad(margin_loss(logits, y0).sum(), adv)
                fooled = logits.detach().argmax(1) != y0
                found[index[fooled]] = adv.detach()[fooled]
                robust[index[fooled]] = False
                index, x0, y0, adv, grad = (t[~fooled] for t in (index, x0, y0, adv, grad))
                if not len(index):
                    break
                adv = project(adv.detach() + pgd_margin_step_size(step, steps, eps) * steepest_direction(grad, norm),
                              x0, eps, norm)
        return found


@register_audit_attack
class ApgdTrainingLoss(AuditAttack):
    """APGD ascending the model's own per-sample training loss."""
    name = 'apgd-loss'

    def skip_reason(self, num_classes, inputs):
        return None if inputs.train_loss is not None else (inputs.loss_note or 'no training loss given')

    def run(self, model, x, y, context):
        return apgd(model, x, y, context, context.inputs.train_loss)


@register_audit_attack
class Square(AuditAttack):
    """Square (Andriushchenko et al. 2020): random search over square-shaped updates at the vertices of the ball,
    accepted when the margin z_y - max_{j!=y} z_j falls; no gradient, so gradient masking cannot stop it."""
    name = 'square'
    kind = BLACK

    def run(self, model, x, y, context):
        from pyautoattack.square import SquareAttack
        adversary = SquareAttack(model, norm=context.norm, eps=context.eps, n_queries=context.config.square_queries,
                                 n_restarts=context.config.square_restarts, p_init=0.8, loss='margin',
                                 resc_schedule=True, seed=context.seed, device=context.device)
        return adversary.perturb(x, y)


@register_audit_attack
class Transfer(AuditAttack):
    """APGD-CE adversarial examples of a surrogate model, evaluated on the audited one."""
    name = 'transfer'
    kind = BLACK

    def skip_reason(self, num_classes, inputs):
        return None if inputs.surrogate is not None else 'no --surrogate given'

    def run(self, model, x, y, context):
        from pyautoattack.autopgd_base import APGDAttack
        adversary = APGDAttack(context.inputs.surrogate, loss='ce', eps=context.eps, n_restarts=context.config.restarts,
                               logger=logging.getLogger(AUTOATTACK_LOGGER), norm=context.norm,
                               n_iter=context.config.n_iter, seed=context.seed, device=context.device)
        return adversary.perturb(x, y)
