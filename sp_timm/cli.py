""" The ``sp-timm`` command. """
import argparse
import sys
from typing import List, Optional, Sequence

from .losses import SPLoss, create_loss, list_losses, timm_loss_types
from .version import __version__

_LISTED_K = 10


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table (also valid markdown)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
    return '\n'.join([fmt(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [fmt(r) for r in rows])


def _loss_rows(num_classes: int) -> List[List[str]]:
    rows = []
    for name in list_losses('sp_*'):
        loss: SPLoss = create_loss(name)
        params = ', '.join(f'{k}={v:g}' for k, v in loss.hparams().items())
        rows.append([name, loss.formula, params, loss.stationary_set,
                     f'{loss.stationary_margin(num_classes):.3f}', f'{loss.stationary_prob(num_classes):.3f}'])
    return rows


def cmd_losses(args: argparse.Namespace) -> int:
    print(f'SP losses (stationary point on the correct side; K = {args.num_classes}, class-index targets):\n')
    print(format_table(['name', 'loss l(z, y)', 'parameters (defaults)', 'stationary where', 'margin there', 'p_y there'],
                       _loss_rows(args.num_classes)))
    print(f"\ntimm loss types, passed to timm's factory (no stationary point): {', '.join(timm_loss_types())}")
    print("Build one with sp_timm.create_loss(name, **params) or "
          "sp_timm.create_classification_loss(name, smoothing=..., soft_targets=..., sp_<param>=...).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='sp-timm', description='Stationary point losses for timm.')
    parser.add_argument('--version', action='version', version=f'sp-timm {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    losses = sub.add_parser('losses', help='list the registered losses with their stationary points')
    losses.add_argument('--num-classes', type=int, default=_LISTED_K, help='K used for the stationary margins')
    losses.set_defaults(func=cmd_losses)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f'sp-timm {args.command}: error: {err}', file=sys.stderr)
        return 2
