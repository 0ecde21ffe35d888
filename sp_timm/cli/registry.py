""" The ``sp-timm`` subcommands register themselves here (Accelerate's ``commands/`` pattern): each module of
``sp_timm/cli`` defines one command (its one-line summary, its parser, what it runs) and decorates it with
``register_command``; ``sp_timm.cli.main`` dispatches by name. A command module imports only argparse-level code at
the top, so ``sp-timm --help`` and ``sp-timm COMMAND --help`` answer without importing torch. """
import argparse
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

__all__ = ['Command', 'COMMANDS', 'register_command']


@dataclass(frozen=True)
class Command:
    """One subcommand. ``build_parser()`` gives its full parser; ``run(args)`` does the work and returns the exit
    status. ``main(argv)``, when given, replaces parse-then-run (train: ``--config`` defaults; train and eval: the
    flags are parsed before torch is imported, also under ``accelerate launch -m``)."""
    name: str
    summary: str
    build_parser: Callable[[], argparse.ArgumentParser]
    run: Optional[Callable[[argparse.Namespace], int]] = None
    main: Optional[Callable[[Sequence[str]], int]] = None


COMMANDS: Dict[str, Command] = {}


def register_command(name: str, summary: str, build_parser: Callable[[], argparse.ArgumentParser], *,
                     run: Optional[Callable[[argparse.Namespace], int]] = None,
                     main: Optional[Callable[[Sequence[str]], int]] = None) -> Command:
    """Add a subcommand to ``sp-timm`` (``summary`` is its line in ``sp-timm --help``)."""
    if name in COMMANDS:
        raise ValueError(f"the sp-timm command '{name}' is registered twice.")
    if (run is None) == (main is None):
        raise ValueError(f"the sp-timm command '{name}' needs either run or main.")
    COMMANDS[name] = command = Command(name, summary, build_parser, run, main)
    return command
