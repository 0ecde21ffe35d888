""" ``sp-timm eval`` (and ``accelerate launch -m sp_timm.eval``): the flags of ``EvalConfig``, ``AttackConfig``,
``AuditConfig`` (``--audit-*``) and ``LeaderboardMeta``, generated from their fields. AutoAttack in the RobustBench
protocol, sharded and resumable, with the adaptive audit. The flags are parsed (``--help`` answered) before torch is
imported. """
import argparse
from typing import Optional, Sequence

from ..eval.config import AUDIT, AttackConfig, AuditConfig, EvalConfig, LeaderboardMeta
from ..options import DefaultsHelpFormatter, add_options, from_namespace
from .common import run_reporting_errors
from .registry import register_command

__all__ = ['build_parser', 'parse_eval_args', 'main']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='sp-timm eval', formatter_class=DefaultsHelpFormatter, description=(
        'AutoAttack (version=standard) on the first n test images in [0, 1], as RobustBench evaluates; writes the '
        'leaderboard JSON, a report, a summary and plots.'))
    groups = add_options(parser, EvalConfig)
    add_options(parser, AttackConfig, groups)
    if AUDIT not in groups:
        groups[AUDIT] = parser.add_argument_group(AUDIT)
    groups[AUDIT].add_argument(
        '--audit', action='store_true',
        help='after AutoAttack, attack its robust points again (APGD-CE/DLR with restarts, APGD-T, margin PGD, the '
             "model's training loss, Square with more queries, --surrogate transfer) and run the gradient-masking "
             'checks; the report gets an audit section')
    add_options(parser, AuditConfig, groups)
    add_options(parser, LeaderboardMeta, groups)
    return parser


def parse_eval_args(argv: Optional[Sequence[str]] = None) -> EvalConfig:
    """The ``EvalConfig`` of ``sp-timm eval`` flags."""
    args = build_parser().parse_args(argv)
    try:
        audit = from_namespace(AuditConfig, args) if args.audit else None
    except ValueError as err:  # an audit budget out of range: one line, as every other mistake
        build_parser().error(str(err))
    return from_namespace(EvalConfig, args, attack=from_namespace(AttackConfig, args, audit=audit),
                          leaderboard=from_namespace(LeaderboardMeta, args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    config = parse_eval_args(argv)
    from ..eval.runner import evaluate
    try:
        return run_reporting_errors('sp-timm eval', evaluate, config)
    finally:  # as Accelerator.end_training does for `sp-timm train`: the group's sockets and threads released for a
        # caller that goes on in this process (a launched process's exit is common.exit_process's)
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


register_command('eval', 'AutoAttack in the RobustBench protocol, sharded and resumable (sp-timm eval --help)',
                 build_parser, main=main)
