""" The options of an evaluation as typed config objects, each field also a flag of ``sp-timm eval`` (one source for
the Python API, the command line and the defaults; ``options.option``). Light: no torch, so ``--help`` answers at
once.

* ``AuditConfig``: the adaptive audit's budgets and thresholds (``--audit-*``);
* ``AttackConfig``: what runs on the points: AutoAttack's threat model and budget, batching, seed, FAB's minimal
  perturbations, the budgets of the robust-accuracy curve, and the audit (``None``: no audit);
* ``LeaderboardMeta``: RobustBench's ``model_info`` fields that no measurement gives;
* ``EvalConfig``: the model, the data, the output folder, and the three above.

Every config is checked once, when it is built (``problems()`` names every mistake; ``check()`` raises them as one
``ValueError``).
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..data.flags import DATA_DIR_HELP, IMBALANCE_PROFILE_HELP, IMBALANCE_RATIO_HELP, dataset_help, dataset_names
from ..files import safe_path_component
from ..options import DEBUG_ENV, flag_names, non_finite_options, option, option_fields
from ..records import percent_value
from ..threat.budget import DEFAULT_EPS, THREAT_MODELS, check_eps, parse_eps

__all__ = ['AuditConfig', 'AttackConfig', 'LeaderboardMeta', 'EvalConfig', 'AUDIT_BUDGETS', 'DEFAULT_N_EXAMPLES',
           'WEIGHT_CHOICES', 'STANDARD_ATTACKS', 'PROTOCOLS', 'ROBUST', 'WHITE_BOX', 'AutoAttackPlan',
           'autoattack_plan']

FULL_TEST_SPLIT = 10_000  # CIFAR-10 / CIFAR-100's test split: what a leaderboard entry is measured on
LEADERBOARD_CLASSES = {'cifar10': 10, 'cifar100': 100}  # RobustBench's leaderboards whose data sp-timm reads
DEFAULT_N_EXAMPLES = FULL_TEST_SPLIT
STANDARD_ATTACKS = ('apgd-ce', 'apgd-t', 'fab-t', 'square')  # AutoAttack version='standard', in its order
ROBUST = 'robust'  # an AutoAttack result's flags after the last stage of its plan, whichever it is
WHITE_BOX = 'white-box'  # ... and after the plan's white-box stages (before Square)
STANDARD_TARGETS = 9  # target classes of APGD-T and FAB-T in AutoAttack's standard version (Linf, L2)
PROTOCOLS = ('standard', 'fast', 'rand')
PROTOCOL_HELP = ("standard: AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square), the leaderboard's; fast: "
                 "its white-box part APGD-CE + APGD-T (research screening, never a leaderboard entry); rand: "
                 "AutoAttack's version for randomised defences (APGD-CE, APGD-DLR with EOT over 20 draws)")
WEIGHT_CHOICES = ('auto', 'ema', 'raw')
AUDIT = 'adaptive-attack audit (sp_timm.eval.audit: on the points AutoAttack left robust)'
LEADERBOARD = 'leaderboard entry (RobustBench model_info fields; defaults from the training record)'
PLACEHOLDER = "a 'TO FILL IN' placeholder"


@dataclass(frozen=True)
class AuditConfig:
    """Budgets and thresholds of the audit (every one a parameter, so tests can shrink them).

    ``threshold``: the audit marks the evaluation unreliable when it lowers robust accuracy by more than this many
    percentage points. ``large_eps_factor`` / ``large_eps_max_acc``: APGD-CE at ``large_eps`` must leave at most
    this accuracy (percent). ``grad_tol`` / ``grad_max_fraction``: clean points whose CE input gradient has L2 norm
    <= ``grad_tol`` (APGD's own normaliser is 1e-12) may be at most this fraction. ``square_alpha``: black-box-only
    breaks allowed, as a fraction of the points (AutoAttack's ``check_square_sr`` uses 0.002).
    """
    restarts: int = option(5, 'restarts of APGD-CE, APGD-DLR, the training-loss APGD and the transfer',
                           flags=('--audit-restarts',), group=AUDIT, type=int)
    n_iter: int = option(100, 'APGD iterations per restart and per APGD-T target', flags=('--audit-iters',),
                         group=AUDIT,
                         type=int)
    max_targets: int = option(9, 'APGD-T target classes (at most K - 1)', flags=('--audit-targets',), group=AUDIT,
                              type=int)
    margin_restarts: int = option(10, 'random restarts of the logit-margin PGD', flags=('--audit-margin-restarts',),
                                  group=AUDIT, type=int)
    margin_steps: int = option(200, 'steps of the logit-margin PGD per restart', flags=('--audit-margin-steps',),
                               group=AUDIT, type=int)
    square_queries: int = option(5000, 'Square queries per restart', flags=('--audit-square-queries',), group=AUDIT,
                                 type=int)
    square_restarts: int = option(2, 'Square restarts', flags=('--audit-square-restarts',), group=AUDIT, type=int)
    large_eps_factor: float = option(
        16.0, 'sanity check: APGD-CE at this multiple of --eps (capped where every image reaches mid-grey: Linf 0.5, '
              'L2 0.5 sqrt(d)) must leave at most 10%% accuracy', flags=('--audit-large-eps-factor',), group=AUDIT,
        type=float)
    large_eps_max_acc: float = 10.0
    threshold: float = option(1.0, 'unreliable when the audit lowers robust accuracy by more than this many percentage '
                                   'points', flags=('--audit-threshold',), group=AUDIT, type=float)
    grad_tol: float = 1e-12
    grad_max_fraction: float = 0.01
    square_alpha: float = 0.002

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(' '.join(problems))

    def problems(self) -> List[str]:
        problems = non_finite_options(self)
        if problems:
            return problems
        flags = {f.name: flag_names(f)[-1] for f in option_fields(AuditConfig)}
        problems = [f'{flags[k]} must be >= 1, got {getattr(self, k)}.' for k in AUDIT_BUDGETS
                    if k != 'large_eps_factor' and not getattr(self, k) >= 1]
        if not self.large_eps_factor > 1:
            problems.append(f"{flags['large_eps_factor']} must be > 1, got {self.large_eps_factor}.")
        if not self.threshold >= 0:
            problems.append(f"{flags['threshold']} must be >= 0 (percentage points), got {self.threshold}.")
        return problems


# the fields of AuditConfig that decide what an attack computes; the others (threshold, the checks' limits) only judge
# the saved results, so changing them re-judges an audit without running it again
AUDIT_BUDGETS = ('restarts', 'n_iter', 'max_targets', 'margin_restarts', 'margin_steps', 'square_queries',
                 'square_restarts', 'large_eps_factor')


@dataclass(frozen=True)
class AutoAttackPlan:
    """Which AutoAttack stages run, in order, for a protocol and a number of classes K, and how the protocol was
    adapted to K. The DLR loss needs K >= 3 (it divides by ``z_(1) - z_(3)``), its targeted form K >= 4 (``z_(4)``),
    and APGD-T / FAB-T target at most the K - 1 other classes (AutoAttack's standard version targets 9):

    * K >= 10: AutoAttack's own version, unchanged;
    * 4 <= K < 10: the same stages, APGD-T and FAB-T targeting the K - 1 other classes;
    * K = 3: APGD-T replaced by the untargeted APGD-DLR (the DLR attack defined here), FAB-T targeting 2 classes;
    * K = 2: no DLR stage; FAB-T's single target makes it untargeted FAB. With two classes CE is a monotone function
      of the logit margin, so APGD-CE's sign steps follow the margin's gradient (only a saturated softmax, where
      CE's gradient underflows to 0, stops it: the audit's margin PGD covers that case).
    """
    protocol: str
    num_classes: int
    attacks: Tuple[str, ...]
    n_target_classes: int
    adaptation: Optional[str] = None  # None: the protocol exactly as AutoAttack defines it

    @property
    def version(self) -> str:
        """The pyautoattack ``version`` whose attack parameters the stages use."""
        return 'rand' if self.protocol == 'rand' else 'standard'

    @property
    def white_box(self) -> Tuple[str, ...]:
        return tuple(a for a in self.attacks if a != 'square')

    def describe(self) -> str:
        """One line for a report's headline: the protocol, its stages and how it was adapted."""
        names = ', '.join(a.upper() for a in self.attacks)
        text = {'standard': f'AutoAttack standard ({names})',
                'fast': f'fast protocol: AutoAttack\'s white-box part only ({names}); not the leaderboard protocol',
                'rand': f'AutoAttack rand, for randomised defences ({names}, EOT over 20 draws)'}[self.protocol]
        return text + (f'; adapted to {self.num_classes} classes: {self.adaptation}' if self.adaptation else '')


def autoattack_plan(num_classes: int, protocol: str = 'standard') -> AutoAttackPlan:
    """The AutoAttack stages of ``protocol`` (one of ``PROTOCOLS``) for a model of ``num_classes`` outputs."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.")
    if num_classes < 2:
        raise ValueError(f'AutoAttack needs a classifier of >= 2 classes, got {num_classes} output(s).')
    targets = min(STANDARD_TARGETS, num_classes - 1)
    if protocol == 'rand':
        if num_classes >= 3:
            return AutoAttackPlan(protocol, num_classes, ('apgd-ce', 'apgd-dlr'), targets)
        return AutoAttackPlan(protocol, num_classes, ('apgd-ce',), targets, 'no APGD-DLR (DLR needs >= 3 classes)')
    if num_classes >= 4:
        attacks = STANDARD_ATTACKS
        note = None if targets == STANDARD_TARGETS else (f'APGD-T and FAB-T target the {targets} other classes '
                                                         f'(standard: {STANDARD_TARGETS})')
    elif num_classes == 3:
        attacks = ('apgd-ce', 'apgd-dlr', 'fab-t', 'square')
        note = ('APGD-T replaced by untargeted APGD-DLR (the targeted DLR loss needs >= 4 classes); FAB-T targets '
                'the 2 other classes')
    else:
        attacks = ('apgd-ce', 'fab-t', 'square')
        note = ('no DLR stage (the DLR loss needs >= 3 classes): APGD-CE, FAB-T with the one other class as target '
                '(untargeted FAB), Square')
    if protocol == 'fast':
        attacks = tuple(a for a in attacks if a not in ('fab-t', 'square'))
    return AutoAttackPlan(protocol, num_classes, attacks, targets, note)


@dataclass(frozen=True)
class AttackConfig:
    """What ``evaluate_points`` runs on the points: AutoAttack (``version='standard'``) at ``threat_model`` /
    ``eps`` (default: RobustBench's budget), cut into chunks of ``chunk_size`` points (default ``batch_size``), FAB's
    minimal perturbations in ``min_pert_norms`` on the first ``min_pert_examples`` points (``None``: all; 0: none),
    AutoAttack at each of ``curve_eps`` too, and the adaptive audit when ``audit`` is given (``True``: its defaults)."""
    threat_model: str = option('Linf', 'the norm bounding the perturbation', choices=THREAT_MODELS)
    protocol: str = option('standard', PROTOCOL_HELP, choices=PROTOCOLS)
    eps: Optional[float] = option(None, 'budget in [0, 1] pixels: 8/255 (Linf default), 0.5 (L2 default)',
                                  type=parse_eps)
    batch_size: int = option(500, 'attack batch size', flags=('-b', '--batch-size'), type=int)
    chunk_size: Optional[int] = option(None, 'points per chunk, the unit processes share and resume (default: '
                                             '--batch-size)', type=int)
    seed: int = option(0, "AutoAttack's seed (pyautoattack's own choice, the time, is not reproducible)", type=int)
    min_pert_norms: Tuple[str, ...] = option(THREAT_MODELS, 'norms of the FAB minimal perturbations (none: skip)',
                                             nargs='*', choices=THREAT_MODELS)
    min_pert_examples: Optional[int] = option(1000, 'FAB on the first N of the evaluated points (0: skip)', type=int)
    fab_iters: int = option(100, 'FAB iterations for the minimal perturbations', type=int)
    curve_eps: Tuple[float, ...] = option((), 'more budgets for the robust-accuracy-vs-eps curve (each is a full '
                                              'AutoAttack run)', nargs='*', type=parse_eps, metavar='EPS')
    audit: Optional[AuditConfig] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'min_pert_norms', tuple(self.min_pert_norms))
        object.__setattr__(self, 'curve_eps', tuple(self.curve_eps))
        if self.audit is True:
            object.__setattr__(self, 'audit', AuditConfig())
        elif self.audit is False:
            object.__setattr__(self, 'audit', None)

    @property
    def chunk(self) -> int:
        return self.chunk_size or self.batch_size

    def budget(self, input_dim: int = 3 * 32 * 32) -> float:
        """``eps`` (or the threat model's default), checked against images of ``input_dim`` values."""
        return check_eps(DEFAULT_EPS[self.threat_model] if self.eps is None else self.eps, self.threat_model, input_dim)

    def curve_budgets(self, input_dim: int) -> List[float]:
        """The extra budgets of the curve (checked), without the evaluated one."""
        eps = self.budget(input_dim)
        return [check_eps(e, self.threat_model, input_dim) for e in self.curve_eps if abs(e - eps) > 1e-12]

    def problems(self) -> List[str]:
        problems = non_finite_options(self)
        if problems:
            return problems
        for name, low in (('batch_size', 1), ('chunk_size', 1), ('min_pert_examples', 0), ('fab_iters', 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                problems.append(f"--{name.replace('_', '-')} must be >= {low}, got {value}.")
        if self.threat_model not in THREAT_MODELS:
            problems.append(f"--threat-model must be one of {', '.join(THREAT_MODELS)}, got {self.threat_model!r}.")
        if self.protocol not in PROTOCOLS:
            problems.append(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}.")
            return problems
        for eps in ([self.eps] if self.eps is not None else []) + list(self.curve_eps):
            try:
                check_eps(eps, self.threat_model)
            except ValueError as err:
                problems.append(str(err))
        return problems


@dataclass(frozen=True)
class LeaderboardMeta:
    """RobustBench's ``model_info`` fields that a measurement cannot give. A leaderboard row names the paper that
    proposes *that* model: the title, link, authors and venue come from the flags only (unset: a placeholder naming
    the flag; the SP-losses paper is cited in the footnote as the loss used, never as the model's paper).
    ``reported`` only from ``--reported``: it is the paper's number, not this measurement. ``preview``: an entry for
    fewer points than the whole test split, marked as a preview in its footnote."""
    model_name: Optional[str] = option(
        None, 'file name of the entry, e.g. Author2026Title_WRN-28-10 (default: DATASET-MODEL-LOSS of the training '
              'record)', group=LEADERBOARD)
    paper_title: Optional[str] = option(
        None, f"RobustBench's 'name': the title of the paper that proposes this model (default: {PLACEHOLDER})",
        group=LEADERBOARD)
    link: Optional[str] = option(None, f'URL of that paper or its code (default: {PLACEHOLDER})', group=LEADERBOARD)
    authors: Optional[str] = option(None, f"the paper's authors, e.g. 'A. Author, B. Author' (default: {PLACEHOLDER})",
                                    group=LEADERBOARD)
    venue: Optional[str] = option(None, f"e.g. 'NeurIPS 2023' (default: {PLACEHOLDER})", group=LEADERBOARD)
    architecture: Optional[str] = option(
        None, "RobustBench's spelling, e.g. WideResNet-28-10 (default: from the model's timm name)", group=LEADERBOARD)
    additional_data: bool = option(False, 'trained with data beyond the training set', group=LEADERBOARD,
                                   action='store_true')
    reported: Optional[str] = option(
        None, "the robust accuracy (%%) the paper reports: RobustBench's 'reported' (default: empty, since a "
              "measurement is not a paper's claim; a submission needs it)", group=LEADERBOARD)
    footnote: Optional[str] = option(None, "RobustBench's footnote (default: the SP loss used, for SP models)",
                                     group=LEADERBOARD)
    preview: bool = option(False, 'write the leaderboard entry although the points are not the whole test split '
                                  '(10,000 images); its footnote says it is a preview (sp-timm export --robustbench '
                                  'takes it only with its own --preview)',
                           group=LEADERBOARD, action='store_true')

    def problems(self) -> List[str]:
        problems = []
        if self.model_name is not None:
            try:
                safe_path_component(self.model_name, '--model-name')
            except ValueError as err:
                problems.append(str(err))
        if self.reported is not None:
            if not 0 <= percent_value(self.reported) <= 100:
                problems.append(f"--reported {self.reported!r}: expected the paper's robust accuracy in percent, a "
                                f"number in [0, 100] such as 53.4.")
        return problems


@dataclass(frozen=True)
class EvalConfig:
    """One ``sp-timm eval``: the model (``checkpoint``: an sp-timm checkpoint, ``local-dir:`` or ``hf-hub:``; or a
    RobustBench zoo model), the data (the first ``n_examples`` test images, default 10,000 or the whole test set), the
    evaluation folder ``out`` (resumable; ``restart`` discards its saved results), what runs on the points
    (``attack``), the adaptive audit's surrogate model, and the leaderboard entry's fields."""
    checkpoint: Optional[str] = option(
        None, 'an sp-timm checkpoint (OUTPUT, OUTPUT/best), local-dir:DIR or hf-hub:ORG/NAME (this or '
              '--robustbench-model is required)', flags=('--checkpoint', '--model'), metavar='SOURCE',
        exclusive='source', required=True)
    robustbench_model: Optional[str] = option(
        None, "a RobustBench zoo model (needs the [robustbench] extra and its weights, downloaded or in "
              "--robustbench-dir; this or --checkpoint is required)", metavar='NAME', exclusive='source', required=True)
    robustbench_dir: str = option('models', "robustbench's model_dir")
    weights: str = option('auto', 'which weights of a checkpoint: auto = the EMA weights (sp-timm train --model-ema) '
                                  'when it has them, else the trained ones; ema; raw = the trained (non-averaged) '
                                  'weights. The report records which', choices=WEIGHT_CHOICES)
    dataset: Optional[str] = option(None, dataset_help(False), choices=dataset_names, metavar='NAME')
    data_dir: Optional[str] = option(None, DATA_DIR_HELP)
    imbalance_ratio: float = option(100.0, IMBALANCE_RATIO_HELP, type=float)
    imbalance_profile: str = option('exp', IMBALANCE_PROFILE_HELP, choices=('exp', 'step'))
    n_examples: Optional[int] = option(
        None, f'the first N test images (default {DEFAULT_N_EXAMPLES}, or the whole test set when smaller)', type=int)
    out: Optional[str] = option(
        None, 'evaluation folder (default: RUN/eval/epoch-NNNN-eval-THREAT-EPS for a run, beside another checkpoint '
              'folder, or output/eval/NAME)')
    restart: bool = option(False, 'discard the saved partial results of --out and start over', action='store_true')
    no_progress: bool = option(False, 'no progress bars', action='store_true')
    debug: bool = option(False, f'show the full traceback of an error (also: {DEBUG_ENV}=1)', action='store_true')
    surrogate: Optional[str] = option(
        None, 'a model of the same dataset (as --checkpoint) whose APGD-CE adversarial examples are transferred to the '
              'evaluated model (needs --audit)', group=AUDIT, metavar='SOURCE')
    attack: AttackConfig = field(default_factory=AttackConfig)
    leaderboard: LeaderboardMeta = field(default_factory=LeaderboardMeta)

    @property
    def source(self) -> str:
        return self.checkpoint or f'robustbench:{self.robustbench_model}'

    def problems(self) -> List[str]:
        """Every mistake a value alone shows, checked before any model or data is loaded (so a rerun with a corrected
        flag finds no saved settings of the mistaken one)."""
        from ..files import check_output_folder
        problems = []
        if (self.checkpoint is None) == (self.robustbench_model is None):
            problems.append('give exactly one model: --checkpoint or --robustbench-model.')
        if self.robustbench_model and not self.dataset:
            problems.append('--robustbench-model needs --dataset (cifar10 or cifar100).')
        if self.n_examples is not None and self.n_examples < 1:
            problems.append(f'--n-examples must be >= 1, got {self.n_examples}.')
        if self.surrogate and self.attack.audit is None:
            problems.append('--surrogate is an attack of the audit: add --audit.')
        problems += self.attack.problems() + self.leaderboard.problems()
        if self.out:
            try:
                check_output_folder(self.out, '--out')
            except ValueError as err:
                problems.append(str(err))
        return problems

    def check(self) -> 'EvalConfig':
        problems = self.problems()
        if problems:
            raise ValueError(' '.join(problems))
        return self
