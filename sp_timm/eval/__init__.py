""" Evaluation: AutoAttack in the RobustBench protocol, leaderboard JSON, long-tail reports, minimal perturbations.

The names below load their modules (and torch) on first use: ``sp-timm eval --help`` imports neither torch nor timm.
"""
from .._lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(('STANDARD_ATTACKS', 'Chunks', 'autoattack_chunk', 'capture_autoattack_warnings', 'fab_chunk',
                     'run_chunks'), 'attacks'),
    **dict.fromkeys(('AuditConfig', 'AUDIT_ATTACKS', 'run_audit', 'summarize_audit', 'training_loss_from_record'), 'audit'),
    **dict.fromkeys(('build_eval_parser', 'DEFAULT_N_EXAMPLES'), 'args'),
    **dict.fromkeys(('REPORT_FILE', 'architecture_name', 'evaluate', 'evaluate_points'), 'runner'),
    **dict.fromkeys(('LEADERBOARD_FIELDS', 'build_report', 'leaderboard_entry', 'render_summary'), 'report'),
    **dict.fromkeys(('accuracy_ci', 'balanced_accuracy', 'group_accuracy', 'paired_test', 'per_class_accuracy'), 'stats'),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
