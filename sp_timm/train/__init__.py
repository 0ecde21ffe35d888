""" ``sp-timm train``: timm flags, Accelerate, SP losses, PGD-AT / TRADES, exact resume. """
from .adversary import pgd_attack, project, trades_attack, trades_kl
from .args import build_train_parser, parse_fraction, parse_train_args
from .loop import METRICS_FILE, build_run_record, read_metrics, train


def main(argv=None) -> int:
    """``sp-timm train ...`` and ``accelerate launch -m sp_timm.train ...``."""
    import sys
    args = parse_train_args(argv)
    try:
        train(args)
    except ValueError as err:  # CheckpointError, DataError and bad values: the message names the fix
        print(f'sp-timm train: error: {err}', file=sys.stderr)
        return 2
    return 0
