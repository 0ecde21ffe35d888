""" ``sp-timm eval`` flags: light to import (no torch), so that ``sp-timm eval --help`` answers at once. """
import argparse
from typing import Optional

from ..threat.budget import THREAT_MODELS, parse_eps

__all__ = ['build_eval_parser', 'DEFAULT_N_EXAMPLES']

DEFAULT_N_EXAMPLES = 10_000


def build_eval_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The flags of ``sp-timm eval`` (into ``parser`` when given, e.g. a subcommand's)."""
    from ..data.flags import add_data_args
    from ..options import DefaultsHelpFormatter, add_debug_arg
    p = parser or argparse.ArgumentParser(prog='sp-timm eval')
    p.formatter_class = DefaultsHelpFormatter
    p.description = ('AutoAttack (version=standard) on the first n test images in [0, 1], as RobustBench evaluates; '
                     'writes the leaderboard JSON, a report, a summary and plots.')
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument('--checkpoint', '--model', dest='checkpoint', metavar='SOURCE',
                        help='an sp-timm checkpoint (OUTPUT, OUTPUT/best), local-dir:DIR or hf-hub:ORG/NAME '
                             '(this or --robustbench-model is required)')
    source.add_argument('--robustbench-model', metavar='NAME',
                        help="a RobustBench zoo model (needs the [robustbench] extra and its weights, downloaded or in "
                             "--robustbench-dir; this or --checkpoint is required)")
    p.add_argument('--robustbench-dir', default='models', help="robustbench's model_dir")
    p.add_argument('--weights', choices=('auto', 'ema', 'raw'), default='auto',
                   help='which weights of a checkpoint: auto = the EMA weights (sp-timm train --model-ema) when it has '
                        'them, else the trained ones; ema; raw = the trained (non-averaged) weights. The report records which')
    add_data_args(p, required=False)
    p.add_argument('--threat-model', choices=THREAT_MODELS, default='Linf', help='the norm bounding the perturbation')
    p.add_argument('--eps', type=parse_eps, default=None, help='budget in [0, 1] pixels: 8/255 (Linf default), 0.5 (L2 default)')
    p.add_argument('--n-examples', type=int, default=None,
                   help=f'the first N test images (default {DEFAULT_N_EXAMPLES}, or the whole test set when smaller)')
    p.add_argument('-b', '--batch-size', type=int, default=500, help='attack batch size')
    p.add_argument('--chunk-size', type=int, default=None,
                   help='points per chunk, the unit processes share and resume (default: --batch-size)')
    p.add_argument('--seed', type=int, default=0, help="AutoAttack's seed (pyautoattack's own choice, the time, is not reproducible)")
    p.add_argument('--min-pert-norms', nargs='*', choices=THREAT_MODELS, default=list(THREAT_MODELS),
                   help='norms of the FAB minimal perturbations (none: skip)')
    p.add_argument('--min-pert-examples', type=int, default=1000, help='FAB on the first N of the evaluated points (0: skip)')
    p.add_argument('--fab-iters', type=int, default=100, help='FAB iterations for the minimal perturbations')
    p.add_argument('--curve-eps', nargs='*', type=parse_eps, default=[], metavar='EPS',
                   help='more budgets for the robust-accuracy-vs-eps curve (each is a full AutoAttack run)')
    p.add_argument('--out', default=None, help='evaluation folder (default: RUN/eval/epoch-NNNN-eval-THREAT-EPS for a run, beside another checkpoint folder, or output/eval/NAME)')
    p.add_argument('--restart', action='store_true', help='discard the saved partial results of --out and start over')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    add_debug_arg(p)
    _add_audit_args(p)
    meta = p.add_argument_group('leaderboard entry (RobustBench model_info fields; defaults from the training record)')
    meta.add_argument('--model-name', default=None,
                      help='file name of the entry, e.g. Author2026Title_WRN-28-10 (default: DATASET-MODEL-LOSS of the '
                           'training record)')
    meta.add_argument('--paper-title', default=None,
                      help="RobustBench's 'name', the paper's title (default: the SP-losses paper for SP models, a "
                           "description of the run for other sp-timm models, else a 'TO FILL IN' placeholder)")
    meta.add_argument('--link', default=None, help="URL of the paper or code (default: the SP-losses paper for SP models, "
                                                    "else a 'TO FILL IN' placeholder)")
    meta.add_argument('--authors', default=None, help="the paper's authors, e.g. 'A. Author, B. Author' (default: a 'TO "
                                                       "FILL IN' placeholder)")
    meta.add_argument('--venue', default=None, help="e.g. 'NeurIPS 2023' (default: 'arXiv, Feb 2023' for SP models, else a 'TO "
                                                     "FILL IN' placeholder)")
    meta.add_argument('--architecture', default=None,
                      help="RobustBench's spelling, e.g. WideResNet-28-10 (default: from the model's timm name)")
    meta.add_argument('--additional-data', action='store_true', help='trained with data beyond the training set')
    meta.add_argument('--reported', default=None, help="the robust accuracy (%%) the paper reports: RobustBench's 'reported' (default: empty, "
                           "since a measurement is not a paper's claim)")
    meta.add_argument('--footnote', default=None, help="RobustBench's footnote (default: the run's loss and training)")
    return p


def _add_audit_args(p: argparse.ArgumentParser) -> None:
    """``--audit`` and its budgets (defaults: sp_timm.eval.audit.AuditConfig, repeated here to keep this import light)."""
    g = p.add_argument_group('adaptive-attack audit (sp_timm.eval.audit: on the points AutoAttack left robust)')
    g.add_argument('--audit', action='store_true',
                   help='after AutoAttack, attack its robust points again (APGD-CE/DLR with restarts, APGD-T, margin PGD, '
                        "the model's training loss, Square with more queries, --surrogate transfer) and run the "
                        'gradient-masking checks; the report gets an audit section')
    g.add_argument('--surrogate', default=None, metavar='SOURCE',
                   help='a model of the same dataset (as --checkpoint) whose APGD-CE adversarial examples are '
                        'transferred to the evaluated model (needs --audit)')
    g.add_argument('--audit-threshold', type=float, default=1.0,
                   help='unreliable when the audit lowers robust accuracy by more than this many percentage points')
    g.add_argument('--audit-restarts', type=int, default=5, help='restarts of APGD-CE, APGD-DLR, the training-loss APGD and the transfer')
    g.add_argument('--audit-iters', type=int, default=100, help='APGD iterations per restart and per APGD-T target')
    g.add_argument('--audit-targets', type=int, default=9, help='APGD-T target classes (at most K - 1)')
    g.add_argument('--audit-margin-restarts', type=int, default=10, help='random restarts of the logit-margin PGD')
    g.add_argument('--audit-margin-steps', type=int, default=200, help='steps of the logit-margin PGD per restart')
    g.add_argument('--audit-square-queries', type=int, default=5000, help='Square queries per restart')
    g.add_argument('--audit-square-restarts', type=int, default=2, help='Square restarts')
    g.add_argument('--audit-large-eps-factor', type=float, default=16.0,
                   help='sanity check: APGD-CE at this multiple of --eps (capped where every image reaches mid-grey: '
                        'Linf 0.5, L2 0.5 sqrt(d)) must leave at most 10%% accuracy')
