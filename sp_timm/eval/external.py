""" The external-evaluation bundle of an audit that broke points AutoAttack left robust: what RobustBench's "New
external evaluation(s)" issue carries. ``EXTERNAL_FOLDER`` of the evaluation folder holds

* ``adversarial_images.pt``: one float32 image per evaluated point (the ``.pt`` tensor of the test set's size the
  issue asks for): AutoAttack's adversarial example where AutoAttack broke the point, the audit's where only an
  audit attack did, the clean image elsewhere; so the model's accuracy on it is the audited robust accuracy (less
  the points only FAB's minimal-perturbation search flipped, whose images are not kept). A plain tensor:
  ``torch.load(..., weights_only=True)`` reads it;
* ``external.json``: every replaced point's index, who broke it (``autoattack`` or the audit attack) and whether
  AutoAttack counted it robust, the accuracies;
* ``new-evaluation-issue.md``: the issue, rendered from ``templates/new_evaluation_issue.md``.

Before anything is written every example is checked again: within eps of its clean image and in [0, 1] (else an
error: not an evaluation at this budget), and misclassified by the model; an example the model now classifies
correctly (a boundary point under other float rounding) is left out and counted in the issue, never claimed.
"""
import io
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..files import Tensors, atomic_write_bytes, atomic_write_json, atomic_write_text, public_source
from ..records import EvalReport
from ..threat.pgd import perturbation_norm
from .attacks import ROBUST, predict
from .audit import ADV_ATTACK, ADV_IMAGES, ADV_INDEX, ADV_KEPT, FAB_MIN
from .audit_attacks import audit_attack_names

__all__ = ['EXTERNAL_FOLDER', 'IMAGES_FILE', 'INDEX_FILE', 'ISSUE_FILE', 'write_external_bundle',
           'check_adversarial_examples', 'external_bundle_note']

EXTERNAL_FOLDER = 'external-evaluation'
IMAGES_FILE, INDEX_FILE, ISSUE_FILE = 'adversarial_images.pt', 'external.json', 'new-evaluation-issue.md'
ISSUE_TEMPLATE = Path(__file__).resolve().parents[1] / 'templates' / 'new_evaluation_issue.md'
AUTOATTACK = 'autoattack'
_EPS_SLACK = 1e-4  # float32 rounding of x + delta, clipped to [0, 1] (the budget check of evaluate_points')


def external_bundle_note(report: EvalReport, audit_points: Optional[Tensors],
                         autoattack_robust: torch.Tensor) -> Optional[str]:
    """Why no bundle is written for this evaluation (None: one is)."""
    if report.audit is None or audit_points is None:
        return 'no audit'
    if not report.audit.broke_beyond_aa:
        return 'the audit broke no point AutoAttack counted robust'
    if not bool(audit_points[ADV_KEPT].all()):
        return ("part of the audit was run by an earlier sp-timm, which kept no adversarial images: delete the "
                "evaluation's .work/audit-* folder (the audit's saved stages, not AutoAttack's) and run it again")
    if not bool(autoattack_robust[audit_points[ADV_INDEX].long()].any()):
        return "only FAB's minimal-perturbation search flipped points beyond AutoAttack (its images are not kept)"
    return None


def check_adversarial_examples(model: torch.nn.Module, clean: torch.Tensor, adversarial: torch.Tensor,
                               labels: torch.Tensor, *, eps: float, norm: str, device: Any,
                               batch_size: int = 256) -> torch.Tensor:
    """Per example, whether the model misclassifies it; a ``ValueError`` when any lies outside the ``norm`` ball of
    radius ``eps`` around its ``clean`` image or outside [0, 1] (that is no evaluation at this budget)."""
    distance = perturbation_norm(adversarial.float() - clean.float(), norm)
    outside = (distance > eps * (1 + _EPS_SLACK) + 1e-6).nonzero().flatten().tolist()
    if outside:
        raise ValueError(f'{len(outside)} adversarial example(s) lie outside the {norm} ball of radius {eps:.6g} '
                         f'(largest {distance.max().item():.6g}): not an evaluation at this budget.')
    if len(adversarial) and (adversarial.min() < 0 or adversarial.max() > 1):
        raise ValueError('an adversarial example leaves the image range [0, 1].')
    return predict(model, adversarial, batch_size, device) != labels.cpu()


def _replacements(audit_points: Tensors, autoattack: Optional[Tensors], robust: torch.Tensor) -> Dict[int, tuple]:
    """Point -> (image, who broke it): AutoAttack's images where it broke the point, the audit's where only the audit
    did (or where AutoAttack's image is missing: a chunk run before sp-timm kept them)."""
    names = audit_attack_names()
    chosen = {}
    for image, i, code in zip(audit_points[ADV_IMAGES], audit_points[ADV_INDEX].tolist(),
                              audit_points[ADV_ATTACK].tolist()):
        chosen[int(i)] = (image, names[int(code)])
    if autoattack is not None:
        for image, i in zip(autoattack['images'], autoattack['index'].tolist()):
            if not bool(robust[int(i)]):
                chosen[int(i)] = (image, AUTOATTACK)
    return chosen


def write_external_bundle(out: Path, report: EvalReport, model: torch.nn.Module, images: torch.Tensor,
                          labels: torch.Tensor, audit_points: Tensors, autoattack: Tensors,
                          autoattack_images: Optional[Tensors] = None, *, device: Any, source: str, zoo_model: bool,
                          version: str) -> Path:
    """Write ``out/EXTERNAL_FOLDER`` (see the module docstring) after checking every example; returns the folder.
    ``autoattack``: AutoAttack's per-point flags (``clean`` and ``robust``); ``autoattack_images``: its adversarial
    images (``PointsResult.adversarial``; None: the audit's only, and the issue says how many are missing)."""
    protocol, audit = report.protocol, report.audit
    autoattack_clean, autoattack_robust = autoattack['clean'].bool(), autoattack[ROBUST].bool()
    chosen = _replacements(audit_points, autoattack_images, autoattack_robust)
    index = torch.tensor(sorted(chosen), dtype=torch.long)
    adversarial = (torch.stack([chosen[int(i)][0] for i in index]).float() if len(index)
                   else images[:0].float().cpu())
    fooled = check_adversarial_examples(model, images[index], adversarial, labels[index], eps=protocol.eps_value,
                                        norm=protocol.threat_model, device=device)
    dropped = int((~fooled).sum())
    index, adversarial = index[fooled], adversarial[fooled]
    tensor = images.detach().cpu().float().clone()
    tensor[index] = adversarial
    distance = perturbation_norm(adversarial - images[index].float().cpu(), protocol.threat_model)
    alone = 100.0 * float((predict(model, tensor, 256, device) == labels.cpu()).double().mean())
    points = {str(int(i)): {'broken_by': chosen[int(i)][1], 'autoattack_robust': bool(autoattack_robust[i])}
              for i in index}
    beyond = sum(p['autoattack_robust'] for p in points.values())
    broken_by_autoattack = autoattack_clean.cpu().bool() & ~autoattack_robust.cpu().bool()
    missing_autoattack = int(broken_by_autoattack.sum()) - int(broken_by_autoattack[index].sum())
    folder = out / EXTERNAL_FOLDER
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    atomic_write_bytes(folder / IMAGES_FILE, buffer.getvalue())
    fab_points = next((row.broke_only_this for row in audit.attacks if row.attack == FAB_MIN), 0)
    values: Dict[str, Any] = dict(
        model_name=report.model_name, source=public_source(source), zoo_model=zoo_model, dataset=protocol.dataset,
        threat_model=protocol.threat_model, eps=protocol.eps, n_points=report.n_points,
        shape=f"({report.n_points}, {', '.join(str(d) for d in images.shape[1:])})", images_file=IMAGES_FILE,
        index_file=INDEX_FILE, full_test_set=bool(protocol.full_test_split), n_adversarial=len(index),
        beyond_autoattack=beyond, max_perturbation=f'{float(distance.max()) if len(distance) else 0.0:.6g}',
        audited_acc=f'{audit.robust_acc:.2f}', autoattack_acc=f'{audit.autoattack_acc:.2f}',
        clean_acc=f'{report.clean_acc:.2f}', alone_acc=f'{alone:.2f}', fab_points=fab_points, dropped=dropped,
        missing_autoattack=missing_autoattack, version=version, protocol=protocol.version,
        pyautoattack_version=protocol.pyautoattack_version, seed=protocol.seed,
        attacks=', '.join(row.attack for row in audit.attacks),
        broken_per_attack=', '.join(f'{row.attack} {row.broke_beyond_aa}' for row in audit.attacks),
        budgets=', '.join(f'{k} {v}' for k, v in audit.config.items() if k not in ('threshold',)))
    atomic_write_json(folder / INDEX_FILE, dict(
        model=report.model_name, source=values['source'], dataset=protocol.dataset,
        threat_model=protocol.threat_model, eps=protocol.eps, n_points=report.n_points, clean_acc=report.clean_acc,
        autoattack_acc=audit.autoattack_acc, audited_acc=audit.robust_acc, accuracy_on_images=alone,
        left_out_not_misclassified=dropped, points=points))
    atomic_write_text(folder / ISSUE_FILE, _render(values))
    return folder


def _render(values: Dict[str, Any]) -> str:
    import jinja2
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(ISSUE_TEMPLATE.read_text(encoding='utf-8')).render(**values)
