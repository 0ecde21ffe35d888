""" Evaluation: AutoAttack in the RobustBench protocol, leaderboard JSON, long-tail reports, minimal perturbations.

The names below load their modules (and torch) on first use: ``sp-timm eval --help`` imports neither torch nor timm.
"""
from typing import Optional, Sequence

from .._lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(('STANDARD_ATTACKS', 'Chunks', 'autoattack_chunk', 'capture_autoattack_warnings', 'fab_chunk',
                     'run_chunks'), 'attacks'),
    **dict.fromkeys(('DEFAULT_EPS', 'THREAT_MODELS', 'check_eps', 'format_eps', 'parse_eps'), 'budget'),
    **dict.fromkeys(('AuditConfig', 'AUDIT_ATTACKS', 'run_audit', 'summarize_audit', 'training_loss_from_record'), 'audit'),
    **dict.fromkeys(('build_eval_parser', 'DEFAULT_N_EXAMPLES'), 'args'),
    **dict.fromkeys(('REPORT_FILE', 'architecture_name', 'evaluate', 'evaluate_points'), 'runner'),
    **dict.fromkeys(('LEADERBOARD_FIELDS', 'build_report', 'leaderboard_entry', 'render_summary'), 'report'),
    **dict.fromkeys(('accuracy_ci', 'balanced_accuracy', 'group_accuracy', 'paired_test', 'per_class_accuracy'), 'stats'),
}
__all__ = sorted(_NAMES) + ['main']
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``sp-timm eval ...`` and ``accelerate launch -m sp_timm.eval ...``: the flags are parsed (``--help``
    answered) before torch is imported."""
    from .._cli_utils import run_reporting_errors
    from .args import build_eval_parser
    args = build_eval_parser().parse_args(argv)
    from .runner import evaluate
    try:
        return run_reporting_errors('sp-timm eval', evaluate, args)
    finally:  # as Accelerator.end_training does for `sp-timm train`: the group's sockets and threads released for a
        # caller that goes on in this process (a launched process's exit is _cli_utils.exit_process's)
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
