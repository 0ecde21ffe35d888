""" Helpers shared by the ``sp-timm`` subcommands (train, eval, demo, data): on a low floor, so that no module
imports back from ``cli.py``. """
import argparse
import sys
from typing import Any, Callable, Sequence

__all__ = ['format_table', 'add_data_args', 'run_reporting_errors']


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table (also valid markdown)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
    return '\n'.join([fmt(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [fmt(r) for r in rows])


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The dataset flags shared by the data, train and eval commands."""
    from .data import IMBALANCE_PROFILES, list_datasets
    parser.add_argument('--dataset', required=required, default=None, choices=list_datasets(), metavar='NAME',
                        help=f"one of {', '.join(list_datasets())}" + ('' if required else " (default: the model's)"))
    parser.add_argument('--data-dir', default=None, help='local copy: save_to_disk folder, parquet files or image folder')
    parser.add_argument('--imbalance-ratio', type=float, default=100.0, help='n_max / n_min of the -lt variants')
    parser.add_argument('--imbalance-profile', choices=IMBALANCE_PROFILES, default='exp')


def run_reporting_errors(prog: str, func: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """``func(args)``, exit status 0; bad input (a ``ValueError`` such as ``CheckpointError`` / ``DataError``, or a
    ``HubError``, whose message names the fix) is printed as ``prog: error: ...`` with exit status 2."""
    from .hub import HubError
    try:
        status = func(args)
    except (ValueError, HubError) as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0
