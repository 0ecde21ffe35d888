""" ``sp-timm train`` (and ``accelerate launch -m sp_timm.train``): timm flags, Accelerate, SP losses, PGD-AT /
TRADES, exact resume. The flags are parsed (``--help`` answered) before torch is imported. """
import argparse
from typing import Optional, Sequence

from .common import run_reporting_errors
from .registry import register_command


def build_parser() -> argparse.ArgumentParser:
    from ..train.args import build_train_parser
    return build_train_parser()


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..train.args import parse_train_args
    args = parse_train_args(argv)
    from ..train.trainer import train
    return run_reporting_errors('sp-timm train', train, args)


register_command('train', 'train with timm flags through Accelerate (sp-timm train --help)', build_parser, main=main)
