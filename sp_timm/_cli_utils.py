""" Helpers shared by the ``sp-timm`` subcommands (train, eval, demo, data): on a low floor, so that no module
imports back from ``cli.py``. """
import argparse
import os
import re
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence

__all__ = ['format_table', 'DefaultsHelpFormatter', 'add_data_args', 'add_debug_arg', 'run_reporting_errors', 'exit_process', 'Interrupted', 'DEBUG_ENV',
           'EXIT_USAGE', 'EXIT_INTERRUPTED']

DEBUG_ENV = 'SP_TIMM_DEBUG'  # =1: full tracebacks, as --debug
EXIT_USAGE = 2  # argparse's status for bad input
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a message saying what was kept and how to continue (e.g. ``--resume RUN``)."""


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table (also valid markdown)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
    return '\n'.join([fmt(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [fmt(r) for r in rows])


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's help with each flag's default appended, ``(default: X)``, unless its help already says what the
    default is or that the flag is required; switches read ``off`` / ``on``, unset values ``none``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if (not action.option_strings or action.default is argparse.SUPPRESS or action.required
                or 'default' in text.lower() or 'required' in text.lower()):
            return text
        value = action.default
        if action.nargs == 0:
            shown = 'on' if value else 'off'
        elif value is None or (isinstance(value, (str, list, tuple, dict)) and not value):
            shown = 'none'
        elif isinstance(value, (list, tuple)):
            shown = ' '.join(str(v) for v in value)
        elif isinstance(value, float):
            shown = f'{value:g}'
        else:
            shown = str(value)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The dataset flags shared by the data, train and eval commands."""
    from .data import IMBALANCE_PROFILES, list_datasets
    parser.add_argument('--dataset', required=required, default=None, choices=list_datasets(), metavar='NAME',
                        help=f"one of {', '.join(list_datasets())}" + ('' if required else " (default: the model's)"))
    parser.add_argument('--data-dir', default=None,
                        help="a local copy: save_to_disk folder, parquet files or image folder (default: the Hub's "
                             "copy; digits ships with scikit-learn)")
    parser.add_argument('--imbalance-ratio', type=float, default=100.0, help='n_max / n_min of the -lt variants')
    parser.add_argument('--imbalance-profile', choices=IMBALANCE_PROFILES, default='exp',
                        help='training images per class of the -lt variants: exp (exponential decay, LDAM-DRW) or '
                             'step (half the classes keep n_max, half n_max / ratio)')


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--debug', action='store_true',
                        help=f'show the full traceback of an error (also: {DEBUG_ENV}=1)')


def run_reporting_errors(prog: str, func: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """``func(args)``, exit status 0. The user's mistakes and the environment's refusals are printed as one
    ``prog: error: ...`` line with exit status 2: a ``ValueError`` (``CheckpointError``, ``DataError``, malformed
    JSON, ...) or ``HubError`` whose message names the fix, or an ``OSError`` (a path that is a file, not
    writable, missing, a full disk). Ctrl-C prints one line (how to continue, when known), exit status 130.
    With ``--debug`` (or ``SP_TIMM_DEBUG=1``) they propagate with their traceback; other exceptions are bugs and
    always do."""
    from .hub import HubError
    debug = bool(getattr(args, 'debug', False)) or os.environ.get(DEBUG_ENV, '') not in ('', '0')
    try:
        status = func(args)
    except KeyboardInterrupt as err:
        if debug:
            raise
        print(f'{prog}: interrupted' + (f'; {err}' if str(err) else '.'), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, HubError, OSError) as err:
        if debug:
            raise
        message = re.sub(r'^\[Errno \d+\] ', '', str(err)) if isinstance(err, OSError) else str(err)
        print(f'{prog}: error: {message or type(err).__name__}', file=sys.stderr)
        return EXIT_USAGE
    return status if isinstance(status, int) else 0


def exit_process(status: Optional[int]) -> NoReturn:
    """End a ``python -m sp_timm...`` process with ``status``. A process that ``accelerate launch`` started as one
    of several (``WORLD_SIZE`` > 1) leaves with ``os._exit`` once its output is flushed, skipping the interpreter's
    finalization: a gloo worker thread can still be freeing the last collective's tensors then, and a thread that
    needs the GIL during finalization calls ``std::terminate`` (SIGABRT, "terminate called without an active
    exception"; the launcher then fails the whole run although every file was written). Destroying the process
    group first does not prevent it: the worker frees the work after the caller's ``wait()`` has returned."""
    try:
        world_size = int(os.environ.get('WORLD_SIZE', '1'))
    except ValueError:  # not a launcher's value: this process was not launched as one of several
        world_size = 1
    if world_size > 1:
        import logging
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
                pass
        os._exit(status or 0)
    sys.exit(status or 0)
