""" ``evaluate_points``: AutoAttack (standard), FAB minimal perturbations, the robust-accuracy curve and the
adaptive audit on a fixed set of points: the Python API under ``sp-timm eval``. Work is cut into chunks that the
processes of the current Accelerate state share; with a work folder every chunk (and every stage of a chunk) is
saved and reused by a later call with the same model, points and settings. """
import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..checkpoint import weights_sha256
from ..files import Tensors, atomic_write_json
from ..records import AuditSummary
from ..threat.budget import format_eps
from ..threat.pgd import LossFn
from .attacks import (AUTOATTACK_LOGGER, ROBUST, Chunks, autoattack_chunk, capture_autoattack_warnings, fab_chunk,
                      load_adversarial_images,
                      run_chunks, stage_reporter)
from .audit import AuditPlan, check_surrogate, fab_robust_flags, run_audit
from .audit_attacks import AuditContext, AuditInputs
from .autoattack_log import logged_chunk
from .config import AttackConfig, AutoAttackPlan, autoattack_plan

__all__ = ['evaluate_points', 'PointsResult', 'POINTS_FILE', 'check_points']

POINTS_FILE = 'points.json'


@dataclass
class PointsResult:
    """What ``evaluate_points`` measured, per point: ``aa`` (the flags after each AutoAttack stage, ``clean``,
    ``pred``, ``perturbation``), ``curve`` ({eps: final robust flags}), ``min_perturbation`` ({norm: FAB distance}),
    AutoAttack's ``warnings`` (those of this process's chunks; the checks over all points on the main process only),
    ``log`` (AutoAttack's own log of every chunk, in point order), and with the audit its section (``audit``) and
    per-point flags (``audit_points``: ``worst`` and each attack's, and the images of the points its attacks broke);
    ``plan``: the AutoAttack stages that ran (the protocol, adapted to the class count); ``adversarial``: with a
    work folder, the adversarial images AutoAttack found at ``eps``."""
    eps: float
    aa: Tensors
    plan: Optional[AutoAttackPlan] = None
    curve: Dict[float, torch.Tensor] = field(default_factory=dict)
    min_perturbation: Dict[str, torch.Tensor] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    log: List[str] = field(default_factory=list)
    audit: Optional[AuditSummary] = None
    audit_points: Optional[Tensors] = None
    adversarial: Optional[Tensors] = None  # AutoAttack's adversarial images at eps (``load_adversarial_images``)


def check_points(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device) -> int:
    """Clear errors for inputs AutoAttack would silently mis-evaluate; returns the model's number of classes."""
    if not torch.is_floating_point(images) or images.dim() != 4:
        raise ValueError(f'images must be a float tensor (N, C, H, W) in [0, 1], got {images.dtype} '
                         f'{tuple(images.shape)}.')
    lo, hi = images.min().item(), images.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f'images range over [{lo:.3g}, {hi:.3g}], not [0, 1]: AutoAttack perturbs pixels in [0, 1] '
                         'and clips there. Pass unnormalised images (sp-timm models and RobustBench models normalise '
                         'inside).')
    if labels.dim() != 1 or len(labels) != len(images) or torch.is_floating_point(labels):
        raise ValueError(f'labels must be class indices (N,) for the {len(images)} images, got {labels.dtype} '
                         f'{tuple(labels.shape)}.')
    with torch.no_grad():
        num_classes = model(images[:1].to(device)).shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f'labels span {labels.min().item()}..{labels.max().item()} but the model has {num_classes} '
                         f'outputs: a checkpoint for another dataset?')
    return num_classes


def _check_work_dir(work_dir: Path, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    settings: Dict[str, Any], is_main: bool) -> None:
    """A work folder's saved stages belong to one model, one set of points and one seed, batch and chunk size: the
    first call records them in ``points.json``; a later call with others is refused (nothing is reused silently)."""
    points = hashlib.sha256(images.contiguous().numpy().tobytes() + labels.contiguous().numpy().tobytes()).hexdigest()
    identity = json.loads(json.dumps(dict(settings, model_sha256=weights_sha256(model), points_sha256=points,
                                          n_points=len(labels))))
    path = Path(work_dir) / POINTS_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in identity if saved.get(k) != identity[k])
        if changed:
            raise ValueError(f"work_dir '{work_dir}' holds the saved stages of another evaluation (other "
                             f"{', '.join(changed)}); give another work_dir, or delete it to start again (sp-timm "
                             "eval: --restart, or another --out).")
    elif is_main:
        atomic_write_json(path, identity)


def evaluate_points(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    config: Optional[AttackConfig] = None, *, surrogate: Optional[torch.nn.Module] = None,
                    train_loss: Optional[LossFn] = None, loss_note: str = '', work_dir: Optional[Path] = None,
                    progress: bool = True, echo_warnings: bool = True, **settings: Any) -> PointsResult:
    """AutoAttack (``config.protocol``: standard by default) and FAB on ``images`` (float, [0, 1]) with ``labels``, as
    ``config`` says (``AttackConfig``; keyword ``settings`` override its fields: ``evaluate_points(model, x, y,
    eps=8/255)``). Any number of classes >= 2: the protocol is adapted to it (``autoattack_plan``; the result's
    ``plan`` says how).

    Work is cut into chunks of ``config.chunk`` points that the processes of the current Accelerate state share;
    with ``work_dir`` every chunk (and every AutoAttack stage of a chunk) is saved and reused by a later call.

    With ``config.audit`` (an ``AuditConfig``; ``audit=True``: its defaults), the adaptive-attack audit of
    ``sp_timm.eval.audit`` follows on the points AutoAttack left robust. ``train_loss`` (per-sample
    ``(logits, labels) -> (B,)``, e.g. an SP loss with ``reduction='none'``) adds the loss-aware attack, skipped
    with ``loss_note`` when None; ``surrogate`` (a model of the same classes and inputs) adds the transfer attack.
    """
    from accelerate import PartialState
    config = replace(config or AttackConfig(), **settings) if settings or config is None else config
    problems = config.problems()
    if problems:
        raise ValueError(' '.join(problems))
    if len(images) == 0:
        raise ValueError('no points to evaluate (0 images); pass at least one image and its label.')
    device, main_process = PartialState().device, PartialState().is_main_process
    eps, curve_eps = config.budget(images[0].numel()), config.curve_budgets(images[0].numel())
    model = model.to(device).eval()
    num_classes = check_points(model, images, labels, device)
    plan = autoattack_plan(num_classes, config.protocol)
    if config.audit is not None and surrogate is not None:
        check_surrogate(surrogate, images, num_classes, device)
    if work_dir is not None:
        _check_work_dir(work_dir, model, images.cpu(), labels.cpu(), {'seed': config.seed,
                                                                      'batch_size': config.batch_size,
                        'chunk_size': config.chunk}, main_process)
    run = _PointsRun(model, images, labels, config, work_dir, progress, device, plan)
    with capture_autoattack_warnings(echo=echo_warnings) as warnings:
        aa = run.autoattack_at(eps)
        result = PointsResult(eps=eps, aa=aa, curve={e: run.autoattack_at(e)[ROBUST] for e in curve_eps},
                              min_perturbation=run.min_perturbations(), plan=plan,
                              adversarial=run.adversarial_images(eps) if work_dir is not None and main_process
                              else None)
        if main_process:  # AutoAttack's own check, which run_standard_evaluation runs over all points: on the gathered
            _check_square(aa, plan)  # results, so by one process (the warnings of all are gathered into the report)
    result.warnings = list(warnings)
    result.log = run.gathered_logs([eps, *curve_eps])
    if config.audit is not None:  # its attacks' warnings go to the audit section: the audit's own checks judge them
        context = AuditContext(eps=eps, norm=config.threat_model, seed=config.seed, device=device, config=config.audit,
                               num_classes=num_classes, inputs=AuditInputs(surrogate, train_loss, loss_note))
        plan = AuditPlan(context, batch_size=config.batch_size, chunk_size=config.chunk, curve=result.curve,
                         fab_distance=result.min_perturbation.get(config.threat_model), work_dir=work_dir,
                         progress=progress)
        with capture_autoattack_warnings(echo=echo_warnings) as audit_warnings:
            summary, result.audit_points = run_audit(model, images, labels, aa, plan)
        result.audit = replace(summary, warnings=list(audit_warnings))
    if main_process:
        result.warnings += _budget_warnings(result, config.threat_model, len(labels))
    return result


class _PointsRun:
    """The chunked AutoAttack and FAB runs of one ``evaluate_points`` call, and AutoAttack's log of each chunk."""

    def __init__(self, model, images, labels, config: AttackConfig, work_dir: Optional[Path], progress: bool, device,
                 plan: AutoAttackPlan):
        self.model, self.images, self.labels, self.config, self.plan = model, images, labels, config, plan
        self.work_dir, self.progress, self.device = work_dir, progress, device
        self.logs: Dict[Tuple[str, int], str] = {}

    def path(self, name: str, chunk: int) -> Optional[Path]:
        return None if self.work_dir is None else Path(self.work_dir) / name / f'chunk-{chunk:05d}.safetensors'

    def autoattack_at(self, budget: float) -> Tensors:
        config, name = self.config, self.stage_name(budget)

        def compute(c: int, s: slice) -> Tensors:
            chunk_path = self.path(name, c)
            title = (f'AutoAttack {config.threat_model} eps {format_eps(budget)}, chunk {c} (points {s.start}..'
                     f'{s.stop - 1}), seed {config.seed}, batch size {config.batch_size}')
            out, self.logs[name, c] = logged_chunk(
                lambda on_stage: autoattack_chunk(self.model, self.images[s], self.labels[s], eps=budget,
                                                  norm=config.threat_model, seed=config.seed,
                                                  batch_size=config.batch_size, device=self.device, path=chunk_path,
                                                  on_stage=on_stage, plan=self.plan,
                                                  report=stage_reporter(f'AutoAttack {format_eps(budget)} chunk {c}',
                                                                        self.progress)),
                None if chunk_path is None else chunk_path.with_suffix('.log'), title)
            return out
        return run_chunks(Chunks(len(self.labels), config.chunk), compute,
                          f'AutoAttack {config.threat_model} {format_eps(budget)}', self.progress)

    def adversarial_images(self, budget: float) -> Tensors:
        """AutoAttack's adversarial images at ``budget``, read back from every chunk's saved file."""
        chunks = Chunks(len(self.labels), self.config.chunk)
        return load_adversarial_images([self.path(self.stage_name(budget), c) for c in range(len(chunks))],
                                       [chunks.slice(c).start for c in range(len(chunks))])

    def stage_name(self, budget: float) -> str:
        """The folder of the AutoAttack chunks at ``budget``: standard and fast share it (the same stages), rand has
        its own (its APGD averages gradients over 20 draws)."""
        rand = '-rand' if self.plan.protocol == 'rand' else ''
        return f'autoattack-{self.config.threat_model}-{budget:.8g}{rand}'

    def min_perturbations(self) -> Dict[str, torch.Tensor]:
        config, count = self.config, len(self.labels)
        n_fab = count if config.min_pert_examples is None else min(config.min_pert_examples, count)
        if n_fab <= 0:
            return {}
        distances = {}
        for norm in config.min_pert_norms:
            def compute(c, s, norm=norm):
                return fab_chunk(self.model, self.images[s], self.labels[s], norm=norm, n_iter=config.fab_iters,
                                 seed=config.seed, batch_size=config.batch_size, device=self.device,
                                 path=self.path(f'fab-{norm}-{config.fab_iters}', c))
            distances[norm] = run_chunks(Chunks(n_fab, config.chunk), compute, f'FAB {norm} minimal perturbation',
                                         self.progress)['distance']
        return distances

    def gathered_logs(self, budgets: List[float]) -> List[str]:
        """Every process's chunk logs, in (budget, chunk) order."""
        from accelerate.utils import gather_object
        gathered = {key: text for part in gather_object([self.logs]) for key, text in part.items()}
        names = [self.stage_name(b) for b in budgets]
        return [gathered[key] for key in sorted(gathered, key=lambda k: (names.index(k[0]), k[1]))]


def _check_square(aa: Tensors, plan: AutoAttackPlan) -> None:
    from pyautoattack import checks
    stage_acc = {'clean': aa['clean'].double().mean().item()}
    stage_acc.update({a: aa[a].double().mean().item() for a in plan.attacks})
    checks.check_square_sr(stage_acc, logger=logging.getLogger(AUTOATTACK_LOGGER))


def _budget_warnings(result: PointsResult, threat_model: str, n: int) -> List[str]:
    """An adversarial example beyond the budget; FAB flipping within eps a point AutoAttack counted robust."""
    warnings, aa, eps = [], result.aa, result.eps
    if aa['perturbation'].max().item() > eps * (1 + 1e-4) + 1e-6:
        warnings.append(f"an adversarial example exceeds the budget: {threat_model} norm "
                        f"{aa['perturbation'].max().item():.6g} > eps {eps:.6g}")
    distance = result.min_perturbation.get(threat_model)
    if distance is not None:  # FAB flipping a point within eps that AutoAttack counted robust: AutoAttack missed it
        missed = int((aa[ROBUST] & ~fab_robust_flags(distance, eps, n)).sum())
        if missed:
            warnings.append(f'FAB (minimal perturbation) flipped {missed} points within eps that AutoAttack '
                            f'left robust: the AutoAttack accuracy overestimates robustness.')
    return warnings
