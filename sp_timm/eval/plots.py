""" The evaluation's figures (matplotlib, Agg backend, PNG). Each takes one or more labelled series, so an
evaluation plots one model and the demo plots CE and SP side by side. """
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ['plot_per_class', 'plot_min_perturbation_cdf', 'plot_robust_accuracy_vs_eps', 'robust_fraction_above']

_COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown')


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    from ..checkpoint import atomic_write_bytes
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=120, bbox_inches='tight')
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def robust_fraction_above(distances: torch.Tensor, eps_grid: torch.Tensor) -> torch.Tensor:
    """Percent of points whose (FAB) minimal perturbation exceeds each eps: an upper bound on robust accuracy."""
    return 100 * (distances[None, :] > eps_grid[:, None]).double().mean(1)


def plot_per_class(path: Path, classes: Sequence[str], series: Mapping[str, Tuple[Sequence, Sequence]],
                   train_counts: Optional[Sequence[int]] = None, title: str = '') -> Path:
    """Grouped bars per class: clean (light) and robust (dark) accuracy of each series; x labels carry the
    training images per class when given (long-tailed data)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(classes) * max(1, len(series))), 3.6))
    width = 0.8 / (2 * len(series))
    for s, (label, (clean, robust)) in enumerate(series.items()):
        color = _COLORS[s % len(_COLORS)]
        for k, (values, alpha, kind) in enumerate(((clean, 0.35, 'clean'), (robust, 1.0, 'AutoAttack'))):
            offset = (2 * s + k - len(series) + 0.5) * width
            ax.bar([i + offset for i in range(len(classes))], [v if v is not None else 0 for v in values], width,
                   color=color, alpha=alpha, label=f'{label}: {kind}')
    names = [f'{c}\n({n})' for c, n in zip(classes, train_counts)] if train_counts else list(classes)
    ax.set_xticks(range(len(classes)), names, fontsize=8)
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(0, 100)
    ax.set_xlabel('class (training images)' if train_counts else 'class')
    ax.set_title(title or 'per-class clean and AutoAttack accuracy')
    ax.legend(fontsize=7, ncol=max(1, len(series)), loc='upper right')
    ax.grid(axis='y', alpha=0.3)
    return _save(fig, path)


def plot_min_perturbation_cdf(path: Path, series: Mapping[str, Mapping[str, torch.Tensor]],
                              eps: Optional[Mapping[str, float]] = None, title: str = '') -> Path:
    """Empirical CDF of the FAB minimal perturbation, one panel per norm; a curve further right means larger
    perturbations are needed. Points FAB could not flip stay at the top (never reached)."""
    plt = _pyplot()
    norms = sorted({n for per_norm in series.values() for n in per_norm}, key=lambda n: (n != 'Linf', n))
    fig, axes = plt.subplots(1, len(norms), figsize=(4.6 * len(norms), 3.4), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for s, (label, per_norm) in enumerate(series.items()):
            if norm not in per_norm:
                continue
            d = per_norm[norm].double().sort().values
            finite = d[torch.isfinite(d)]
            y = torch.arange(1, len(finite) + 1, dtype=torch.double) / len(d)
            median = d.median().item()
            ax.step(finite.tolist(), (100 * y).tolist(), where='post', color=_COLORS[s % len(_COLORS)],
                    label=f'{label} (median {median:.3g})')
        if eps and norm in eps:
            ax.axvline(eps[norm], color='gray', linestyle='--', linewidth=1, label=f'eps {eps[norm]:.3g}')
        ax.set_xlabel(f'minimal {norm} perturbation (FAB)')
        ax.set_ylabel('points flipped (%)')
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or 'minimal adversarial perturbation, CDF')
    return _save(fig, path)


def plot_robust_accuracy_vs_eps(path: Path, series: Mapping[str, Mapping[str, object]], norm: str,
                                eps_max: float, title: str = '') -> Path:
    """Robust accuracy against the budget: the curve implied by FAB's minimal perturbations (an upper bound) and
    AutoAttack's accuracy at the evaluated budgets (markers). ``series[label]`` holds ``distances`` (tensor) and
    ``points`` (list of (eps, accuracy %))."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    grid = torch.linspace(0, eps_max, 200, dtype=torch.double)
    for s, (label, data) in enumerate(series.items()):
        color = _COLORS[s % len(_COLORS)]
        if data.get('distances') is not None:
            ax.plot(grid.tolist(), robust_fraction_above(data['distances'].double(), grid).tolist(), color=color,
                    label=f'{label}: FAB bound')
        points: List = list(data.get('points', []))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], 'o--', color=color, label=f'{label}: AutoAttack')
    ax.set_xlabel(f'{norm} budget eps')
    ax.set_ylabel('robust accuracy (%)')
    ax.set_ylim(0, 100)
    ax.set_xlim(0, eps_max)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or f'robust accuracy vs {norm} eps')
    return _save(fig, path)
