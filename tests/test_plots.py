""" The evaluation's figures, read through matplotlib's objects (labels, tick text, legends), not pixels. """
import pytest
import torch

from sp_timm.eval.plots import (FigureContext, min_perturbation_cdf_figure, per_class_figure,
                                plot_robust_accuracy_vs_eps, robust_accuracy_figure)
from sp_timm.threat.budget import format_budget

CONTEXT = FigureContext('digits-small_cnn_cifar-sp_margin', 'digits', 'Linf', 2 / 255)


@pytest.fixture
def close_figures():
    import matplotlib.pyplot as plt
    yield
    plt.close('all')


def _tick_texts(fig, ax):
    """The x tick labels inside the axis range."""
    fig.canvas.draw()
    low, high = ax.get_xlim()
    return [t.get_text() for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if t.get_text() and low <= x <= high]


def _numbers(texts):
    return [float(t.replace('\u2212', '-')) for t in texts]


def _legend_outside(fig, ax):
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    axes = ax.get_window_extent()
    return legend.x0 >= axes.x1 or legend.y1 <= axes.y0


def test_format_budget_uses_the_tables_units():
    assert format_budget(8 / 255, 'Linf') == '8/255' and format_budget(0.0095, 'Linf') == '2.42/255'
    assert format_budget(0.5, 'L2') == '0.5'


def test_robust_accuracy_axis_is_in_x_over_255_and_reaches_zero(close_figures):
    distances = torch.tensor([0.0, 1.0, 2.0, 3.0, 6.0]) / 255
    fig = robust_accuracy_figure({'sp': {'distances': distances, 'points': [(2 / 255, 40.0)]}}, 'Linf', 3 / 255,
                                 context=CONTEXT)
    ax = fig.axes[0]
    assert ax.get_xlabel() == 'Linf budget eps (x/255)'
    ticks = _numbers(_tick_texts(fig, ax))
    assert max(ticks) >= 6 and all(t == int(t) for t in ticks) and len(ticks) <= 8  # 0, 1, 2 ... not 0.0078
    assert ax.get_xlim()[1] >= 6  # grown past the largest FAB distance: the curve reaches 0
    curve = ax.get_lines()[0]
    assert curve.get_ydata()[-1] == 0 and curve.get_xdata()[-1] >= 6
    marker = next(line for line in ax.get_lines() if line.get_label() == 'sp: AutoAttack')
    assert list(marker.get_xdata()) == pytest.approx([2.0])
    title = ax.get_title()
    assert 'digits-small_cnn_cifar-sp_margin' in title and 'digits' in title and 'Linf eps 2/255' in title
    assert _legend_outside(fig, ax)


def test_robust_accuracy_curve_that_stops_says_so(close_figures):
    distances = torch.tensor([1.0, 2.0, float('inf'), float('inf')]) / 255
    fig = robust_accuracy_figure({'ce': {'distances': distances, 'points': []}}, 'Linf', 3 / 255, context=CONTEXT)
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert any('50% never flipped by FAB' in n for n in notes)


def test_l2_budgets_stay_plain(close_figures, tmp_path):
    fig = robust_accuracy_figure({'m': {'distances': torch.tensor([0.2, 0.4, 0.9]), 'points': [(0.5, 30.0)]}},
                                 'L2', 1.0, context=FigureContext('wrn', 'cifar10', 'L2', 0.5))
    ax = fig.axes[0]
    assert ax.get_xlabel() == 'L2 budget eps' and 'L2 eps 0.5' in ax.get_title()
    assert max(_numbers(_tick_texts(fig, ax))) <= 1.2
    png = plot_robust_accuracy_vs_eps(tmp_path / 'r.png', {'m': {'distances': torch.tensor([0.2]), 'points': []}},
                                      'L2', 1.0)
    assert png.read_bytes()[:4] == b'\x89PNG'


def test_cdf_labels_eps_in_x_over_255_and_marks_where_it_stops(close_figures):
    series = {'ce': {'Linf': torch.tensor([0.0, 1.0, 2.0, 4.0]) / 255, 'L2': torch.tensor([0.1, 0.3, 0.5, 0.7])},
              'sp': {'Linf': torch.tensor([1.0, 3.0, 5.0, float('inf')]) / 255}}
    fig = min_perturbation_cdf_figure(series, {'Linf': 2 / 255}, context=CONTEXT)
    linf, l2 = fig.axes
    assert (linf.get_xlabel() == 'Linf minimal perturbation (FAB) (x/255)'
            and l2.get_xlabel() == 'L2 minimal perturbation (FAB)')
    assert max(_numbers(_tick_texts(fig, linf))) >= 5
    labels = [t.get_text() for t in linf.get_legend().get_texts()]
    assert 'ce (median 1/255, 25% at 0)' in labels and 'AutoAttack eps 2/255' in labels  # lower median: 1/255
    assert 'sp (median 3/255, 25% never flipped)' in labels
    eps_line = next(line for line in linf.get_lines() if line.get_label() == 'AutoAttack eps 2/255')
    assert list(eps_line.get_xdata()) == pytest.approx([2.0, 2.0])
    assert any('stops at 75%' in t.get_text() for t in linf.texts)
    assert 'Linf eps 2/255' in fig._suptitle.get_text()
    assert _legend_outside(fig, linf)


def test_cdf_explains_where_it_starts_and_stops(close_figures):
    """A curve starting above 0 (misclassified points: perturbation 0) or stopping below 100% (points FAB never
    flipped: infinite) is explained in the legend; a curve doing neither needs no explanation."""
    series = {'weak': {'Linf': torch.tensor([0.0] * 7 + [1.0]) / 255},
              'sp': {'Linf': torch.tensor([1.0, 2.0, 3.0, float('inf')]) / 255}}
    ax = min_perturbation_cdf_figure(series, context=CONTEXT).axes[0]
    title = ax.get_legend().get_title().get_text()
    assert 'misclassified without attack' in title and 'perturbation 0' in title
    assert 'FAB found no perturbation' in title and 'infinite' in title
    weak = next(line for line in ax.get_lines() if line.get_label().startswith('weak'))
    assert weak.get_label() == 'weak (median 0/255, 88% at 0)'
    assert weak.get_drawstyle() == 'steps-post' and max(weak.get_ydata()) == 1.0
    assert list(weak.get_ydata()).count(0.875) == 1  # the step at 0: 7 of 8 points
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == '100%'
    plain = min_perturbation_cdf_figure({'m': {'Linf': torch.tensor([1.0, 2.0]) / 255}}).axes[0]
    assert plain.get_legend().get_title().get_text() == ''


def test_cdf_is_axes_ecdf_and_the_fallback_draws_the_same_steps(close_figures, monkeypatch):
    from matplotlib.axes import Axes
    from sp_timm.eval.plots import _ecdf, pyplot
    values = [0.0, 0.0, 3.0, 1.0, float('inf')]
    calls = []
    if hasattr(Axes, 'ecdf'):
        ecdf = Axes.ecdf
        monkeypatch.setattr(Axes, 'ecdf', lambda self, *a, **k: calls.append(a) or ecdf(self, *a, **k), raising=True)
        min_perturbation_cdf_figure({'m': {'L2': torch.tensor(values)}})
        assert len(calls) == 1  # matplotlib >= 3.8: Axes.ecdf draws the curve
    line = _ecdf(pyplot().subplots()[1], values)
    monkeypatch.delattr(Axes, 'ecdf', raising=False)
    by_hand = _ecdf(pyplot().subplots()[1], values)
    assert by_hand.get_drawstyle() == line.get_drawstyle() == 'steps-post'
    assert list(by_hand.get_xdata()) == list(line.get_xdata()) == [0.0, 0.0, 0.0, 1.0, 3.0, float('inf')]
    assert list(by_hand.get_ydata()) == pytest.approx(list(line.get_ydata()))
    assert list(line.get_ydata()) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_per_class_bars_carry_test_counts_and_tell_zero_from_missing(close_figures):
    fig = per_class_figure(['airplane', 'cat', 'ship'], {'sp': ([90.0, 50.0, None], [40.0, 0.0, None])},
                           [5000, 500, 50], test_counts=[100, 100, 0], context=CONTEXT)
    ax = fig.axes[0]
    ticks = _tick_texts(fig, ax)
    assert ticks[0] == 'airplane\n5000 train\nn=100' and ticks[2].endswith('n=0')
    zero_marks = [line for line in ax.get_lines() if line.get_marker() == '^' and len(line.get_xdata())]
    assert len(zero_marks) == 1 and len(zero_marks[0].get_xdata()) == 1  # cat's 0% robust, not ship's missing bars
    assert sum(t.get_text() == 'n/a' for t in ax.texts) == 2  # ship: clean and robust missing
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert 'measured 0%' in legend and 'no test points' in legend
    assert _legend_outside(fig, ax)
    assert 'AutoAttack Linf eps 2/255' in ax.get_title()


def test_seed_points_join_each_seed_and_keep_percentages_inside_0_100(close_figures):
    from sp_timm.eval.plots import seed_points_figure
    rows = {'robust %': {'digits': {'ce': {1: 54.0, 2: 40.0}, 'sp': {1: 94.0, 2: 93.0, 3: 95.0}},
                         'lt': {'ce': {1: 32.0}}, 'empty': {}},
            'median FAB Linf (x/255)': {'digits': {'ce': {1: 2.1, 2: 1.8}, 'sp': {1: 4.9, 2: 5.0, 3: 4.8}}}}
    fig = seed_points_figure(rows)
    axes = fig.get_axes()
    assert len(axes) == 4  # 2 metrics x 2 panels with data ('empty' left out)
    digits = axes[0]
    assert digits.get_title() == 'digits' and axes[1].get_title() == 'lt'
    low, high = digits.get_ylim()
    assert low >= 0 and high <= 100  # the t-interval of CE's two seeds (47 +- 89) reaches far past both
    joins = [line for line in digits.get_lines() if line.get_alpha() == 0.25]
    assert sorted(tuple(line.get_ydata()) for line in joins) == [(40.0, 93.0), (54.0, 94.0)]  # seed 3 has no pair
    assert [t.get_text() for t in digits.get_xticklabels()] == ['ce\n(2 seeds)', 'sp\n(3 seeds)']
    assert axes[2].get_ylabel() == 'median FAB Linf (x/255)' and axes[2].get_ylim()[0] >= 0
    with pytest.raises(ValueError, match='no values'):
        seed_points_figure({'robust %': {'digits': {}}})


def test_mean_ci_is_the_student_t_interval():
    from sp_timm.eval.stats import mean_ci
    mean, half = mean_ci([1.0, 2.0, None, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / 3 ** 0.5)  # t_{0.975, 2} s / sqrt(n), s = 1
    assert mean_ci([5.0]) == (5.0, None) and mean_ci([None]) == (None, None)
