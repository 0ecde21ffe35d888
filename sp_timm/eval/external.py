""" The external-evaluation bundle of an audit that broke points AutoAttack left robust: what RobustBench's "New
external evaluation(s)" issue carries. ``EXTERNAL_FOLDER`` of the evaluation folder holds

* ``adversarial_images.pt``: one float32 image per evaluated point (the ``.pt`` tensor of the test set's size the
  issue asks for): the audit's adversarial example where an audit attack broke a point (every point AutoAttack
  counted robust that the audit broke, and those only AutoAttack's Square stage had broken, which the audit attacks
  too), the clean image elsewhere. A plain tensor: ``torch.load(..., weights_only=True)`` reads it;
* ``external.json``: the broken points' indices, the attack that broke each and whether AutoAttack counted it
  robust, the accuracies;
* ``new-evaluation-issue.md``: the issue, rendered from ``templates/new_evaluation_issue.md``.

Before anything is written every kept example is checked again: within eps of its clean image, in [0, 1], and
misclassified by the model; a failure is an error, never a bundle.
"""
import io
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..files import Tensors, atomic_write_bytes, atomic_write_json, atomic_write_text
from ..records import EvalReport
from ..threat.pgd import perturbation_norm
from .attacks import predict
from .audit import ADV_ATTACK, ADV_IMAGES, ADV_INDEX, ADV_KEPT, FAB_MIN
from .audit_attacks import audit_attack_names
from .config import FULL_TEST_SPLIT

__all__ = ['EXTERNAL_FOLDER', 'IMAGES_FILE', 'INDEX_FILE', 'ISSUE_FILE', 'write_external_bundle',
           'check_adversarial_examples', 'external_bundle_note']

EXTERNAL_FOLDER = 'external-evaluation'
IMAGES_FILE, INDEX_FILE, ISSUE_FILE = 'adversarial_images.pt', 'external.json', 'new-evaluation-issue.md'
ISSUE_TEMPLATE = Path(__file__).resolve().parents[1] / 'templates' / 'new_evaluation_issue.md'
_EPS_SLACK = 1e-5  # float32 rounding of x + delta, clipped to [0, 1]


def external_bundle_note(report: EvalReport, audit_points: Optional[Tensors],
                         autoattack_robust: torch.Tensor) -> Optional[str]:
    """Why no bundle is written for this evaluation (None: one is)."""
    if report.audit is None or audit_points is None:
        return 'no audit'
    if not report.audit.broke_beyond_aa:
        return 'the audit broke no point AutoAttack counted robust'
    if not bool(audit_points[ADV_KEPT].all()):
        return ('part of the audit was run by an earlier sp-timm, which kept no adversarial images: re-run with '
                '--restart to keep them')
    if not bool(autoattack_robust[audit_points[ADV_INDEX].long()].any()):
        return "only FAB's minimal-perturbation search flipped points beyond AutoAttack (its images are not kept)"
    return None


def check_adversarial_examples(model: torch.nn.Module, clean: torch.Tensor, adversarial: torch.Tensor,
                               labels: torch.Tensor, *, eps: float, norm: str, device: Any,
                               batch_size: int = 256) -> float:
    """A ``ValueError`` unless every ``adversarial`` image is in [0, 1], within ``eps`` of its ``clean`` one in
    ``norm`` and misclassified by ``model``; returns the largest perturbation."""
    distance = perturbation_norm(adversarial.float() - clean.float(), norm)
    outside = (distance > eps * (1 + _EPS_SLACK) + 1e-7).nonzero().flatten().tolist()
    if outside:
        raise ValueError(f'{len(outside)} adversarial example(s) lie outside the {norm} ball of radius {eps:.6g} '
                         f'(largest {distance.max().item():.6g}): not an evaluation at this budget.')
    if adversarial.min() < 0 or adversarial.max() > 1:
        raise ValueError('an adversarial example leaves the image range [0, 1].')
    right = (predict(model, adversarial, batch_size, device) == labels.cpu()).nonzero().flatten().tolist()
    if right:
        raise ValueError(f'{len(right)} kept adversarial example(s) are classified correctly by the model (a '
                         'randomised or non-deterministic model?): the audit cannot hand them on as evidence.')
    return float(distance.max()) if len(distance) else 0.0


def write_external_bundle(out: Path, report: EvalReport, model: torch.nn.Module, images: torch.Tensor,
                          labels: torch.Tensor, audit_points: Tensors, autoattack_robust: torch.Tensor, *, device: Any,
                          source: str, zoo_model: bool, version: str) -> Path:
    """Write ``out/EXTERNAL_FOLDER`` (see the module docstring) after checking every example; returns the folder.
    ``autoattack_robust``: AutoAttack's final robust flag per point."""
    protocol, audit = report.protocol, report.audit
    index, attack_codes = audit_points[ADV_INDEX].long(), audit_points[ADV_ATTACK].long()
    adversarial = audit_points[ADV_IMAGES]
    largest = check_adversarial_examples(model, images[index], adversarial, labels[index], eps=protocol.eps_value,
                                         norm=protocol.threat_model, device=device)
    tensor = images.detach().cpu().float().clone()
    tensor[index] = adversarial.float()
    names = audit_attack_names()
    by_point = {int(i): {'attack': names[int(c)], 'autoattack_robust': bool(autoattack_robust[i])}
                for i, c in zip(index, attack_codes)}
    alone = 100.0 * float((predict(model, tensor, 256, device) == labels.cpu()).double().mean())
    folder = out / EXTERNAL_FOLDER
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    atomic_write_bytes(folder / IMAGES_FILE, buffer.getvalue())
    fab_points = next((row.broke_only_this for row in audit.attacks if row.attack == FAB_MIN), 0)
    values: Dict[str, Any] = dict(
        model_name=report.model_name, source=source, zoo_model=zoo_model, dataset=protocol.dataset,
        threat_model=protocol.threat_model, eps=protocol.eps, n_points=report.n_points,
        shape=f"({report.n_points}, {', '.join(str(d) for d in images.shape[1:])})", images_file=IMAGES_FILE,
        index_file=INDEX_FILE, full_test_set=bool(report.protocol.full_test_split), full_test_set_size=FULL_TEST_SPLIT,
        n_adversarial=len(index), beyond_autoattack=int(autoattack_robust[index].sum()),
        max_perturbation=f'{largest:.6g}', audited_acc=f'{audit.robust_acc:.2f}',
        autoattack_acc=f'{audit.autoattack_acc:.2f}', clean_acc=f'{report.clean_acc:.2f}',
        alone_acc=f'{alone:.2f}', fab_points=fab_points, version=version, protocol=protocol.version,
        pyautoattack_version=protocol.pyautoattack_version, seed=protocol.seed,
        attacks=', '.join(row.attack for row in audit.attacks),
        broken_per_attack=', '.join(f'{row.attack} {row.broke_beyond_aa}' for row in audit.attacks),
        budgets=', '.join(f'{k} {v}' for k, v in audit.config.items() if k not in ('threshold',)))
    atomic_write_json(folder / INDEX_FILE, dict(
        model=report.model_name, source=source, dataset=protocol.dataset, threat_model=protocol.threat_model,
        eps=protocol.eps, n_points=report.n_points, clean_acc=report.clean_acc, autoattack_acc=audit.autoattack_acc,
        audited_acc=audit.robust_acc, accuracy_on_images=alone, max_perturbation=largest,
        points={str(i): point for i, point in sorted(by_point.items())}))
    atomic_write_text(folder / ISSUE_FILE, _render(values))
    return folder


def _render(values: Dict[str, Any]) -> str:
    import jinja2
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(ISSUE_TEMPLATE.read_text(encoding='utf-8')).render(**values)
