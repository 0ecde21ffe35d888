""" The adaptive-attack audit of ``sp-timm eval --audit``: is AutoAttack's number a gradient-masking artefact?

After AutoAttack (standard), the audit attacks again every point AutoAttack's white-box stages (APGD-CE, APGD-T,
FAB-T) left robust -- the points it counts robust plus those only its Square stage broke -- with attacks an
adaptive evaluation of a new loss needs (Athalye et al. 2018; Tramer et al. 2020), each on its own:

- ``apgd-ce`` / ``apgd-dlr``: APGD on CE and on DLR, ``restarts`` restarts (DLR needs K >= 3 classes);
- ``apgd-t``: APGD on the targeted DLR loss over ``min(K - 1, max_targets)`` targets (needs K >= 4);
- ``pgd-margin``: PGD on the CW logit margin with ``margin_restarts`` random starts and a step-size decay;
- ``apgd-loss``: APGD ascending the model's own training loss (for an SP loss, the SP loss itself, without the
  run's label smoothing, made to rise towards the boundary);
- ``square``: Square (black box) with ``square_queries`` queries and ``square_restarts`` restarts;
- ``transfer``: adversarial examples crafted with APGD-CE on a surrogate model, evaluated on the target.

Per point, the audited worst case is the AND of AutoAttack's final robust flag and every audit attack's flag (and,
where the evaluation ran FAB's minimal perturbation, ``fab-min``: not flipped within eps). The
checks from the gradient-masking literature: robust accuracy ~0 at a large budget; robust accuracy not increasing
with the budget; no point broken by a black-box attack but by no white-box one; no zero / vanishing CE gradient
at the clean points. Each attack and check is a stage of a chunk, saved as it finishes (``attacks.run_chunks``
shares and resumes the chunks), so an interrupted audit resumes at the first unfinished stage. Every attack is
seeded per call (``seed + 1``, so it does not replay AutoAttack's own random starts): a chunk's flags depend only
on its points.
"""
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..files import Tensors, load_tensors, save_tensors
from ..formatting import percent
from ..threat.pgd import LossFn, project, random_init, steepest_direction
from .attacks import AUTOATTACK_LOGGER, STANDARD_ATTACKS
from .stats import accuracy_ci

__all__ = ['AuditConfig', 'AUDIT_ATTACKS', 'FAB_MIN', 'POINT_KEYS', 'WHITE_BOX', 'BLACK_BOX', 'audit_chunk', 'audit_stages', 'audit_key',
           'audit_identity', 'audit_folder', 'loss_identity',
           'check_surrogate', 'large_eps', 'margin_loss', 'run_audit', 'run_stage', 'summarize_audit',
           'training_loss_from_record']

WHITE_BOX = ('apgd-ce', 'apgd-dlr', 'apgd-t', 'pgd-margin', 'apgd-loss')
BLACK_BOX = ('square', 'transfer')
AUDIT_ATTACKS = WHITE_BOX + BLACK_BOX
# not an audit stage: the points the evaluation's FAB minimal perturbation flipped within eps (a verified
# adversarial example inside the budget), counted against the audited accuracy like an attack's breaks
FAB_MIN = 'fab-min'
CHECK_STAGES = ('large-eps', 'grad-ce', 'grad-margin')
POINT_KEYS = ('points-attacked', 'points-clean')  # saved with a chunk's stages: the points they were run on
AA_WHITE_BOX_LAST = STANDARD_ATTACKS[-2]  # 'fab-t': the points AutoAttack's white-box stages left robust


# the fields of AuditConfig that decide what an attack computes; the others (threshold, the checks' limits) only judge
# the saved results, so changing them re-judges an audit without running it again
AUDIT_BUDGETS = ('restarts', 'n_iter', 'max_targets', 'margin_restarts', 'margin_steps', 'square_queries',
                 'square_restarts', 'large_eps_factor')


@dataclass(frozen=True)
class AuditConfig:
    """Budgets and thresholds of the audit (every one a parameter, so tests can shrink them).

    ``threshold``: the audit marks the evaluation unreliable when it lowers robust accuracy by more than this many
    percentage points. ``large_eps_factor`` / ``large_eps_max_acc``: APGD-CE at ``large_eps`` must leave at most
    this accuracy (percent). ``grad_tol`` / ``grad_max_fraction``: clean points whose CE input gradient has L2 norm
    <= ``grad_tol`` (APGD's own normaliser is 1e-12) may be at most this fraction. ``square_alpha``: black-box-only
    breaks allowed, as a fraction of the points (AutoAttack's ``check_square_sr`` uses 0.002).
    """
    restarts: int = 5
    n_iter: int = 100
    max_targets: int = 9
    margin_restarts: int = 10
    margin_steps: int = 200
    square_queries: int = 5000
    square_restarts: int = 2
    large_eps_factor: float = 16.0
    large_eps_max_acc: float = 10.0
    threshold: float = 1.0
    grad_tol: float = 1e-12
    grad_max_fraction: float = 0.01
    square_alpha: float = 0.002

    def __post_init__(self) -> None:
        bad = [k for k in AUDIT_BUDGETS if k != 'large_eps_factor' and int(getattr(self, k)) < 1]
        if bad or self.large_eps_factor <= 1 or self.threshold < 0:
            raise ValueError(f"audit budgets must be >= 1 ({', '.join(bad) or 'ok'}), --audit-large-eps-factor > 1 and "
                             f"--audit-threshold >= 0.")


def audit_key(config: AuditConfig, seed: int, extra: Sequence[Any] = ()) -> str:
    """Short hash naming an audit's work folder: other budgets, seed, surrogate or loss never reuse its chunks."""
    budgets = {k: getattr(config, k) for k in AUDIT_BUDGETS}
    text = json.dumps([budgets, seed, [str(e) for e in extra]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def loss_identity(train_loss: Optional[LossFn]) -> Optional[str]:
    """A text naming the attacked training loss and its parameters (None: no loss-aware attack)."""
    return repr(train_loss) if isinstance(train_loss, nn.Module) else getattr(train_loss, '__qualname__', None)


def audit_identity(surrogate: Optional[nn.Module], train_loss: Optional[LossFn]) -> List[Optional[str]]:
    """What, besides the model, the points and the budgets, decides an audit's results: the surrogate's weights
    (transfer attack) and the attacked training loss (loss-aware attack)."""
    from ..checkpoint import weights_sha256
    return [weights_sha256(surrogate) if surrogate is not None else None, loss_identity(train_loss)]


def audit_folder(work_dir: Path, norm: str, eps: float, config: AuditConfig, seed: int,
                 identity: Sequence[Any] = ()) -> Path:
    """The folder under ``work_dir`` where an audit saves its chunks (one safetensors file per chunk, one tensor
    per finished stage)."""
    return Path(work_dir) / f'audit-{norm}-{eps:.8g}-{audit_key(config, seed, identity)}'


def large_eps(eps: float, norm: str, factor: float, input_dim: int) -> float:
    """``factor * eps``, capped at the budget from which every image in [0, 1]^d reaches the mid-grey image
    (Linf 0.5, L2 0.5 sqrt(d)): there a non-constant classifier has no robust points to keep."""
    cap = 0.5 if norm == 'Linf' else 0.5 * math.sqrt(input_dim)
    return min(factor * eps, cap)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CW logit margin ``m(z, y) = max_{j != y} z_j - z_y`` per sample: > 0 exactly when misclassified, and
    invariant to softmax saturation (its gradient is ``grad z_j* - grad z_y``, never CE's ``(1 - p_y)``-scaled one)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float('-inf'))
    return others.amax(1) - true


def training_loss_from_record(record: Mapping[str, Any]) -> Tuple[Optional[LossFn], str]:
    """The per-sample training loss a run record names (``loss``, ``loss_params``, ``args.smoothing``), or None
    and why not: an SP loss is rebuilt with ``reduction='none'`` and without label smoothing (the attack needs its
    direction towards the boundary, see ``_TowardsBoundary``); CE with label smoothing as such; plain CE is
    APGD-CE already; other timm losses have no per-sample form here."""
    from ..losses import PerSampleCrossEntropy, create_loss, is_sp_loss
    name = record.get('loss')
    smoothing = float((record.get('args') or {}).get('smoothing') or 0.0)
    if not name:
        return None, 'the run record names no training loss'
    if is_sp_loss(name):  # without label smoothing: it moves the stationary point off the p* that
        # _TowardsBoundary switches at, which would pin the ascent there instead of leading it to the boundary
        return _TowardsBoundary(create_loss(name, reduction='none', **(record.get('loss_params') or {}))), ''
    if name in ('ce', 'cross_entropy') and smoothing > 0:
        return PerSampleCrossEntropy(smoothing), ''
    if name in ('ce', 'cross_entropy'):
        return None, 'the training loss is cross-entropy: apgd-ce ascends it already'
    return None, f"no per-sample form of the training loss '{name}'"


class _TowardsBoundary(nn.Module):
    """An SP loss made to rise towards the decision boundary, so that ascending it attacks. An SP loss is smallest
    at its stationary point ``p_y = p*``: beyond it (``p_y > p*``) ascending the loss itself pushes ``p_y`` up, away
    from the boundary. Per sample this returns ``-log p_y`` where ``p_y > p*`` (it rises from 0 to ``-log p*`` as
    ``p_y`` falls to ``p*``) and ``-log p* + l(z, y)`` where ``p_y <= p*`` (SP losses are >= 0, so the value keeps
    rising past ``p*``, where the SP loss's own gradient, not CE's, leads towards the boundary)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        pstar = self.loss.stationary_prob(logits.shape[1])
        log_py = logits.log_softmax(1).gather(1, labels[:, None]).squeeze(1)
        inner = self.loss(logits, labels) - math.log(pstar)
        return torch.where(log_py > math.log(pstar), -log_py, inner)

    def extra_repr(self) -> str:
        return repr(self.loss)


def check_surrogate(surrogate: nn.Module, images: torch.Tensor, num_classes: int, device) -> None:
    """A clear error when the surrogate cannot attack these points: another input shape or class count."""
    try:
        with torch.no_grad():
            out = surrogate.to(device).eval()(images[:1].to(device))
    except Exception as err:
        raise ValueError(f'--surrogate does not accept the evaluated images {tuple(images.shape[1:])} '
                         f'({type(err).__name__}: {str(err)[:200]}): a model of another dataset?') from err
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise ValueError(f'--surrogate has {tuple(out.shape[1:])} outputs but the evaluated model has {num_classes} '
                         f'classes: a surrogate trained on the same dataset is needed.')


def audit_stages(num_classes: int, has_loss: bool, has_surrogate: bool,
                 loss_note: str = '') -> Tuple[List[str], Dict[str, str]]:
    """The attacks that apply (in run order) and the reason for each one skipped."""
    skipped = {}
    if num_classes < 3:
        skipped['apgd-dlr'] = f'the DLR loss needs >= 3 classes ({num_classes} here)'
    if num_classes < 4:
        skipped['apgd-t'] = f'the targeted DLR loss needs >= 4 classes ({num_classes} here)'
    if not has_loss:
        skipped['apgd-loss'] = loss_note or 'no training loss given'
    if not has_surrogate:
        skipped['transfer'] = 'no --surrogate given'
    return [a for a in AUDIT_ATTACKS if a not in skipped], skipped


# --- the attacks: each maps points (all attacked) to robust flags (True: still classified correctly) ----------

def _apgd_on_loss(model: nn.Module, loss_fn: LossFn, **kwargs: Any):
    """APGD on an arbitrary per-sample loss. pyautoattack 0.2.0 dispatches APGD's loss by name ('ce', 'dlr'), so
    the loss goes in through the 'dlr' slot: APGD's iterations, momentum, step-size halving on oscillation,
    restarts, seeding and zero-gradient check are unchanged."""
    from pyautoattack.autopgd_base import APGDAttack
    adversary = APGDAttack(model, loss='dlr', **kwargs)
    adversary.dlr_loss = lambda logits, labels: loss_fn(logits.float(), labels)
    return adversary


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: Any, eps: float, norm: str, restarts: int,
          n_iter: int, seed: int, device) -> torch.Tensor:
    """APGD (Croce & Hein 2020): x_{k+1} = P(x_k + eta_k s(grad L) ) with momentum 0.75, eta_0 = 2 eps halved when
    the loss stops rising; ``loss`` 'ce', 'dlr' (-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)) or a per-sample callable."""
    from pyautoattack.autopgd_base import APGDAttack
    common = dict(norm=norm, eps=eps, n_iter=n_iter, n_restarts=restarts, seed=seed, device=device,
                  logger=logging.getLogger(AUTOATTACK_LOGGER))
    adversary = (APGDAttack(model, loss=loss, **common) if isinstance(loss, str)
                 else _apgd_on_loss(model, loss, **common))
    return _correct(model, adversary.perturb(x, y), y)


def _apgd_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, n_iter: int,
                   targets: int, seed: int, device) -> torch.Tensor:
    """APGD on the targeted DLR loss -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) for each of the ``targets``
    most likely other classes t (one restart each)."""
    from pyautoattack.autopgd_base import APGDAttack_targeted
    adversary = APGDAttack_targeted(model, norm=norm, eps=eps, n_iter=n_iter, n_restarts=1, n_target_classes=targets,
                                    seed=seed, device=device, logger=logging.getLogger(AUTOATTACK_LOGGER))
    return _correct(model, adversary.perturb(x, y), y)


def pgd_margin_step_size(step: int, steps: int, eps: float) -> float:
    """The step-size schedule of ``pgd-margin``: eps/4 for the first half of the steps, eps/10 to 3/4, eps/40 after."""
    return eps / 4 if step < steps // 2 else eps / 10 if step < 3 * steps // 4 else eps / 40


def _pgd_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, restarts: int,
                steps: int, seed: int, device) -> torch.Tensor:
    """PGD on the CW margin m = max_{j!=y} z_j - z_y: x_{t+1} = P_{B(x, eps) cap [0,1]^d}(x_t + a_t s(grad m)),
    s = sign (Linf) or g / ||g||_2 (L2), a_t by ``pgd_margin_step_size``, from a uniform random start in the ball
    each restart; a point counts broken as soon as any iterate of any restart is misclassified."""
    generator = torch.Generator().manual_seed(seed)
    robust = torch.ones(len(y), dtype=torch.bool, device=y.device)
    for _ in range(restarts):
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
            robust[index[logits.detach().argmax(1) != y0]] = False
            adv = project(adv.detach() + pgd_margin_step_size(step, steps, eps) * steepest_direction(grad, norm), x0, eps, norm)
    return robust


def _square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, queries: int,
            restarts: int, seed: int, device) -> torch.Tensor:
    """Square (Andriushchenko et al. 2020): random search over square-shaped updates at the vertices of the ball,
    accepted when the margin z_y - max_{j!=y} z_j falls; no gradient, so gradient masking cannot stop it."""
    from pyautoattack.square import SquareAttack
    adversary = SquareAttack(model, norm=norm, eps=eps, n_queries=queries, n_restarts=restarts, p_init=0.8,
                             loss='margin', resc_schedule=True, seed=seed, device=device)
    return _correct(model, adversary.perturb(x, y), y)


def _input_grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """||grad_x L(f(x), y)||_2 per point (per-sample losses summed: each point's gradient is its own)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(loss_fn(model(x).float(), y).sum(), x)
    return grad.flatten(1).norm(dim=1)


def run_stage(stage: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, seed: int,
              device, config: AuditConfig, num_classes: int, train_loss: Optional[LossFn] = None,
              surrogate: Optional[nn.Module] = None) -> torch.Tensor:
    """One stage on points ``x`` (all attacked): robust flags for an attack and for ``large-eps``, input-gradient
    norms for ``grad-ce`` / ``grad-margin``."""
    apgd = dict(norm=norm, n_iter=config.n_iter, seed=seed, device=device)
    if stage == 'apgd-ce':
        return _apgd(model, x, y, loss='ce', eps=eps, restarts=config.restarts, **apgd)
    if stage == 'apgd-dlr':
        return _apgd(model, x, y, loss='dlr', eps=eps, restarts=config.restarts, **apgd)
    if stage == 'apgd-t':
        return _apgd_targeted(model, x, y, eps=eps, targets=min(num_classes - 1, config.max_targets), **apgd)
    if stage == 'apgd-loss':
        return _apgd(model, x, y, loss=train_loss, eps=eps, restarts=config.restarts, **apgd)
    if stage == 'pgd-margin':
        return _pgd_margin(model, x, y, eps=eps, norm=norm, restarts=config.margin_restarts, steps=config.margin_steps,
                           seed=seed, device=device)
    if stage == 'square':
        return _square(model, x, y, eps=eps, norm=norm, queries=config.square_queries, restarts=config.square_restarts,
                       seed=seed, device=device)
    if stage == 'transfer':
        from pyautoattack.autopgd_base import APGDAttack
        adversary = APGDAttack(surrogate, loss='ce', eps=eps, n_restarts=config.restarts,
                               logger=logging.getLogger(AUTOATTACK_LOGGER), **apgd)
        return _correct(model, adversary.perturb(x, y), y)
    if stage == 'large-eps':
        big = large_eps(eps, norm, config.large_eps_factor, x[0].numel())
        return _apgd(model, x, y, loss='ce', eps=big, restarts=1, **apgd)
    if stage == 'grad-ce':
        return _input_grad_norm(model, x, y, lambda z, t: F.cross_entropy(z, t, reduction='none'))
    if stage == 'grad-margin':
        return _input_grad_norm(model, x, y, margin_loss)
    raise ValueError(f"unknown audit stage '{stage}'")


def audit_chunk(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, aa: Mapping[str, torch.Tensor], *,
                eps: float, norm: str, seed: int, batch_size: int, device, config: AuditConfig, stages: Sequence[str],
                num_classes: int, train_loss: Optional[LossFn] = None, surrogate: Optional[nn.Module] = None,
                path: Optional[Path] = None) -> Tensors:
    """The audit of one chunk, given its AutoAttack flags ``aa``. Returns one tensor per stage over the chunk's
    points: for an attack, True where the point is left robust by AutoAttack's white-box stages and the attack did
    not break it; for ``large-eps``, the same over the clean-correct points; the gradient norms over all points.
    With ``path``, saved after every stage with the points they attacked; a partial result there is continued,
    never recomputed -- unless AutoAttack's flags changed since (its chunk recomputed): then the audit starts over."""
    attacked = aa[AA_WHITE_BOX_LAST].bool()
    points = dict(zip(POINT_KEYS, (attacked, aa['clean'].bool())))
    result = load_tensors(path)
    if any(key not in result or not torch.equal(result[key].bool(), value.cpu()) for key, value in points.items()):
        result = dict(points)  # stages of other points (or of a file that did not record them) would be misread
    for stage in (*stages, *CHECK_STAGES):
        if stage in result:  # done before an interruption
            continue
        on = aa['clean'].bool() if stage == 'large-eps' else attacked
        if stage.startswith('grad-'):
            on = torch.ones_like(attacked)
        index = on.nonzero().flatten()
        out = torch.zeros(len(labels), dtype=torch.float32 if stage.startswith('grad-') else torch.bool)
        for start in range(0, len(index), batch_size):
            part = index[start:start + batch_size]
            flags = run_stage(stage, model, images[part].to(device), labels[part].to(device), eps=eps, norm=norm,
                              seed=seed, device=device, config=config, num_classes=num_classes, train_loss=train_loss,
                              surrogate=surrogate)
            out[part] = flags.detach().cpu().to(out.dtype)
        result[stage] = out
        save_tensors(path, result)
    return result


# --- the summary ------------------------------------------------------------------------------------------------

def _check(passed: bool, **values: Any) -> Dict[str, Any]:
    return {'passed': bool(passed), **values}


def fab_robust_flags(distance: torch.Tensor, eps: float, n: int) -> torch.Tensor:
    """Per point, False where FAB's minimal perturbation (over the first ``len(distance)`` of ``n`` points) is
    within ``eps``: FAB verified that example is misclassified, so the point is not robust at ``eps``."""
    if len(distance) > n:
        raise ValueError(f'FAB distances of {len(distance)} points for {n} evaluated points: FAB runs on the first '
                         f'points of those evaluated, at most all of them.')
    robust = torch.ones(n, dtype=torch.bool)
    robust[:len(distance)] = ~(distance.cpu() <= eps)
    return robust


def summarize_audit(aa: Mapping[str, torch.Tensor], flags: Mapping[str, torch.Tensor], *, eps: float, norm: str,
                    input_dim: int, config: AuditConfig, skipped: Mapping[str, str],
                    curve: Optional[Mapping[float, torch.Tensor]] = None, seed: int = 0,
                    fab_distance: Optional[torch.Tensor] = None) -> Tuple[Dict[str, Any], Tensors]:
    """The report's ``audit`` section (JSON-ready) and the per-point tensors (``worst`` and each attack's flags).

    Audited robust flag per point = AutoAttack's final flag AND every audit attack's flag AND, given the
    evaluation's FAB minimal perturbations ``fab_distance``, ``distance > eps`` (row ``fab-min``). ``unreliable``
    when the audit lowers robust accuracy by more than ``config.threshold`` points or a check fails."""
    n = len(aa['clean'])
    final = aa[STANDARD_ATTACKS[-1]].bool()
    if fab_distance is not None:
        flags = {**flags, FAB_MIN: fab_robust_flags(fab_distance, eps, n)}
    attacks = [a for a in (*AUDIT_ATTACKS, FAB_MIN) if a in flags]
    worst = final.clone()
    for a in attacks:
        worst &= flags[a].bool()
    rows = []
    for a in attacks:
        others = final.clone()
        for b in attacks:
            if b != a:
                others &= flags[b].bool()
        broke = final & ~flags[a].bool()
        rows.append({'attack': a, 'kind': 'black-box' if a in BLACK_BOX else 'white-box',
                     'acc': percent(final & flags[a].bool()), 'broke_beyond_aa': int(broke.sum()),
                     'broke_only_this': int((others & ~flags[a].bool()).sum())})
    aa_acc, acc = percent(final), percent(worst)
    checks = _checks(aa, flags, eps=eps, norm=norm, input_dim=input_dim, config=config, curve=curve or {},
                     attacks=attacks)
    reasons = []
    if 100 * int((final & ~worst).sum()) > round(config.threshold * n, 9):  # in counts: exactly the threshold passes
        reasons.append(f'the audit lowers robust accuracy by {aa_acc - acc:.2f} points (> {config.threshold:g})')
    reasons += [f"check '{name}' failed" for name, c in checks.items() if not c['passed']]
    summary = {
        'config': dict(asdict(config), seed=seed + 1, large_eps=large_eps(eps, norm, config.large_eps_factor, input_dim)),
        'attacked_points': int(aa[AA_WHITE_BOX_LAST].sum()), 'attacks': rows, 'skipped': dict(skipped),
        'autoattack_acc': aa_acc, 'robust_acc': acc, 'robust_ci': list(accuracy_ci(int(worst.sum()), n)),
        'drop': aa_acc - acc, 'broke_beyond_aa': int((final & ~worst).sum()), 'threshold': config.threshold,
        'checks': checks, 'unreliable': bool(reasons), 'reasons': reasons,
        'fab_min_points': 0 if fab_distance is None else len(fab_distance),
    }
    return summary, {'worst': worst, **{a: flags[a].bool() for a in attacks}}


def _checks(aa: Mapping[str, torch.Tensor], flags: Mapping[str, torch.Tensor], *, eps: float, norm: str,
            input_dim: int, config: AuditConfig, curve: Mapping[float, torch.Tensor],
            attacks: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    clean, final, n = aa['clean'].bool(), aa[STANDARD_ATTACKS[-1]].bool(), len(aa['clean'])
    big = large_eps(eps, norm, config.large_eps_factor, input_dim)
    big_acc = percent(flags['large-eps'].bool() & clean)
    points = sorted([(eps, percent(final))] + [(e, percent(f)) for e, f in curve.items()] + [(big, big_acc)])
    rises = [(a, b) for a, b in zip(points, points[1:]) if b[1] > a[1] + 1e-9]
    # black-box breaks: AutoAttack's Square stage (only on its white-box survivors) and the audit's black-box attacks
    white_robust = aa[AA_WHITE_BOX_LAST].bool().clone()
    for a in attacks:
        if a not in BLACK_BOX:
            white_robust &= flags[a].bool()
    black_broken = white_robust & ~final
    for a in attacks:
        if a in BLACK_BOX:
            black_broken |= white_robust & ~flags[a].bool()
    grad = flags['grad-ce'][clean]
    vanishing = float((grad <= config.grad_tol).double().mean()) if len(grad) else 0.0
    return {
        'large_eps': _check(big_acc <= config.large_eps_max_acc, eps=big, acc=big_acc, max_acc=config.large_eps_max_acc,
                            attack='apgd-ce'),
        'monotonic_eps': _check(not rises, curve=[list(p) for p in points],
                                rises=[[a[0], b[0]] for a, b in rises]),
        'white_vs_black_box': _check(int(black_broken.sum()) <= config.square_alpha * n,
                                     points=int(black_broken.sum()), max_points=config.square_alpha * n),
        'gradient_norms': _check(vanishing <= config.grad_max_fraction, vanishing_fraction=vanishing,
                                 zero_fraction=float((grad == 0).double().mean()) if len(grad) else 0.0,
                                 margin_zero_fraction=float((flags['grad-margin'][clean] == 0).double().mean())
                                 if len(grad) else 0.0,
                                 median_ce_norm=float(grad.median()) if len(grad) else None,
                                 tol=config.grad_tol, max_fraction=config.grad_max_fraction),
    }


def run_audit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, aa: Mapping[str, torch.Tensor], *,
              eps: float, norm: str, seed: int, batch_size: int, chunk_size: int, device, config: AuditConfig,
              num_classes: int, curve: Optional[Mapping[float, torch.Tensor]] = None,
              train_loss: Optional[LossFn] = None, loss_note: str = '', surrogate: Optional[nn.Module] = None,
              work_dir: Optional[Path] = None, identity: Sequence[Any] = (),
              fab_distance: Optional[torch.Tensor] = None, progress: bool = True) -> Tuple[Dict[str, Any], Tensors]:
    """The audit over all points, in the chunks of the AutoAttack run (shared by the processes, resumed from
    ``work_dir``); returns ``summarize_audit``'s section and per-point tensors (with ``fab_distance``, the FAB
    minimal perturbations of the evaluation, counted as row ``fab-min``)."""
    from .attacks import Chunks, run_chunks
    stages, skipped = audit_stages(num_classes, train_loss is not None, surrogate is not None, loss_note)
    folder = None if work_dir is None else audit_folder(work_dir, norm, eps, config, seed, identity)
    chunks = Chunks(len(labels), chunk_size)
    compute = lambda c, s: audit_chunk(model, images[s], labels[s], {k: v[s] for k, v in aa.items()}, eps=eps,
                                       norm=norm, seed=seed + 1, batch_size=batch_size, device=device, config=config,
                                       stages=stages, num_classes=num_classes, train_loss=train_loss,
                                       surrogate=surrogate,
                                       path=None if folder is None else folder / f'chunk-{c:05d}.safetensors')
    flags = run_chunks(chunks, compute, f'audit {norm} ({len(stages)} attacks)', progress)
    return summarize_audit(aa, flags, eps=eps, norm=norm, input_dim=images[0].numel(), config=config,
                           skipped=skipped, curve=curve, seed=seed, fab_distance=fab_distance)
