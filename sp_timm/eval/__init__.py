""" Evaluation: AutoAttack in the RobustBench protocol, leaderboard JSON, long-tail reports, minimal perturbations. """
from .attacks import STANDARD_ATTACKS, Chunks, autoattack_chunk, capture_autoattack_warnings, fab_chunk, run_chunks
from .budget import DEFAULT_EPS, THREAT_MODELS, check_eps, format_eps, parse_eps
from .evaluate import REPORT_FILE, architecture_name, build_eval_parser, evaluate, evaluate_points, main
from .report import LEADERBOARD_FIELDS, build_report, leaderboard_entry, render_summary
from .stats import accuracy_ci, balanced_accuracy, group_accuracy, paired_test, per_class_accuracy
