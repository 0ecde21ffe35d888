""" The evaluation report (JSON), the RobustBench leaderboard entry and the markdown summary. """
from dataclasses import replace
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import torch

from ..formatting import format_ci, percent
from ..records import (LEADERBOARD_FIELDS, AuditSummary, BudgetAccuracy, ClassResult, EvalReport, EvaluatedModel,
                       GroupResult, GroupRule, LeaderboardEntry, PerturbationSummary, Protocol, StageAccuracy, to_json)
from ..threat.budget import format_eps
from .attacks import ROBUST
from .points import PointsResult
from .stats import accuracy_ci, balanced_accuracy, group_accuracy, per_class_accuracy

__all__ = ['LEADERBOARD_FIELDS', 'LongTail', 'build_report', 'leaderboard_entry', 'render_summary',
           'perturbation_summary', 'SP_PAPER', 'placeholder', 'PLACEHOLDER_PREFIX']

SP_PAPER = {'link': 'https://arxiv.org/abs/2302.09575', 'name': 'Stationary Point Losses for Robust Model',
            'venue': 'arXiv, Feb 2023'}
PLACEHOLDER_PREFIX = 'TO FILL IN: '


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
    no_entry = no_leaderboard_reason(protocol)
    return EvalReport(
        protocol=protocol, model=model, n_points=n, clean_acc=clean_acc, robust_acc=robust_acc,
        clean_ci=list(accuracy_ci(int(clean.sum()), n)), robust_ci=list(accuracy_ci(int(robust.sum()), n)),
        stages=[StageAccuracy('clean', clean_acc)] + [StageAccuracy(a, percent(aa[a])) for a in protocol.attacks],
        max_perturbation=aa['perturbation'].max().item() if n else 0.0,
        balanced_clean_acc=balanced_accuracy(clean_pc), balanced_robust_acc=balanced_accuracy(robust_pc),
        long_tailed=long_tail.long_tailed, per_class=per_class, groups=groups, group_rule=rule,
        min_perturbation={norm: perturbation_summary(d) for norm, d in points.min_perturbation.items()} or None,
        eps_curve=sorted(curve, key=lambda row: row.eps), warnings=warnings, unreliable=unreliable, audit=audit,
        model_name=model_name, seconds=seconds, leaderboard_note=no_entry,
        leaderboard=None if no_entry else leaderboard_entry(protocol, clean_acc, robust_acc, unreliable, meta, audit))


def no_leaderboard_reason(protocol: Protocol) -> Optional[str]:
    """Why an evaluation gets no RobustBench leaderboard entry (None: it gets one): only AutoAttack's standard
    version, as published, is the leaderboard's protocol."""
    if protocol.version != 'standard':
        return (f"no leaderboard entry: the {protocol.version} protocol is not RobustBench's (AutoAttack standard); "
                f"run sp-timm eval --protocol standard for one")
    if protocol.adaptation:
        return f'no leaderboard entry: AutoAttack standard was adapted to the class count ({protocol.adaptation})'
    return None


def leaderboard_entry(protocol: Protocol, clean_acc: float, robust_acc: float, unreliable: bool,
                      meta: Dict[str, Any], audit: Optional[AuditSummary] = None) -> LeaderboardEntry:
    """RobustBench's leaderboard JSON: its fields, its types (accuracies as strings with two decimals). ``meta``:
    link, name, authors, venue, architecture, additional_data, reported, footnote. Where the ``audit`` broke points
    AutoAttack left robust, its accuracy goes in RobustBench's ``external`` field and the footnote names the audit."""
    lowered = audit is not None and audit.broke_beyond_aa > 0
    footnote = meta.get('footnote') or None
    if lowered:
        footnote = ((footnote + '. ') if footnote else '') + (
            f"External evaluation: an adaptive-attack audit (sp-timm eval --audit: "
            f"{', '.join(r.attack for r in audit.attacks)}) lowers robust accuracy to {audit.robust_acc:.2f}%")
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
    """The report as markdown: protocol, headline numbers with intervals, stages, warnings, perturbations, groups."""
    p, m = report.protocol, report.model
    lines = [f"# AutoAttack evaluation: {m.name or m.source or 'model'}", '',
             f"{p.dataset}, first {p.n_examples} test images in [0, 1]; {p.threat_model} eps = {p.eps}; "
             f"{protocol_words(p)}, seed {p.seed}, pyautoattack {p.pyautoattack_version}."
             + (f" Weights: {_WEIGHT_WORDS.get(m.weights, m.weights)}." if m.weights else ''), '',
             '| metric | accuracy (%) | 95% CI (Clopper-Pearson) |', '|---|---|---|',
             f"| clean | {report.clean_acc:.2f} | {format_ci(report.clean_ci)} |",
             f"| AutoAttack | {report.robust_acc:.2f} | {format_ci(report.robust_ci)} |",
             f"| balanced clean | {report.balanced_clean_acc:.2f} | |",
             f"| balanced AutoAttack | {report.balanced_robust_acc:.2f} | |", '',
             'Accuracy left after each stage: ' + ' → '.join(f"{s.stage} {s.acc:.2f}" for s in report.stages) + '.',
             '']
    if report.warnings:
        lines += ["**AutoAttack's checks warned; the evaluation is flagged unreliable:**", '']
        lines += [f'- {w}' for w in report.warnings] + ['']
    else:
        lines += ["AutoAttack's checks raised no warning.", '']
    if report.audit is not None:
        lines += _audit_lines(report.audit)
    if report.min_perturbation:
        lines += ['| minimal perturbation (FAB) | median | quartiles | flipped (%) |', '|---|---|---|---|']
        for norm, s in report.min_perturbation.items():
            lines.append(f"| {norm} | {_fmt(s.median, 4)} | {_fmt(s.q1, 4)} – {_fmt(s.q3, 4)} | {s.flipped_pct:.1f} |")
        lines.append('')
    if len(report.eps_curve) > 1:
        lines += ['AutoAttack accuracy by budget: ' + ', '.join(f"{r.eps_str}: {r.robust_acc:.2f}%"
                                                            for r in report.eps_curve) + '.', '']
    if report.groups:
        rule = report.group_rule
        lines += [f"Long-tail groups: {rule.description}.", ''] if rule else []
        lines += ['| group (training images) | classes | clean (%) | AutoAttack (%) |', '|---|---|---|---|']
        lines += [f"| {g} | {len(v.classes)} | {_fmt(v.clean_acc)} | {_fmt(v.robust_acc)} |"
                  for g, v in report.groups.items()] + ['']
    todo = [] if report.leaderboard is None else [k for k, v in to_json(report.leaderboard).items()
                                                  if str(v).startswith(PLACEHOLDER_PREFIX)]
    if report.leaderboard_note:
        lines += [report.leaderboard_note[0].upper() + report.leaderboard_note[1:] + '.', '']
    if todo:
        lines += [f"Leaderboard entry (model_info/): fill in {', '.join(todo)} before submitting; each "
                  f"'{PLACEHOLDER_PREFIX.strip()}' value names the sp-timm eval flag that sets it.", '']
    header = '| class | points | train images | group | clean (%) | AutoAttack (%) |'
    lines += [header, '|---|---|---|---|---|---|']
    lines += [f"| {c.name} | {c.n} | {'' if c.train_count is None else c.train_count} | {c.group or ''} | "
              f"{_fmt(c.clean_acc)} | {_fmt(c.robust_acc)} |" for c in report.per_class] + ['']
    lines += [f'![{_figure_title(f)}]({f})' for f in figures]
    return '\n'.join(lines) + '\n'


def _figure_title(name: str) -> str:
    return name.rsplit('/', 1)[-1].rsplit('.', 1)[0].replace('_', ' ')


def _audit_lines(audit: AuditSummary) -> List[str]:
    """The audit section of the summary: attacks, audited accuracy, checks, verdict."""
    lines = ['## Adaptive-attack audit', '',
             f"On the {audit.attacked_points} points AutoAttack's white-box stages left robust; per point the worst "
             f"case over AutoAttack and every attack below."
             + (f" Transfer attack from {audit.surrogate}." if audit.surrogate else ''), '',
             '| attack | kind | accuracy after AutoAttack + it (%) | broke beyond AutoAttack | only it broke |',
             '|---|---|---|---|---|']
    lines += [f"| {r.attack} | {r.kind} | {r.acc:.2f} | {r.broke_beyond_aa} | {r.broke_only_this} |"
              for r in audit.attacks]
    lines += [f'| {name} | skipped | | | {why} |' for name, why in audit.skipped.items()]
    lines += ['', f"Audited robust accuracy: **{audit.robust_acc:.2f}%** {format_ci(audit.robust_ci)} (95% CI) vs "
                  f"AutoAttack {audit.autoattack_acc:.2f}% ({audit.broke_beyond_aa} more points broken; "
                  f"threshold {audit.threshold:g} points).", '',
              '| check | result | values |', '|---|---|---|']
    for name, check in audit.checks.items():
        values = ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                           for k, v in check.items() if k != 'passed')
        lines.append(f"| {name} | {'pass' if check['passed'] else '**FAIL**'} | {values} |")
    verdict = ('**The audit flags this evaluation unreliable:** ' + '; '.join(audit.reasons) + '.'
               if audit.unreliable else 'The audit found no sign of gradient masking.')
    notes = [f'Note: {note}.' for note in audit.notes or []]
    return lines + ['', verdict, ''] + notes + ([''] if notes else [])
