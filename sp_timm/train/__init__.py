""" ``sp-timm train``: timm flags, Accelerate, SP losses, PGD-AT / TRADES, exact resume. """
from .adversary import pgd_attack, project, trades_attack, trades_kl
from .args import build_train_parser, parse_fraction, parse_train_args
from .loop import METRICS_FILE, build_run_record, read_metrics, train


def main(argv=None) -> int:
    """``sp-timm train ...`` and ``accelerate launch -m sp_timm.train ...``."""
    from .._cli_utils import run_reporting_errors
    return run_reporting_errors('sp-timm train', train, parse_train_args(argv))
