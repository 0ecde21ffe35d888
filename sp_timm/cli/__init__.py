""" The ``sp-timm`` command: one module per subcommand (``losses``, ``data``, ``train``, ``eval``, ``demo``,
``export``), each registering itself (``registry.register_command``). Each subcommand's parser is built only when that
subcommand runs, and torch / timm are imported only by the code that needs them: ``sp-timm --help``, ``--version``
and every ``sp-timm COMMAND --help`` answer at once.
"""
import argparse
import sys
from typing import Optional, Sequence

from ..version import __version__
from .common import DefaultsHelpFormatter, run_reporting_errors
from .registry import COMMANDS

# each module registers its command; this order is the order of `sp-timm --help`
from . import losses, data, train, evaluate, demo, export  # noqa: E402,F401,I001  isort: skip

__all__ = ['main', 'build_parser', 'COMMANDS']


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the subcommands with their one-line help; each one's own flags are parsed by its
    parser (``COMMANDS[name].build_parser``), built only when it runs."""
    parser = argparse.ArgumentParser(prog='sp-timm', description='Stationary point losses for timm.',
                                     epilog='sp-timm COMMAND --help lists the flags of a command.',
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--version', action='version', version=f'sp-timm {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, command in COMMANDS.items():
        sub.add_parser(name, add_help=False, help=command.summary)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None:  # --help, --version, no or an unknown command: argparse answers
        build_parser().parse_args(argv)
        return 2
    if command.main is not None:
        return command.main(argv[1:])
    args = command.build_parser().parse_args(argv[1:])
    return run_reporting_errors(f'sp-timm {command.name}', command.run, args)
