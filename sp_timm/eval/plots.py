""" The evaluation's figures (matplotlib, Agg backend, PNG). Each takes one or more labelled series, so an
evaluation plots one model and the demo plots CE and SP side by side.

Budgets are drawn in the units of the tables: Linf in x/255 (the axis reads 2 for 2/255), L2 plainly. Titles name
the model, dataset, threat model and budget (``FigureContext``); legends sit outside the axes. Each ``plot_*``
writes a PNG; the matching ``*_figure`` returns the matplotlib figure (for tests and notebooks).
"""
import math
from pathlib import Path
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch

from ..threat.budget import LINF_SCALE, format_budget

__all__ = ['plot_per_class', 'plot_min_perturbation_cdf', 'plot_robust_accuracy_vs_eps', 'robust_fraction_above',
           'per_class_figure', 'min_perturbation_cdf_figure', 'robust_accuracy_figure', 'seed_points_figure',
           'plot_seed_points', 'FigureContext', 'budget_axis_label', 'pyplot', 'save_figure']

_COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown')
_OUTSIDE_RIGHT = dict(loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7)


class FigureContext(NamedTuple):
    """What a figure shows, for its title: ``model`` (e.g. 'small_cnn_cifar-sp' or 'CE vs SP (SmallCNN)'),
    ``dataset``, the AutoAttack threat model ``norm`` and budget ``eps`` (in [0, 1] pixels)."""
    model: str = ''
    dataset: str = ''
    norm: str = ''
    eps: Optional[float] = None

    def subtitle(self) -> str:
        where = ' on '.join(p for p in (self.model, self.dataset) if p)
        attack = f'AutoAttack {self.norm} eps {format_budget(self.eps, self.norm)}' if self.norm and self.eps else ''
        return ', '.join(p for p in (where, attack) if p)


def _scale(norm: str) -> float:
    return LINF_SCALE if norm == 'Linf' else 1.0


def budget_axis_label(norm: str, what: str = 'budget eps') -> str:
    return f'{norm} {what}' + (' (x/255)' if norm == 'Linf' else '')


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG (120 dpi) atomically and close it."""
    from ..files import atomic_write_bytes
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=120, bbox_inches='tight')
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def _title(fig_or_ax: Any, what: str, context: Optional[FigureContext]) -> None:
    text = what + (f'\n{context.subtitle()}' if context and context.subtitle() else '')
    if hasattr(fig_or_ax, 'suptitle'):
        fig_or_ax.suptitle(text, fontsize=10)
    else:
        fig_or_ax.set_title(text, fontsize=10)


def _readable_x(ax: Any, norm: str) -> None:
    """At most 7 x ticks; whole numbers of /255 for Linf when the axis spans 3/255 or more."""
    from matplotlib.ticker import MaxNLocator
    whole = norm == 'Linf' and ax.get_xlim()[1] >= 3
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=whole))
    ax.tick_params(labelsize=8)


def robust_fraction_above(distances: torch.Tensor, eps_grid: torch.Tensor) -> torch.Tensor:
    """Percent of points whose (FAB) minimal perturbation exceeds each eps: an upper bound on robust accuracy."""
    return 100 * (distances[None, :] > eps_grid[:, None]).double().mean(1)


def per_class_figure(classes: Sequence[str], series: Mapping[str, Tuple[Sequence, Sequence]],
                     train_counts: Optional[Sequence[int]] = None, title: str = '', *,
                     test_counts: Optional[Sequence[int]] = None, context: Optional[FigureContext] = None) -> Any:
    """Grouped bars per class: clean (light) and robust (dark) accuracy of each series. The x labels carry the
    test points each bar rests on and, when given (long-tailed data), the training images; a measured 0 is marked
    (a triangle on the axis), a missing value (a class without test points) reads 'n/a'."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, len(classes) * max(0.95, 0.75 * len(series))),
                                    3.8))  # room for 4-digit counts
    width = 0.8 / (2 * len(series))
    zero_marked = missing = False
    for s, (label, (clean, robust)) in enumerate(series.items()):
        color = _COLORS[s % len(_COLORS)]
        for k, (values, alpha, kind) in enumerate(((clean, 0.35, 'clean'), (robust, 1.0, 'AutoAttack'))):
            xs = [i + (2 * s + k - len(series) + 0.5) * width for i in range(len(classes))]
            ax.bar(xs, [v if v is not None else 0 for v in values], width, color=color, alpha=alpha,
                   label=f'{label}: {kind}')
            zeros = [x for x, v in zip(xs, values) if v is not None and v == 0]
            if zeros:
                ax.plot(zeros, [0] * len(zeros), linestyle='none', marker='^', markersize=6, color=color, alpha=alpha,
                        clip_on=False, zorder=3)
                zero_marked = True
            for x, v in zip(xs, values):
                if v is None:
                    ax.text(x, 2, 'n/a', ha='center', va='bottom', rotation=90, fontsize=6, color='dimgray')
                    missing = True
    lines = [[str(c)] for c in classes]
    if train_counts:
        for line, n in zip(lines, train_counts):
            line.append(f'{n} train')
    if test_counts:
        for line, n in zip(lines, test_counts):
            line.append(f'n={n}')
    ax.set_xticks(range(len(classes)), ['\n'.join(line) for line in lines], fontsize=7)
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(0, 100)
    parts = (['training images'] if train_counts else []) + (['test points n'] if test_counts else [])
    ax.set_xlabel('class' + (f" ({', '.join(parts)})" if parts else ''))
    _title(ax, title or 'per-class clean and AutoAttack accuracy', context)
    handles, labels = ax.get_legend_handles_labels()
    if zero_marked:
        handles.append(ax.plot([], [], linestyle='none', marker='^', color='gray')[0])
        labels.append('measured 0%')
    if missing:
        handles.append(ax.plot([], [], linestyle='none', marker='$n/a$', markersize=12, color='dimgray')[0])
        labels.append('no test points')
    ax.legend(handles, labels, **_OUTSIDE_RIGHT)
    ax.grid(axis='y', alpha=0.3)
    return fig


def plot_per_class(path: Path, classes: Sequence[str], series: Mapping[str, Tuple[Sequence, Sequence]],
                   train_counts: Optional[Sequence[int]] = None, title: str = '', *,
                   test_counts: Optional[Sequence[int]] = None, context: Optional[FigureContext] = None) -> Path:
    """``per_class_figure`` written to ``path`` (PNG)."""
    return save_figure(per_class_figure(classes, series, train_counts, title, test_counts=test_counts, context=context),
                       path)


def _stop_note(ax: Any, x: float, y: float, text: str, color: str, middle: float = 50) -> None:
    ax.plot([x], [y], marker='o', markersize=4, color=color, clip_on=False)
    above = y < middle  # the note on the side of the point with more room
    ax.annotate(text, (x, y), textcoords='offset points', xytext=(-6, 6 if above else -6), ha='right',
                va='bottom' if above else 'top', fontsize=7, color=color)


_CDF_ENDS = ("at 0: misclassified without attack (perturbation 0: the curve's start)\n"
             'never flipped: FAB found no perturbation (infinite: the gap below 100%)')


def _ecdf(ax: Any, values: Sequence[float], **kwargs: Any) -> Any:
    """The empirical CDF of ``values`` as a step line from 0 to 1: ``Axes.ecdf`` (matplotlib >= 3.8), or the same
    steps drawn by hand. Infinite values count in the total but are never reached: the curve stops below 1."""
    values = sorted(values)
    if hasattr(ax, 'ecdf') and values:
        return ax.ecdf(values, **kwargs)
    cumulative = [(i + 1) / len(values) for i in range(len(values))]
    return ax.plot(values[:1] + values, [0.0] * bool(values) + cumulative, drawstyle='steps-post', **kwargs)[0]


def min_perturbation_cdf_figure(series: Mapping[str, Mapping[str, torch.Tensor]],
                                eps: Optional[Mapping[str, float]] = None, title: str = '', *,
                                context: Optional[FigureContext] = None) -> Any:
    """Empirical CDF of the FAB minimal perturbation, one panel per norm (Linf in x/255); a curve further right
    means larger perturbations are needed. Points misclassified without attack count as perturbation 0 and points
    FAB could not flip as infinite, so a curve may start above 0% and stop below 100%: the legend says how many
    (and why), a note marks where a curve stops."""
    from matplotlib.ticker import PercentFormatter
    plt = pyplot()
    norms = sorted({n for per_norm in series.values() for n in per_norm}, key=lambda n: (n != 'Linf', n))
    fig, axes = plt.subplots(1, len(norms), figsize=(4.8 * len(norms), 3.6), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        scale = _scale(norm)
        explain = False
        for s, (label, per_norm) in enumerate(series.items()):
            if norm not in per_norm:
                continue
            color = _COLORS[s % len(_COLORS)]
            d = per_norm[norm].double()
            finite = d[torch.isfinite(d)] * scale
            median = d.median().item()
            words = [f"median {format_budget(median, norm) if math.isfinite(median) else 'not reached'}"]
            if len(d) and (d == 0).any():
                words.append(f'{100 * (d == 0).double().mean().item():.0f}% at 0')
            if len(finite) < len(d):
                words.append(f'{100 * (1 - len(finite) / len(d)):.0f}% never flipped')
            explain |= len(words) > 1
            _ecdf(ax, (d * scale).tolist(), color=color, label=f"{label} ({', '.join(words)})")
            if len(finite) < len(d) and len(finite):
                reached = len(finite) / len(d)
                _stop_note(ax, finite.max().item(), reached, f'stops at {100 * reached:.0f}%: FAB flipped no more',
                           color, middle=0.5)
        if eps and norm in eps:
            ax.axvline(eps[norm] * scale, color='gray', linestyle='--', linewidth=1,
                       label=f'AutoAttack eps {format_budget(eps[norm], norm)}')
        ax.set_xlabel(budget_axis_label(norm, 'minimal perturbation (FAB)'))
        ax.set_ylabel('points flipped')
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        ax.set_xlim(left=0)
        _readable_x(ax, norm)
        ax.grid(alpha=0.3)
        ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.24 if explain else -0.2), fontsize=7, frameon=False,
                  title=_CDF_ENDS if explain else None, title_fontsize=7)
    _title(fig, title or 'minimal adversarial perturbation (FAB), cumulative', context)
    fig.tight_layout()
    return fig


def plot_min_perturbation_cdf(path: Path, series: Mapping[str, Mapping[str, torch.Tensor]],
                              eps: Optional[Mapping[str, float]] = None, title: str = '', *,
                              context: Optional[FigureContext] = None) -> Path:
    """``min_perturbation_cdf_figure`` written to ``path`` (PNG)."""
    return save_figure(min_perturbation_cdf_figure(series, eps, title, context=context), path)


def robust_accuracy_figure(series: Mapping[str, Mapping[str, object]], norm: str, eps_max: float, title: str = '', *,
                           context: Optional[FigureContext] = None) -> Any:
    """Robust accuracy against the budget (Linf in x/255): the curve implied by FAB's minimal perturbations (an
    upper bound), drawn until it reaches 0 (the x range grows to the largest FAB distance) or marked where it stops
    (points FAB could not flip), and AutoAttack's accuracy at the evaluated budgets (markers). ``series[label]``
    holds ``distances`` (tensor) and ``points`` (list of (eps, accuracy %))."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    scale = _scale(norm)
    finite_max = [d.double()[torch.isfinite(d.double())].max().item() for d in
                  (data.get('distances') for data in series.values())
                  if d is not None and torch.isfinite(d.double()).any()]
    x_max = max([eps_max] + [1.05 * m for m in finite_max])
    grid = torch.linspace(0, x_max, 400, dtype=torch.double)
    for s, (label, data) in enumerate(series.items()):
        color = _COLORS[s % len(_COLORS)]
        distances = data.get('distances')
        if distances is not None:
            curve = robust_fraction_above(distances.double(), grid)
            ax.plot((grid * scale).tolist(), curve.tolist(), color=color, label=f'{label}: FAB bound')
            if curve[-1] > 0:
                _stop_note(ax, x_max * scale, curve[-1].item(), f'{curve[-1].item():.0f}% never flipped by FAB', color)
        points: List = list(data.get('points', []))
        if points:
            ax.plot([p[0] * scale for p in points], [p[1] for p in points], 'o--', color=color,
                    label=f'{label}: AutoAttack')
    if context and context.eps and context.norm == norm:
        ax.axvline(context.eps * scale, color='gray', linestyle=':', linewidth=1,
                   label=f'evaluated eps {format_budget(context.eps, norm)}')
    ax.set_xlabel(budget_axis_label(norm))
    ax.set_ylabel('robust accuracy (%)')
    ax.set_ylim(0, 100)
    ax.set_xlim(0, x_max * scale)
    _readable_x(ax, norm)
    ax.grid(alpha=0.3)
    ax.legend(**_OUTSIDE_RIGHT)
    _title(ax, title or f'robust accuracy vs {norm} eps', context)
    return fig


def plot_robust_accuracy_vs_eps(path: Path, series: Mapping[str, Mapping[str, object]], norm: str,
                                eps_max: float, title: str = '', *, context: Optional[FigureContext] = None) -> Path:
    """``robust_accuracy_figure`` written to ``path`` (PNG)."""
    return save_figure(robust_accuracy_figure(series, norm, eps_max, title, context=context), path)


SeedValues = Mapping[int, Optional[float]]  # seed -> value (None: not measured)


def seed_points_figure(rows: Mapping[str, Mapping[str, Mapping[str, SeedValues]]], title: str = '') -> Any:
    """Per-seed values of several groups (e.g. the study's finalists) in a grid of panels: ``rows[metric][panel]
    [group]`` maps seed -> value. Each seed is a dot, the mean a bar with its 95 % Student-t interval
    (``stats.mean_ci``; none for one seed), and a faint line joins one seed's dots across the groups of a panel,
    so a paired comparison (same seed, same points) reads as the slope of its lines. Panels without data are left
    out; a panel's x labels carry each group's number of seeds."""
    from .stats import mean_ci
    plt = pyplot()
    panels = list(dict.fromkeys(panel for metric in rows.values() for panel, groups in metric.items() if groups))
    metrics = [m for m in rows if any(rows[m].get(panel) for panel in panels)]
    if not panels:
        raise ValueError('seed_points_figure: no values to draw.')
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(3.1 * len(panels), 2.9 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        for j, panel in enumerate(panels):
            ax, groups = axes[i][j], rows[metric].get(panel, {})
            names = list(groups)
            seeds = sorted({seed for values in groups.values() for seed in values})
            for seed in seeds:
                xs = [x for x, g in enumerate(names) if groups[g].get(seed) is not None]
                if len(xs) > 1:
                    ax.plot(xs, [groups[names[x]][seed] for x in xs], color='gray', alpha=0.25, linewidth=0.8, zorder=1)
            for x, name in enumerate(names):
                values = [v for v in groups[name].values() if v is not None]
                color = _COLORS[x % len(_COLORS)]
                offsets = ([0.0] if len(values) == 1
                           else [0.16 * (k / (len(values) - 1) - 0.5) for k in range(len(values))])
                ax.plot([x + o for o in offsets], values, 'o', color=color, markersize=3.5, alpha=0.8, zorder=2)
                mean, half = mean_ci(values)
                if mean is not None:
                    ax.errorbar([x + 0.3], [mean], yerr=None if half is None else [[half], [half]], fmt='_',
                                color=color, markersize=14, capsize=3, elinewidth=1.2, zorder=3)
            ax.set_xticks(range(len(names)), [f'{n}\n({len(groups[n])} seed{"s" * (len(groups[n]) != 1)})'
                                              for n in names], fontsize=6.5, rotation=30, ha='right')
            ax.set_xlim(-0.5, len(names) - 0.2)
            _readable_y(ax, percent=metric.rstrip().endswith('%'),
                        non_negative=all(v >= 0 for g in groups.values() for v in g.values() if v is not None))
            ax.tick_params(axis='y', labelsize=8)
            ax.grid(axis='y', alpha=0.3)
            if i == 0:
                ax.set_title(panel, fontsize=9)
            if j == 0:
                ax.set_ylabel(metric, fontsize=8)
    fig.suptitle(title or 'per seed (dots), mean and 95 % t-interval (bars)', fontsize=10)
    fig.tight_layout()
    return fig


def _readable_y(ax: Any, percent: bool, non_negative: bool) -> None:
    """A y range of at least 10 points (percent) or 20 % of the top (other values), kept inside [0, 100] for a
    percentage and above 0 for non-negative data: a 95 % interval over 2 seeds can reach past 100 % or below 0,
    and a 0.5-point spread must not look like 50."""
    low, high = ax.get_ylim()
    span = 10.0 if percent else 0.2 * max(abs(high), 1e-12)
    if high - low < span:
        low, high = (low + high - span) / 2, (low + high + span) / 2
    floor, ceiling = (0.0 if percent or non_negative else -math.inf), (100.0 if percent else math.inf)
    if low < floor:
        low, high = floor, min(ceiling, max(high, floor + span))
    if high > ceiling:
        low, high = max(floor, min(low, ceiling - span)), ceiling
    ax.set_ylim(low, high)


def plot_seed_points(path: Path, rows: Mapping[str, Mapping[str, Mapping[str, SeedValues]]], title: str = '') -> Path:
    """``seed_points_figure`` written to ``path`` (PNG)."""
    return save_figure(seed_points_figure(rows, title), path)
