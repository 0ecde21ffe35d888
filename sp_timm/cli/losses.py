""" ``sp-timm losses``: the registered SP losses with their formula, parameters and stationary point. """
import argparse

from ..formatting import format_table
from .common import DefaultsHelpFormatter
from .registry import register_command

LISTED_K = 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sp-timm losses', formatter_class=DefaultsHelpFormatter, description=(
        'The SP losses of the registry with their formula, parameters and stationary point (margin and probability of '
        'the true class there), and the timm loss types the factory also builds.'))
    p.add_argument('--num-classes', type=int, default=LISTED_K, help='K used for the stationary margins')
    return p


def loss_rows(num_classes: int) -> list:
    """One row per SP member: name, formula, parameters, stationary set, margin and p_y there."""
    from ..losses import SPLoss, create_loss, list_losses
    rows = []
    for name in list_losses('sp_*'):
        loss: SPLoss = create_loss(name)
        params = ', '.join(f'{k}={v:g}' for k, v in loss.hparams().items())
        rows.append([name, loss.formula, params, loss.stationary_set,
                     f'{loss.stationary_margin(num_classes):.3f}', f'{loss.stationary_prob(num_classes):.3f}'])
    return rows


def run(args: argparse.Namespace) -> int:
    from ..losses import timm_loss_types
    print(f'SP losses (stationary point on the correct side; K = {args.num_classes}, class-index targets):\n')
    print(format_table(['name', 'loss l(z, y)', 'parameters (defaults)', 'stationary where', 'margin there', 'p_y '
                                                                                                             'there'],
                       loss_rows(args.num_classes)))
    print(f"\ntimm loss types, passed to timm's factory (no stationary point): {', '.join(timm_loss_types())}")
    print("Build one with sp_timm.create_loss(name, **params) or "
          "sp_timm.create_classification_loss(name, smoothing=..., soft_targets=..., sp_<param>=...).")
    return 0


register_command('losses', 'list the registered losses with their stationary points', build_parser, run=run)
