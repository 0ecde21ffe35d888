""" The per-epoch metrics: ``metrics.jsonl`` (one JSON line per epoch, rewritten atomically), the gradient-norm
statistics of ``--clip-grad`` accumulated on the device without host syncs, and accuracy counts. """
import json
from pathlib import Path
from typing import Dict, Union

import torch

from ..files import atomic_write_text

__all__ = ['METRICS_FILE', 'GRAD_STATS', 'accumulate_grad_norm', 'grad_norm_metrics', 'read_metrics', 'write_metrics',
           'accuracy_stats']

METRICS_FILE = 'metrics.jsonl'


GRAD_STATS = 5  # finite-norm sum, finite-norm max, clipped steps, finite steps, steps


def accumulate_grad_norm(grad_stats: torch.Tensor, grad_norm: Union[torch.Tensor, float], max_norm: float) -> None:
    """Add one step's total gradient norm ``||g||_2`` before clipping (under DDP: of the all-reduced,
    global-batch gradient, the same on every process) to ``grad_stats`` (``GRAD_STATS`` entries), on the device: no
    host sync. A step counts as clipped when ``||g||_2 > max_norm`` (torch scales g by
    ``max_norm / (||g||_2 + 1e-6)`` there). A non-finite norm (a diverging run; an fp16 overflow step the scaler
    then skips) is counted apart and kept out of the sum and the max."""
    grad_norm = torch.as_tensor(grad_norm, device=grad_stats.device).detach().float()
    finite = torch.isfinite(grad_norm)
    value = torch.where(finite, grad_norm, torch.zeros_like(grad_norm))
    grad_stats[0] += value
    grad_stats[1] = torch.maximum(grad_stats[1], value)
    grad_stats[2] += (value > max_norm).float()
    grad_stats[3] += finite.float()
    grad_stats[4] += 1


def grad_norm_metrics(grad_stats: torch.Tensor) -> Dict[str, float]:
    """The epoch's gradient-norm metrics under --clip-grad: ``clipped_pct`` (% of steps with a finite norm above
    the clip), ``grad_nonfinite_pct`` (% of steps with an Inf / NaN norm) and, over the finite steps, the mean and
    max of the norm before clipping (``grad_norm_mean``, ``grad_norm_max``; left out when no step was finite)."""
    norm_sum, norm_max, clipped, finite, steps = grad_stats.tolist()
    if steps == 0:
        return {}
    metrics = {'clipped_pct': 100 * clipped / steps, 'grad_nonfinite_pct': 100 * (steps - finite) / steps}
    if finite:
        metrics.update(grad_norm_mean=norm_sum / finite, grad_norm_max=norm_max)
    return metrics


def read_metrics(path: Path) -> list:
    """The epochs of a metrics log (lines that do not parse, e.g. cut by a kill, are skipped)."""
    rows = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_metrics(path: Path, keep_through_epoch: int, new_rows: list) -> None:
    """Rewrite the log atomically: its rows up to ``keep_through_epoch``, then ``new_rows``."""
    rows = [r for r in read_metrics(path) if r.get('epoch', -1) <= keep_through_epoch] + new_rows
    atomic_write_text(path, ''.join(json.dumps(r) + '\n' for r in rows))


def accuracy_stats(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.stack([(logits.argmax(1) == labels).sum().float(), torch.tensor(float(labels.numel()),
                                                                                 device=labels.device)])
