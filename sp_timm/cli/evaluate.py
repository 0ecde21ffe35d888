""" ``sp-timm eval`` (and ``accelerate launch -m sp_timm.eval``): AutoAttack in the RobustBench protocol, sharded
and resumable, with the adaptive audit. The flags are parsed (``--help`` answered) before torch is imported. """
import argparse
from typing import Optional, Sequence

from .common import run_reporting_errors
from .registry import register_command


def build_parser() -> argparse.ArgumentParser:
    from ..eval.args import build_eval_parser
    return build_eval_parser()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..eval.runner import evaluate
    try:
        return run_reporting_errors('sp-timm eval', evaluate, args)
    finally:  # as Accelerator.end_training does for `sp-timm train`: the group's sockets and threads released for a
        # caller that goes on in this process (a launched process's exit is common.exit_process's)
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


register_command('eval', 'AutoAttack in the RobustBench protocol, sharded and resumable (sp-timm eval --help)',
                 build_parser, main=main)
