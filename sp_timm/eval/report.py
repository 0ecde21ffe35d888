""" The evaluation report (JSON), the RobustBench leaderboard entry and the markdown summary. """
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from ..formatting import format_ci, percent
from ..records import (LEADERBOARD_FIELDS, AuditSummary, BudgetAccuracy, ClassResult, EvalReport, EvaluatedModel,
                       GroupAccuracy, GroupResult, GroupRule, LeaderboardEntry, LongTailEntry, PerturbationSummary,
                       Protocol, StageAccuracy, to_json)
from ..threat.budget import LINF_SCALE, format_budget, format_eps
from .attacks import ROBUST
from .points import PointsResult
from .stats import accuracy_ci, balanced_accuracy, group_accuracy, per_class_accuracy

__all__ = ['LEADERBOARD_FIELDS', 'LongTail', 'build_report', 'leaderboard_entry', 'longtail_entry', 'render_summary',
           'perturbation_summary', 'SP_PAPER', 'placeholder', 'PLACEHOLDER_PREFIX']

SP_PAPER = {'link': 'https://arxiv.org/abs/2302.09575', 'name': 'Stationary Point Losses for Robust Model',
            'authors': 'Weiwei Gao, Dazhi Zhang, Yao Li, Zhichang Guo, Ovanes Petrosian',
            'venue': 'arXiv, Feb 2023'}
PLACEHOLDER_PREFIX = 'TO FILL IN: '
SUMMARY_TEMPLATE = Path(__file__).resolve().parents[1] / 'templates' / 'summary.md'


def placeholder(what: str, flag: str) -> str:
    """A leaderboard value nobody gave: says what belongs there and which ``sp-timm eval`` flag sets it."""
    return f'{PLACEHOLDER_PREFIX}{what} (sp-timm eval {flag})'


def perturbation_summary(distances: torch.Tensor) -> PerturbationSummary:
    """Median and quartiles of minimal perturbations (misclassified points count as 0, points FAB could not flip
    as infinite, so the statistics are over all points), and the share FAB flipped."""
    d = distances.double()
    q = torch.quantile(d, torch.tensor([0.25, 0.5, 0.75], dtype=torch.double),
                       interpolation='lower')
    finite = torch.isfinite(d)
    def as_number(v):
        return v if torch.isfinite(torch.tensor(v)) else None  # JSON has no infinity
    return PerturbationSummary(n=len(d), median=as_number(q[1].item()), q1=as_number(q[0].item()),
                               q3=as_number(q[2].item()), flipped_pct=100 * finite.double().mean().item(),
                               mean_of_flipped=d[finite].mean().item() if finite.any() else None,
                               attack='fab (untargeted)')


def _dedupe(messages: Sequence[str]) -> List[str]:
    counts: Dict[str, int] = {}
    for m in messages:
        counts[m] = counts.get(m, 0) + 1
    return [m if n == 1 else f'{m} (x{n})' for m, n in counts.items()]


class LongTail(NamedTuple):
    """What the report knows of the training distribution: whether the data is long-tailed, the training images per
    class, and the many / medium / few-shot groups with the rule that formed them."""
    long_tailed: bool = False
    train_counts: Optional[Sequence[int]] = None
    class_groups: Optional[Dict[str, Sequence[int]]] = None
    group_rule: Optional[str] = None


def build_report(points: PointsResult, labels: torch.Tensor, classes: Sequence[str], *, protocol: Protocol,
                 model: EvaluatedModel, warnings: Sequence[str], long_tail: LongTail = LongTail(), model_name: str,
                 seconds: float, meta: Dict[str, Any]) -> EvalReport:
    """Everything measured, per point aggregated, once: clean and AutoAttack accuracy with 95% Clopper-Pearson
    intervals, accuracy left after each stage, per class (and per many / medium / few-shot group when the training
    counts are known), balanced accuracy, minimal perturbations, the accuracy at other budgets, the audit, the
    verdict, and the leaderboard entry (``meta``: its fields no measurement gives, see ``leaderboard_entry``)."""
    aa, n, num_classes = points.aa, len(labels), len(classes)
    clean, robust = aa['clean'], aa[ROBUST]
    clean_pc = per_class_accuracy(clean, labels, num_classes)
    robust_pc = per_class_accuracy(robust, labels, num_classes)
    group_of = {c: g for g, members in (long_tail.class_groups or {}).items() for c in members}
    per_class = [ClassResult(label=c, name=classes[c], n=int((labels == c).sum()), clean_acc=clean_pc[c],
                             robust_acc=robust_pc[c],
                             train_count=None if long_tail.train_counts is None else int(long_tail.train_counts[c]),
                             group=group_of.get(c, '') if group_of else None) for c in range(num_classes)]
    groups = rule = None
    if long_tail.class_groups:
        clean_g, robust_g = group_accuracy(clean_pc, long_tail.class_groups), group_accuracy(robust_pc,
                                                                                             long_tail.class_groups)
        groups = {g: GroupResult(classes=list(m), clean_acc=clean_g[g], robust_acc=robust_g[g])
                  for g, m in long_tail.class_groups.items()}
        if long_tail.group_rule:  # how the groups were formed (sp_timm.data.GROUP_RULES)
            from ..data.longtail import GROUP_RULES
            rule = GroupRule(name=long_tail.group_rule, description=GROUP_RULES[long_tail.group_rule])
    curve = [BudgetAccuracy(eps=protocol.eps_value, eps_str=protocol.eps, robust_acc=percent(robust))]
    curve += [BudgetAccuracy(eps=eps, eps_str=format_eps(eps), robust_acc=percent(flags))
              for eps, flags in sorted(points.curve.items())]
    warnings = _dedupe(warnings)
    audit = None if points.audit is None else replace(points.audit, warnings=_dedupe(points.audit.warnings))
    unreliable = bool(warnings) or bool(audit is not None and audit.unreliable)
    clean_acc, robust_acc = percent(clean), percent(robust)
    preview = bool(meta.get('preview'))
    no_entry = no_leaderboard_reason(protocol, preview, long_tail.long_tailed)
    entry = (None if no_leaderboard_reason(protocol, preview) else
             leaderboard_entry(protocol, clean_acc, robust_acc, unreliable, meta, audit))
    balanced = (balanced_accuracy(clean_pc), balanced_accuracy(robust_pc))
    return EvalReport(
        protocol=protocol, model=model, n_points=n, clean_acc=clean_acc, robust_acc=robust_acc,
        clean_ci=list(accuracy_ci(int(clean.sum()), n)), robust_ci=list(accuracy_ci(int(robust.sum()), n)),
        stages=[StageAccuracy('clean', clean_acc)] + [StageAccuracy(a, percent(aa[a])) for a in protocol.attacks],
        max_perturbation=aa['perturbation'].max().item() if n else 0.0,
        balanced_clean_acc=balanced[0], balanced_robust_acc=balanced[1],
        long_tailed=long_tail.long_tailed, per_class=per_class, groups=groups, group_rule=rule,
        min_perturbation={norm: perturbation_summary(d) for norm, d in points.min_perturbation.items()} or None,
        eps_curve=sorted(curve, key=lambda row: row.eps), warnings=warnings, unreliable=unreliable, audit=audit,
        model_name=model_name, seconds=seconds, leaderboard_note=no_entry,
        leaderboard=None if long_tail.long_tailed else entry,
        longtail_entry=None if entry is None or not long_tail.long_tailed else longtail_entry(entry, long_tail,
                                                                                              balanced, groups))


def no_leaderboard_reason(protocol: Protocol, preview: bool = False, long_tailed: bool = False) -> Optional[str]:
    """Why an evaluation gets no RobustBench leaderboard entry (None: it gets one): only AutoAttack's standard
    version, as published, unadapted, on the whole test split (or, with ``preview``, fewer points, said in the
    footnote); a long-tailed evaluation's entry goes to ``longtail_info/`` (RobustBench has no such leaderboard)."""
    if protocol.version != 'standard':
        return (f"no leaderboard entry: the {protocol.version} protocol is not RobustBench's (AutoAttack standard); "
                f"run sp-timm eval --protocol standard for one")
    if protocol.adaptation:
        return f'no leaderboard entry: AutoAttack standard was adapted to the class count ({protocol.adaptation})'
    if protocol.full_test_split is False and not preview:
        return (f"no leaderboard entry: an entry is measured on the whole test split of CIFAR-10 / CIFAR-100 (10,000 "
                f"images), these are the first {protocol.n_examples} {protocol.dataset} test images; --preview writes "
                f"one marked as a preview")
    if long_tailed:
        return ("no RobustBench entry: RobustBench has no long-tail leaderboard; the same entry format, with the "
                "imbalance and the balanced and per-group accuracies, is in longtail_info/")
    return None


def longtail_entry(entry: LeaderboardEntry, long_tail: LongTail, balanced: Tuple[float, float],
                   groups: Optional[Dict[str, GroupResult]]) -> LongTailEntry:
    """The long-tail entry of a long-tailed evaluation: RobustBench's entry, the training imbalance (most / fewest
    images per class), balanced accuracies and per-group accuracies, as strings with two decimals like RobustBench's."""
    counts = [int(c) for c in (long_tail.train_counts or [])]
    return LongTailEntry(
        entry=entry, imbalance_ratio=round(max(counts) / max(min(counts), 1), 4) if counts else 1.0,
        train_class_counts=counts, balanced_clean_acc=_fmt(balanced[0]), balanced_autoattack_acc=_fmt(balanced[1]),
        groups={g: GroupAccuracy(clean_acc=_fmt(r.clean_acc), autoattack_acc=_fmt(r.robust_acc))
                for g, r in (groups or {}).items()},
        group_rule=long_tail.group_rule)


def leaderboard_entry(protocol: Protocol, clean_acc: float, robust_acc: float, unreliable: bool,
                      meta: Dict[str, Any], audit: Optional[AuditSummary] = None) -> LeaderboardEntry:
    """RobustBench's leaderboard JSON: its fields, its types (accuracies as strings with two decimals). ``meta``:
    link, name, authors, venue, architecture, additional_data, reported, footnote. Where the ``audit`` broke points
    AutoAttack left robust, its accuracy goes in RobustBench's ``external`` field and the footnote names the audit;
    the footnote also says when the points are a preview (not the whole test split) or local data."""
    lowered = audit is not None and audit.broke_beyond_aa > 0
    notes = [meta.get('footnote') or '']
    if lowered:
        notes.append(f"External evaluation: an adaptive-attack audit ({', '.join(r.attack for r in audit.attacks)}) "
                     f"lowers robust accuracy to {audit.robust_acc:.2f}%")
    if protocol.full_test_split is False:
        notes.append(f'Preview: the first {protocol.n_examples} {protocol.dataset} test images, not the whole test '
                     f'split; not a leaderboard result')
    if protocol.local_data:
        notes.append('Evaluated on a local copy of the test split')
    footnote = '. '.join(n.rstrip('.') for n in notes if n) or None
    return LeaderboardEntry(
        link=meta.get('link') or '', name=meta.get('name') or '', authors=meta.get('authors') or '',
        additional_data=bool(meta.get('additional_data', False)), number_forward_passes=1, dataset=protocol.dataset,
        venue=meta.get('venue') or '', architecture=meta.get('architecture') or '', eps=protocol.eps,
        clean_acc=f'{clean_acc:.2f}', reported=meta.get('reported') or '',  # the paper's claim, never this measurement
        autoattack_acc=f'{robust_acc:.2f}', footnote=footnote, unreliable=unreliable,
        external=f'{audit.robust_acc:.2f}' if lowered else None)


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '–' if value is None else f'{value:.{digits}f}'


_WEIGHT_WORDS = {'ema': "the run's EMA weights (--model-ema)", 'raw': 'the trained (raw) weights'}


def protocol_words(protocol: Protocol) -> str:
    """The protocol as a report's headline says it: which version, which stages, how it was adapted."""
    p = protocol
    text = {'standard': f"AutoAttack version='standard' ({', '.join(p.attacks)})",
            'fast': f"the fast protocol, AutoAttack's white-box part only ({', '.join(p.attacks)}; not the "
                    f"leaderboard's protocol)",
            'rand': f"AutoAttack version='rand' for randomised defences ({', '.join(p.attacks)}, EOT over 20 draws)"}
    words = text.get(p.version, f"AutoAttack {p.version} ({', '.join(p.attacks)})")
    return words + (f'; adapted to the class count: {p.adaptation}' if p.adaptation else '')


def render_summary(report: EvalReport, figures: Sequence[str] = ()) -> str:
    """The report as markdown (``templates/summary.md``): protocol, headline numbers with intervals, stages,
    warnings, audit, perturbations, groups, per class, ``figures``. Linf budgets read x/255, as in the figures."""
    import jinja2
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                                     lstrip_blocks=True)
    environment.filters.update(num=_fmt, ci=format_ci, distance=_distance_text, check_values=_check_values,
                               figure_title=_figure_title)
    m = report.model
    to_fill = [] if report.leaderboard is None else [k for k, v in to_json(report.leaderboard).items()
                                                     if str(v).startswith(PLACEHOLDER_PREFIX)]
    template = environment.from_string(SUMMARY_TEMPLATE.read_text(encoding='utf-8'))
    return template.render(r=report, p=report.protocol, model=m, audit=report.audit,
                           protocol_words=protocol_words(report.protocol),
                           weights=_WEIGHT_WORDS.get(m.weights, m.weights) if m.weights else '', to_fill=to_fill,
                           placeholder=PLACEHOLDER_PREFIX.strip(), figures=list(figures))


def _figure_title(name: str) -> str:
    return name.rsplit('/', 1)[-1].rsplit('.', 1)[0].replace('_', ' ')


def _distance_text(value: Optional[float], norm: str) -> str:
    """A minimal perturbation of the FAB table: Linf in x/255 (three significant digits), L2 with four decimals."""
    if value is None:
        return '–'
    return format_budget(value, norm) if norm == 'Linf' else _fmt(value, 4)


def _budget_text(value: Any) -> str:
    """An audit check's Linf budget (or list of them) in x/255: exactly ``k/255`` where it is one, else to four
    significant digits (the ladder's top, 0.5, is 127.5/255)."""
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_budget_text(v) for v in value) + ']'
    if not isinstance(value, float):
        return str(value)
    exact = format_eps(value)
    return exact if exact.endswith('/255') else f'{value * LINF_SCALE:.4g}/255'


_CHECK_BUDGETS = ('eps', 'broken_by_eps', 'ladder', 'rises')  # audit check values that are budgets (or lists of)


def _check_values(check: Dict[str, Any], norm: str) -> str:
    """The values of an audit check, ``key=value`` (floats to four significant digits); Linf budgets in x/255, also
    in ``curve``'s (budget, accuracy) pairs."""
    values = []
    for key, value in check.items():
        if key == 'passed':
            continue
        if norm == 'Linf' and key in _CHECK_BUDGETS:
            text = _budget_text(value)
        elif norm == 'Linf' and key == 'curve':
            text = '[' + ', '.join(f'[{_budget_text(eps)}, {acc}]' for eps, acc in value) + ']'
        else:
            text = f'{value:.4g}' if isinstance(value, float) else str(value)
        values.append(f'{key}={text}')
    return ', '.join(values)
