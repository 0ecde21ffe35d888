""" The evaluation report (``report.json`` of ``sp-timm eval``) and the RobustBench leaderboard entry it carries.
Typed and versioned (``records.schema``); read through ``records.upgrade``. The report is built once, complete,
by ``sp_timm.eval.report.build_report``. """
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .schema import check_finite, check_percent, json_field, percent_value, require

__all__ = ['REPORT_VERSION', 'LEADERBOARD_FIELDS', 'Protocol', 'EvaluatedModel', 'StageAccuracy', 'ClassResult',
           'GroupResult', 'GroupRule', 'PerturbationSummary', 'BudgetAccuracy', 'AuditAttackRow', 'AuditSummary',
           'LeaderboardEntry', 'GroupAccuracy', 'LongTailEntry', 'EvalReport']

REPORT_VERSION = 3  # 1: before versions; 2: before full_test_split, local_data and longtail_entry


@dataclass
class Protocol:
    """How the points were evaluated: data, threat model, AutoAttack's version and attacks, and the run's settings."""
    dataset: str
    split: str
    threat_model: str
    eps: str  # RobustBench's spelling, e.g. '8/255'
    eps_value: float
    n_examples: int
    version: str  # the protocol: 'standard' or 'rand' (AutoAttack's versions) or 'fast' (its white-box part)
    attacks: List[str]
    seed: int
    batch_size: int
    chunk_size: int
    num_processes: int
    device: str
    pyautoattack_version: str
    fab_iters: int
    min_pert_examples: int
    data_source: str
    n_target_classes: Optional[int] = json_field(None, omit_none=True)  # of APGD-T and FAB-T
    adaptation: Optional[str] = json_field(None, omit_none=True)  # how the protocol was adapted to the class count
    # the points are the whole test split of a leaderboard's dataset (10,000 images of 10 / 100 balanced classes at
    # 32x32): what a leaderboard entry is measured on; None where not determined (a report built by the Python API)
    full_test_split: Optional[bool] = json_field(None, omit_none=True)
    local_data: Optional[bool] = json_field(None, omit_none=True)  # read from a local copy (--data-dir)

    def check_values(self, where: str) -> None:
        check_finite({'eps_value': self.eps_value}, where, minimum=0)
        require(min(self.n_examples, self.fab_iters, self.min_pert_examples) >= 0, where,
                'n_examples, fab_iters and min_pert_examples must be >= 0')
        require(min(self.batch_size, self.chunk_size, self.num_processes) >= 1, where,
                'batch_size, chunk_size and num_processes must be >= 1')


@dataclass
class EvaluatedModel:
    """Which model was evaluated: its name, source, the SHA-256 of its weights, and what its run record says (None
    where unknown; reports of an early sp-timm eval lack some)."""
    name: Optional[str] = None
    source: Optional[str] = None
    weights_sha256: Optional[str] = None
    architecture: Optional[str] = None
    loss: Optional[str] = None
    loss_params: Optional[Dict[str, Any]] = None
    adversarial_training: Optional[str] = None
    trained_on: Optional[str] = None
    weights: Optional[str] = None  # 'ema' (--model-ema's average) or 'raw'


@dataclass
class StageAccuracy:
    stage: str
    acc: float

    def check_values(self, where: str) -> None:
        check_percent({'acc': self.acc}, where)


@dataclass
class ClassResult:
    label: int = json_field(key='class')
    name: str = ''
    n: int = 0
    clean_acc: Optional[float] = None
    robust_acc: Optional[float] = None
    train_count: Optional[int] = json_field(None, omit_none=True)
    group: Optional[str] = json_field(None, omit_none=True)

    def check_values(self, where: str) -> None:
        check_percent({'clean_acc': self.clean_acc, 'robust_acc': self.robust_acc}, where)
        require(self.n >= 0 and self.label >= 0, where, 'class and n must be >= 0')


@dataclass
class GroupResult:
    classes: List[int]
    clean_acc: Optional[float]
    robust_acc: Optional[float]

    def check_values(self, where: str) -> None:
        check_percent({'clean_acc': self.clean_acc, 'robust_acc': self.robust_acc}, where)


@dataclass
class GroupRule:
    name: str
    description: str


@dataclass
class PerturbationSummary:
    """Minimal perturbations over all points (misclassified ones count 0, points FAB could not flip as infinite)."""
    n: int
    median: Optional[float]
    q1: Optional[float]
    q3: Optional[float]
    flipped_pct: float
    mean_of_flipped: Optional[float]
    attack: str

    def check_values(self, where: str) -> None:  # the quartiles may be infinite (points no attack flipped)
        require(all(v is None or v >= 0 for v in (self.median, self.q1, self.q3, self.mean_of_flipped)), where,
                'perturbations must be >= 0')
        check_percent({'flipped_pct': self.flipped_pct}, where)


@dataclass
class BudgetAccuracy:
    eps: float
    eps_str: str
    robust_acc: float

    def check_values(self, where: str) -> None:
        check_finite({'eps': self.eps}, where, minimum=0)
        check_percent({'robust_acc': self.robust_acc}, where)


@dataclass
class AuditAttackRow:
    attack: str
    kind: str  # 'white-box' | 'black-box'
    acc: float
    broke_beyond_aa: int
    broke_only_this: int

    def check_values(self, where: str) -> None:
        check_percent({'acc': self.acc}, where)
        require(min(self.broke_beyond_aa, self.broke_only_this) >= 0, where, 'counts of broken points must be >= 0')


@dataclass
class AuditSummary:
    """The adaptive-attack audit (``sp-timm eval --audit``): every attack's row, the audited robust accuracy with its
    interval, the gradient-masking checks and the verdict."""
    config: Dict[str, Any]
    attacked_points: int
    attacks: List[AuditAttackRow]
    skipped: Dict[str, str]
    autoattack_acc: float
    robust_acc: float
    robust_ci: List[float]
    drop: float
    broke_beyond_aa: int
    threshold: float
    checks: Dict[str, Dict[str, Any]]
    unreliable: bool
    reasons: List[str]
    fab_min_points: int = 0
    warnings: List[str] = json_field(default_factory=list)
    notes: Optional[List[str]] = json_field(None, omit_none=True)  # what the audit noticed that is no sign of masking
    surrogate: Optional[str] = json_field(None, omit_none=True)  # the transfer attack's model: source and weights

    def check_values(self, where: str) -> None:
        check_percent({'autoattack_acc': self.autoattack_acc, 'robust_acc': self.robust_acc,
                       'robust_ci': self.robust_ci}, where)
        check_finite({'drop': self.drop, 'threshold': self.threshold}, where)
        require(min(self.attacked_points, self.broke_beyond_aa, self.fab_min_points) >= 0, where,
                'counts of points must be >= 0')


# RobustBench's model_info/<dataset>/<threat_model>/<name>.json, in its order and types
LEADERBOARD_FIELDS = {'link': str, 'name': str, 'authors': str, 'additional_data': bool, 'number_forward_passes': int,
                      'dataset': str, 'venue': str, 'architecture': str, 'eps': str, 'clean_acc': str, 'reported': str,
                      'autoattack_acc': str, 'footnote': (str, type(None)), 'unreliable': bool}


@dataclass
class LeaderboardEntry:
    """RobustBench's leaderboard JSON: its fields in its order and types (accuracies as strings with two decimals).
    RobustBench's format, not sp-timm's: no schema version."""
    link: str
    name: str
    authors: str
    additional_data: bool
    number_forward_passes: int
    dataset: str
    venue: str
    architecture: str
    eps: str
    clean_acc: str
    reported: str
    autoattack_acc: str
    footnote: Optional[str]
    unreliable: bool
    # RobustBench's field for a stronger evaluation than AutoAttack's (it lists min(autoattack_acc, external)): the
    # audited robust accuracy, written only where the audit lowered AutoAttack's
    external: Optional[str] = json_field(None, omit_none=True)

    def check_values(self, where: str) -> None:
        for name in ('clean_acc', 'autoattack_acc', 'external') + (('reported',) if self.reported else ()):
            text = getattr(self, name)
            check_percent({name: None if text is None else percent_value(text)}, where)
        require(self.number_forward_passes >= 1, where, 'number_forward_passes must be >= 1')


@dataclass
class GroupAccuracy:
    clean_acc: str
    autoattack_acc: str


@dataclass
class LongTailEntry:
    """A long-tailed evaluation in RobustBench's entry format (``LeaderboardEntry``'s fields, the dataset named
    ``cifar10-lt`` / ``cifar100-lt``) plus what a long-tail comparison needs: the training imbalance, the balanced
    accuracies and the per-group accuracies. RobustBench has no long-tail leaderboard: sp-timm writes these under
    ``longtail_info/`` so that long-tail results can be collected and compared in one format."""
    entry: LeaderboardEntry
    imbalance_ratio: float  # of the training split: most / fewest images per class
    train_class_counts: List[int]
    balanced_clean_acc: str
    balanced_autoattack_acc: str
    groups: Dict[str, GroupAccuracy]
    group_rule: Optional[str] = None


@dataclass(kw_only=True)
class EvalReport:
    """Everything one ``sp-timm eval`` measured, aggregated over the points: clean and AutoAttack accuracy with 95%
    Clopper-Pearson intervals, the accuracy left after each stage, per class and per long-tail group, balanced
    accuracy, minimal perturbations, the accuracy at other budgets, AutoAttack's warnings, the audit, the verdict
    (``unreliable``) and the leaderboard entry."""
    schema_version: int = REPORT_VERSION
    protocol: Protocol
    model: EvaluatedModel
    n_points: int
    clean_acc: float
    robust_acc: float
    clean_ci: List[float]
    robust_ci: List[float]
    stages: List[StageAccuracy]
    max_perturbation: float
    balanced_clean_acc: float
    balanced_robust_acc: float
    long_tailed: bool
    per_class: List[ClassResult]
    groups: Optional[Dict[str, GroupResult]] = json_field(None, omit_none=True)
    group_rule: Optional[GroupRule] = json_field(None, omit_none=True)
    min_perturbation: Optional[Dict[str, PerturbationSummary]] = json_field(None, omit_none=True)
    eps_curve: List[BudgetAccuracy]
    warnings: List[str]
    unreliable: bool
    audit: Optional[AuditSummary] = json_field(None, omit_none=True)
    model_name: str
    seconds: float
    # None: no RobustBench entry (a protocol other than the unadapted standard one, see ``leaderboard_note``)
    leaderboard: Optional[LeaderboardEntry] = json_field(None, omit_none=True)
    leaderboard_note: Optional[str] = json_field(None, omit_none=True)
    longtail_entry: Optional[LongTailEntry] = json_field(None, omit_none=True)

    def check_values(self, where: str) -> None:
        """The rules a report keeps (``records.schema``): accuracies and intervals in [0, 100], counts >= 0, finite
        budgets and times, one row per class."""
        check_percent({name: getattr(self, name) for name in ('clean_acc', 'robust_acc', 'clean_ci', 'robust_ci',
                                                               'balanced_clean_acc', 'balanced_robust_acc')}, where)
        require(len(self.clean_ci) == 2 and len(self.robust_ci) == 2, where, 'an interval is two numbers [low, high]')
        check_finite({'max_perturbation': self.max_perturbation, 'seconds': self.seconds}, where, minimum=0)
        require(self.n_points >= 0, where, f'n_points must be >= 0, got {self.n_points}')
        require(len({row.label for row in self.per_class}) == len(self.per_class), where, 'per_class repeats a class')
