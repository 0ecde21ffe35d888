""" Helpers shared by the ``sp-timm`` subcommands: the help formatter, the shared flags, one-line errors for a user's
mistakes, and how a launched process exits. """
import argparse
import os
import re
import sys
from typing import Any, Callable, NoReturn, Optional

from ..data.flags import add_data_args
from ..errors import HubError
from ..options import DEBUG_ENV, DefaultsHelpFormatter, add_debug_arg

__all__ = ['DefaultsHelpFormatter', 'add_data_args', 'add_debug_arg', 'run_reporting_errors', 'exit_process',
           'DEBUG_ENV',
           'EXIT_USAGE', 'EXIT_INTERRUPTED']

EXIT_USAGE = 2  # argparse's status for bad input
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention



def run_reporting_errors(prog: str, func: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """``func(args)``, exit status 0. The user's mistakes and the environment's refusals are printed as one
    ``prog: error: ...`` line with exit status 2: a ``ValueError`` (``CheckpointError``, ``DataError``, malformed
    JSON, ...) or ``HubError`` whose message names the fix, or an ``OSError`` (a path that is a file, not
    writable, missing, a full disk). Ctrl-C prints one line (how to continue, when known), exit status 130.
    With ``--debug`` (or ``SP_TIMM_DEBUG=1``) they propagate with their traceback; other exceptions are bugs and
    always do."""
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
