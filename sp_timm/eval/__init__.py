""" Evaluation: AutoAttack in the RobustBench protocol (``evaluate_points`` on points, ``evaluate`` for ``sp-timm
eval``), the adaptive audit with its registered attacks, reports, leaderboard JSON, long-tail groups, minimal
perturbations, figures. Options are typed configs (``eval.config``), light to import.

The names below load their modules (and torch) on first use: ``sp-timm eval --help`` imports neither torch nor timm.
"""
from .._lazy import lazy_attributes

_NAMES = {
    **dict.fromkeys(('STANDARD_ATTACKS', 'Chunks', 'autoattack_chunk', 'capture_autoattack_warnings', 'fab_chunk',
                     'run_chunks'), 'attacks'),
    **dict.fromkeys(('AuditConfig', 'AttackConfig', 'EvalConfig', 'LeaderboardMeta', 'DEFAULT_N_EXAMPLES'), 'config'),
    **dict.fromkeys(('run_audit', 'summarize_audit', 'audit_stages', 'training_loss_from_run'), 'audit'),
    **dict.fromkeys(('AuditAttack', 'AuditContext', 'AuditInputs', 'register_audit_attack', 'audit_attack_names'),
                    'audit_attacks'),
    **dict.fromkeys(('PointsResult', 'evaluate_points'), 'points'),
    **dict.fromkeys(('REPORT_FILE', 'Evaluation', 'architecture_name', 'evaluate'), 'runner'),
    **dict.fromkeys(('LEADERBOARD_FIELDS', 'build_report', 'leaderboard_entry', 'render_summary'), 'report'),
    **dict.fromkeys(('accuracy_ci', 'balanced_accuracy', 'group_accuracy', 'paired_test', 'per_class_accuracy'),
                    'stats'),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
