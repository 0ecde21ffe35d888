""" The adaptive-attack audit of ``sp-timm eval --audit``: is AutoAttack's number a gradient-masking artefact?

After AutoAttack (standard), the audit attacks again every point AutoAttack's white-box stages (APGD-CE, APGD-T,
FAB-T) left robust -- the points it counts robust plus those only its Square stage broke -- with each registered
attack of ``audit_attacks`` (APGD-CE / DLR with restarts, APGD-T, margin PGD, the model's training loss, Square with
more queries, transfer from a surrogate), each on its own.

Per point, the audited worst case is the AND of AutoAttack's final robust flag and every audit attack's flag (and,
where the evaluation ran FAB's minimal perturbation, ``fab-min``: not flipped within eps). The
checks from the gradient-masking literature: robust accuracy ~0 at a large budget; robust accuracy not increasing
with the budget; no point broken by a black-box attack but by no white-box one; no zero / vanishing CE gradient
at the clean points. Each attack and check is a stage of a chunk, saved as it finishes (``attacks.run_chunks``
shares and resumes the chunks), so an interrupted audit resumes at the first unfinished stage. Every attack is
seeded per call (``seed + 1``, so it does not replay AutoAttack's own random starts): a chunk's flags depend only
on its points. The adversarial images of the points an audit attack broke are kept with the chunk (``ADV_KEYS``):
the evidence ``external_bundle`` hands to a leaderboard.
"""
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..files import Tensors, load_tensors, save_tensors
from ..formatting import percent
from ..records import AuditAttackRow, AuditSummary, RunRecord
from ..threat.pgd import LossFn
from .attacks import ROBUST, WHITE_BOX, StageReport
from .audit_attacks import (BLACK, AuditContext, AuditInputs, apgd, audit_attack, audit_attack_names, correct,
                            margin_loss)
from .config import AUDIT_BUDGETS, AuditConfig
from .stats import accuracy_ci

__all__ = ['AuditPlan', 'FAB_MIN', 'CHECK_STAGES', 'POINT_KEYS', 'ADV_KEYS', 'ADV_IMAGES', 'ADV_INDEX', 'ADV_ATTACK',
           'ADV_KEPT', 'audit_chunk', 'audit_stages', 'audit_key',
           'audit_identity', 'audit_folder', 'loss_identity', 'check_surrogate', 'large_eps', 'run_audit', 'run_stage',
           'summarize_audit', 'training_loss_from_run', 'fab_robust_flags']

# not an audit stage: the points the evaluation's FAB minimal perturbation flipped within eps (a verified
# adversarial example inside the budget), counted against the audited accuracy like an attack's breaks
FAB_MIN = 'fab-min'
# the checks judge masking with the scale-invariant margin loss: a softmax saturated in float32 zeroes CE's input
# gradient (and stops APGD-CE) without hiding anything from the margin, DLR or black-box attacks
LARGE_EPS = 'large-eps-margin'
CHECK_STAGES = (LARGE_EPS, 'grad-ce', 'grad-margin')
CE_SATURATION_NOTE = 0.01  # a note when CE's input gradient vanishes at more than this fraction of clean points
POINT_KEYS = ('points-attacked', 'points-clean')  # saved with a chunk's stages: the points they were run on
# the adversarial images of the points the audit's attacks broke (each by the first attack that did), their point
# indices, the attack (its position in audit_attack_names()); ADV_KEPT per chunk: False for a chunk audited before
# sp-timm kept images (its broken points have none)
ADV_IMAGES, ADV_INDEX, ADV_ATTACK, ADV_KEPT = 'adv-images', 'adv-index', 'adv-attack', 'adv-kept'
ADV_KEYS = (ADV_IMAGES, ADV_INDEX, ADV_ATTACK, ADV_KEPT)


@dataclass(frozen=True)
class AuditPlan:
    """How ``run_audit`` goes over the points: the stages' context, the batch and chunk sizes (those of the
    AutoAttack run, so processes share the same chunks), the accuracy at other budgets (the monotonicity check),
    the evaluation's FAB minimal perturbations (row ``fab-min``), where chunks are saved, progress bars."""
    context: AuditContext
    batch_size: int
    chunk_size: int
    curve: Mapping[float, torch.Tensor] = field(default_factory=dict)
    fab_distance: Optional[torch.Tensor] = None
    work_dir: Optional[Path] = None
    progress: bool = True


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
    return min(factor * eps, _grey_budget(norm, input_dim))


def _grey_budget(norm: str, input_dim: int) -> float:
    return 0.5 if norm == 'Linf' else 0.5 * math.sqrt(input_dim)


def large_eps_ladder(eps: float, norm: str, factor: float, input_dim: int) -> List[float]:
    """The budgets of the ``large_eps`` check: ``large_eps``, then doubled up to the mid-grey budget, where no
    non-constant classifier keeps robust points. A model robust beyond ``factor * eps`` (a linear model on random
    images can be) is broken further up; a masked one stays unbroken all the way."""
    ladder = [large_eps(eps, norm, factor, input_dim)]
    while ladder[-1] < _grey_budget(norm, input_dim):
        ladder.append(min(2 * ladder[-1], _grey_budget(norm, input_dim)))
    return ladder


def training_loss_from_run(record: Optional[RunRecord]) -> Tuple[Optional[LossFn], str]:
    """The per-sample training loss a run record names (``loss``, ``loss_params``, ``config.smoothing``), or None
    and why not: an SP loss is rebuilt with ``reduction='none'`` and without label smoothing (the attack needs its
    direction towards the boundary, see ``_TowardsBoundary``); CE with label smoothing as such; plain CE is
    APGD-CE already; other timm losses have no per-sample form here. A run with ``--logit-adjust`` trained on
    ``z + tau log(prior)``: its loss (the balanced softmax for CE) is attacked on the adjusted logits."""
    from ..losses import LogitAdjustedLoss, PerSampleCrossEntropy
    loss, note = _member_loss_from_run(record)
    adjustment = record.logit_adjustment if record is not None else None
    if adjustment is None:
        return loss, note
    if loss is None and record.loss in ('ce', 'cross_entropy'):  # balanced softmax: not APGD-CE's loss
        loss = PerSampleCrossEntropy(float(record.config.smoothing) if record.config is not None else 0.0)
    if loss is None:
        return None, note
    return LogitAdjustedLoss(loss, adjustment.class_counts, adjustment.tau), ''


def _member_loss_from_run(record: Optional[RunRecord]) -> Tuple[Optional[LossFn], str]:
    """``training_loss_from_run`` without the run's logit adjustment."""
    from ..losses import PerSampleCrossEntropy, create_loss, is_sp_loss
    name = record.loss if record is not None else None
    smoothing = float(record.config.smoothing) if record is not None and record.config is not None else 0.0
    if not name:
        return None, 'the run record names no training loss'
    if is_sp_loss(name):  # without label smoothing: it moves the stationary point off the p* that
        # _TowardsBoundary switches at, which would pin the ascent there instead of leading it to the boundary
        return _TowardsBoundary(create_loss(name, reduction='none', **record.loss_params)), ''
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


def audit_stages(num_classes: int, inputs: AuditInputs = AuditInputs()) -> Tuple[List[str], Dict[str, str]]:
    """The registered attacks that apply (in run order) and the reason for each one skipped."""
    skipped = {name: why for name in audit_attack_names()
               if (why := audit_attack(name).skip_reason(num_classes, inputs)) is not None}
    return [name for name in audit_attack_names() if name not in skipped], skipped


def _input_grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """||grad_x L(f(x), y)||_2 per point (per-sample losses summed: each point's gradient is its own)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(loss_fn(model(x).float(), y).sum(), x)
    return grad.flatten(1).norm(dim=1)


def run_stage(stage: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: AuditContext) -> torch.Tensor:
    """One stage on points ``x`` (all attacked): an attack's adversarial images (``AuditAttack.run``); for
    ``large-eps-margin`` the smallest budget of ``large_eps_ladder`` at which APGD on the logit margin broke the point
    (inf: none did); input-gradient norms for ``grad-ce`` / ``grad-margin``."""
    if stage == LARGE_EPS:
        broken_at = torch.full((len(x),), float('inf'))
        left = torch.arange(len(x))
        for budget in large_eps_ladder(context.eps, context.norm, context.config.large_eps_factor, x[0].numel()):
            robust = correct(model, apgd(model, x[left], y[left], context, margin_loss, eps=budget, restarts=1),
                             y[left]).cpu()
            broken_at[left[~robust]] = budget
            left = left[robust]
            if not len(left):
                break
        return broken_at
    if stage == 'grad-ce':
        return _input_grad_norm(model, x, y, lambda z, t: F.cross_entropy(z, t, reduction='none'))
    if stage == 'grad-margin':
        return _input_grad_norm(model, x, y, margin_loss)
    if stage not in audit_attack_names():
        raise ValueError(f"unknown audit stage '{stage}'")
    return audit_attack(stage).run(model, x, y, context)


def audit_chunk(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, aa: Mapping[str, torch.Tensor],
                context: AuditContext, *, batch_size: int, stages: Sequence[str],
                path: Optional[Path] = None, report: Optional[StageReport] = None) -> Tensors:
    """The audit of one chunk, given its AutoAttack flags ``aa``. Returns one tensor per stage over the chunk's
    points: for an attack, True where the point is left robust by AutoAttack's white-box stages and the attack did
    not break it; for ``large-eps``, the same over the clean-correct points; the gradient norms over all points.
    With ``path``, saved after every stage with the points they attacked; a partial result there is continued,
    never recomputed -- unless AutoAttack's flags changed since (its chunk recomputed): then the audit starts over.
    ``report`` hears of every attack that ran (the points it left robust). The images of the points the attacks
    broke are kept under ``ADV_KEYS`` (indices within the chunk)."""
    import time
    attacked = aa[WHITE_BOX].bool()
    points = dict(zip(POINT_KEYS, (attacked, aa['clean'].bool())))
    result = load_tensors(path)
    if any(key not in result or not torch.equal(result[key].bool(), value.cpu()) for key, value in points.items()):
        result = dict(points)  # stages of other points (or of a file that did not record them) would be misread
    if ADV_INDEX not in result:  # a new chunk, or one audited before images were kept: lost only if a stage broke one
        lost = any(stage in result and not bool(result[stage][attacked].all()) for stage in stages)
        result.update({ADV_IMAGES: images[:0].cpu().float(), ADV_INDEX: torch.zeros(0, dtype=torch.long),
                       ADV_ATTACK: torch.zeros(0, dtype=torch.long), ADV_KEPT: torch.tensor([not lost])})
    for stage in (*stages, *CHECK_STAGES):
        if stage in result:  # done before an interruption
            continue
        on = aa['clean'].bool() if stage == LARGE_EPS else attacked
        if stage.startswith('grad-'):
            on = torch.ones_like(attacked)
        index = on.nonzero().flatten()
        measured = stage.startswith('grad-') or stage == LARGE_EPS  # a value per point, not a robust flag
        out = torch.zeros(len(labels), dtype=torch.float32 if measured else torch.bool)
        began = time.perf_counter()
        for start in range(0, len(index), batch_size):
            part = index[start:start + batch_size]
            x, y = images[part].to(context.device), labels[part].to(context.device)
            flags = run_stage(stage, model, x, y, context)
            if not measured:
                if flags.shape != x.shape or not torch.is_floating_point(flags):
                    raise TypeError(f"audit attack '{stage}' returned {tuple(flags.shape)} {flags.dtype}; an "
                                    f"AuditAttack's run returns adversarial images shaped like its points "
                                    f"{tuple(x.shape)} (sp-timm >= 0.1: images, not robust flags).")
                flags = _keep_adversarial(result, stage, part, adversarial=flags, robust=correct(model, flags, y))
            out[part] = flags.detach().cpu().to(out.dtype)
        result[stage] = out
        save_tensors(path, result)
        if report is not None and stage in stages:
            report(stage, int(out[index].sum()), len(index), time.perf_counter() - began)
    return result


def _keep_adversarial(result: Tensors, stage: str, part: torch.Tensor, adversarial: torch.Tensor,
                      robust: torch.Tensor) -> torch.Tensor:
    """Add to ``result``'s ``ADV_KEYS`` the images of the points of ``part`` that ``stage`` broke and no earlier
    attack had; returns ``robust``."""
    broken = part[~robust.cpu()]
    new = ~torch.isin(broken, result[ADV_INDEX])
    code = torch.full((int(new.sum()),), audit_attack_names().index(stage), dtype=torch.long)
    result[ADV_IMAGES] = torch.cat([result[ADV_IMAGES], adversarial.detach().cpu().float()[~robust.cpu()][new]])
    result[ADV_INDEX] = torch.cat([result[ADV_INDEX], broken[new]])
    result[ADV_ATTACK] = torch.cat([result[ADV_ATTACK], code])
    return robust


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
                    fab_distance: Optional[torch.Tensor] = None) -> Tuple[AuditSummary, Tensors]:
    """The report's ``audit`` section (``AuditSummary``) and the per-point tensors (``worst`` and each attack's flags).

    Audited robust flag per point = AutoAttack's final flag AND every audit attack's flag AND, given the
    evaluation's FAB minimal perturbations ``fab_distance``, ``distance > eps`` (row ``fab-min``). ``unreliable``
    when the audit lowers robust accuracy by more than ``config.threshold`` points or a check fails."""
    n = len(aa['clean'])
    final = aa[ROBUST].bool()
    if fab_distance is not None:
        flags = {**flags, FAB_MIN: fab_robust_flags(fab_distance, eps, n)}
    attacks = [a for a in (*audit_attack_names(), FAB_MIN) if a in flags]
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
        rows.append(AuditAttackRow(attack=a, kind=_kind(a), acc=percent(final & flags[a].bool()),
                                   broke_beyond_aa=int(broke.sum()),
                                   broke_only_this=int((others & ~flags[a].bool()).sum())))
    aa_acc, acc = percent(final), percent(worst)
    checks = _checks(aa, flags, eps=eps, norm=norm, input_dim=input_dim, config=config, curve=curve or {},
                     attacks=attacks)
    reasons = []
    if 100 * int((final & ~worst).sum()) > round(config.threshold * n, 9):  # in counts: exactly the threshold passes
        reasons.append(f'the audit lowers robust accuracy by {aa_acc - acc:.2f} points (> {config.threshold:g})')
    reasons += [f"check '{name}' failed" for name, c in checks.items() if not c['passed']]
    saturated = checks['gradient_norms']['ce_vanishing_fraction']
    notes = [f"cross-entropy saturates: its input gradient vanishes (<= {config.grad_tol:g}) at {100 * saturated:.1f}% "
             f"of the clean points, so APGD-CE cannot move them; the scale-invariant attacks (APGD-DLR / APGD-T, the "
             f"margin PGD) and the checks, judged on the logit margin, do not depend on it"] \
        if saturated > CE_SATURATION_NOTE and checks['gradient_norms']['passed'] else []
    summary = AuditSummary(
        config=dict(asdict(config), seed=seed + 1, large_eps=large_eps(eps, norm, config.large_eps_factor, input_dim)),
        attacked_points=int(aa[WHITE_BOX].sum()), attacks=rows, skipped=dict(skipped), autoattack_acc=aa_acc,
        robust_acc=acc, robust_ci=list(accuracy_ci(int(worst.sum()), n)), drop=aa_acc - acc,
        broke_beyond_aa=int((final & ~worst).sum()), threshold=config.threshold, checks=checks,
        unreliable=bool(reasons), reasons=reasons, fab_min_points=0 if fab_distance is None else len(fab_distance),
        notes=notes or None)
    return summary, {'worst': worst, **{a: flags[a].bool() for a in attacks}}


def _check(passed: bool, **values: Any) -> Dict[str, Any]:
    return {'passed': bool(passed), **values}


def _kind(stage: str) -> str:
    """An attack's kind (``fab-min``, FAB's verified examples, counts as white-box)."""
    return audit_attack(stage).kind if stage in audit_attack_names() else 'white-box'


def _checks(aa: Mapping[str, torch.Tensor], flags: Mapping[str, torch.Tensor], *, eps: float, norm: str,
            input_dim: int, config: AuditConfig, curve: Mapping[float, torch.Tensor],
            attacks: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    clean, final, n = aa['clean'].bool(), aa[ROBUST].bool(), len(aa['clean'])
    big = large_eps(eps, norm, config.large_eps_factor, input_dim)
    broken_at = flags[LARGE_EPS].float()
    ladder = large_eps_ladder(eps, norm, config.large_eps_factor, input_dim)
    accs = [percent((broken_at > budget) & clean) for budget in ladder]
    reached = next((b for b, a in zip(ladder, accs) if a <= config.large_eps_max_acc), None)
    big_acc = accs[0]
    points = sorted([(eps, percent(final))] + [(e, percent(f)) for e, f in curve.items()] + [(big, big_acc)])
    rises = [(a, b) for a, b in zip(points, points[1:]) if b[1] > a[1] + 1e-9]
    # black-box breaks: AutoAttack's Square stage (only on its white-box survivors) and the audit's black-box attacks
    white_robust = aa[WHITE_BOX].bool().clone()
    for a in attacks:
        if _kind(a) != BLACK:
            white_robust &= flags[a].bool()
    black_broken = white_robust & ~final
    for a in attacks:
        if _kind(a) == BLACK:
            black_broken |= white_robust & ~flags[a].bool()
    def fraction(values: torch.Tensor, at_most: float) -> float:
        return float((values <= at_most).double().mean()) if len(values) else 0.0
    grad, ce_grad = flags['grad-margin'][clean], flags['grad-ce'][clean]
    vanishing = fraction(grad, config.grad_tol)
    return {
        'large_eps': _check(reached is not None, eps=big, acc=big_acc, max_acc=config.large_eps_max_acc,
                            attack='apgd-margin', broken_by_eps=reached, ladder=ladder, acc_on_ladder=accs),
        'monotonic_eps': _check(not rises, curve=[list(p) for p in points],
                                rises=[[a[0], b[0]] for a, b in rises]),
        'white_vs_black_box': _check(int(black_broken.sum()) <= config.square_alpha * n,
                                     points=int(black_broken.sum()), max_points=config.square_alpha * n),
        'gradient_norms': _check(vanishing <= config.grad_max_fraction, loss='margin', vanishing_fraction=vanishing,
                                 zero_fraction=fraction(grad, 0.0),
                                 median_margin_norm=float(grad.median()) if len(grad) else None,
                                 ce_vanishing_fraction=fraction(ce_grad, config.grad_tol),
                                 ce_zero_fraction=fraction(ce_grad, 0.0),
                                 median_ce_norm=float(ce_grad.median()) if len(ce_grad) else None,
                                 tol=config.grad_tol, max_fraction=config.grad_max_fraction),
    }


def run_audit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, aa: Mapping[str, torch.Tensor],
              plan: AuditPlan) -> Tuple[AuditSummary, Tensors]:
    """The audit over all points, in the chunks of the AutoAttack run (shared by the processes, resumed from
    ``plan.work_dir``); returns ``summarize_audit``'s section and per-point tensors (with ``plan.fab_distance``, the
    FAB minimal perturbations of the evaluation, counted as row ``fab-min``)."""
    from .attacks import Chunks, run_chunks, stage_reporter
    context = plan.context
    stages, skipped = audit_stages(context.num_classes, context.inputs)
    identity = audit_identity(context.inputs.surrogate, context.inputs.train_loss)
    folder = (None if plan.work_dir is None else
              audit_folder(plan.work_dir, context.norm, context.eps, context.config, context.seed, identity))
    stage_context = replace(context, seed=context.seed + 1)  # not AutoAttack's own random starts
    def compute(c, s):
        out = audit_chunk(model, images[s], labels[s], {k: v[s] for k, v in aa.items()}, stage_context,
                          batch_size=plan.batch_size, stages=stages,
                          path=None if folder is None else folder / f'chunk-{c:05d}.safetensors',
                          report=stage_reporter(f'audit chunk {c}', plan.progress))
        return dict(out, **{ADV_INDEX: out[ADV_INDEX] + s.start})  # of all points, not of the chunk
    flags = run_chunks(Chunks(len(labels), plan.chunk_size), compute,
                       f'audit {context.norm} ({len(stages)} attacks)', plan.progress)
    summary, tensors = summarize_audit(aa, flags, eps=context.eps, norm=context.norm, input_dim=images[0].numel(),
                                       config=context.config, skipped=skipped, curve=plan.curve, seed=context.seed,
                                       fab_distance=plan.fab_distance)
    return summary, dict(tensors, **{key: flags[key] for key in ADV_KEYS})
