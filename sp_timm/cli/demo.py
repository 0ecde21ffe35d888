""" ``sp-timm demo``: the paper's claims, measured on real data in minutes on a CPU (``sp_timm.demo``). """
import argparse

from .registry import register_command


def build_parser() -> argparse.ArgumentParser:
    from ..demo import build_demo_parser
    return build_demo_parser(argparse.ArgumentParser(prog='sp-timm demo'))


def run(args: argparse.Namespace) -> int:
    from ..demo import main
    return main(args)


register_command('demo', 'train CE and SP on digits / digits-lt, attack both, compare (about 5 min on 2 CPUs)',
                 build_parser, run=run)
