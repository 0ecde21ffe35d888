""" ``sp-timm train`` (and ``accelerate launch -m sp_timm.train``): the flags of ``TrainConfig`` (timm's names and
meanings wherever they apply, plus the loss, dataset and adversarial-training flags). ``--config FILE.yaml`` sets
defaults (as in timm); flags given on the command line win. The flags are parsed (``--help`` answered) before torch
is imported. """
import argparse
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ..options import DefaultsHelpFormatter, add_options, from_namespace
from ..records import TrainConfig
from .common import run_reporting_errors
from .registry import register_command

__all__ = ['build_parser', 'parse_train_args', 'main']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='sp-timm train', formatter_class=DefaultsHelpFormatter, description=(
        'Train a timm model with an SP (or timm) loss on one or many processes through Accelerate; standard or '
        'adversarial training.'))
    add_options(parser, TrainConfig)
    return parser


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    """The flag defaults a ``--config`` YAML file sets (keys: flag names with ``_``), each parsed as its flag is."""
    config_path = Path(path)
    if not config_path.is_file():
        raise ValueError(f"--config '{path}' does not exist.")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"--config '{path}' is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"--config '{path}' must be a mapping of flag names to values.")
    actions = {a.dest: a for a in parser._actions}
    unknown = sorted(k for k in config if k.replace('-', '_') not in actions)
    if unknown:
        raise ValueError(f"--config '{path}' has unknown keys {unknown}; keys are flag names, e.g. batch_size, "
                         f"adv_eps.")
    defaults = {k.replace('-', '_'): v for k, v in config.items()}
    for key in ('val_split', 'adv_eps', 'adv_step_size'):  # written as text ('auto', '8/255'): parsed as the flag is
        if isinstance(defaults.get(key), str) or (key == 'val_split' and key in defaults):
            defaults[key] = actions[key].type(str(defaults[key]))
    return defaults


def parse_train_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """The ``TrainConfig`` of ``sp-timm train`` flags, parsed like timm's train.py: ``--config`` first, its values
    become defaults, then the command line. Its problems (``sp_timm.train.check_train_config``) are usage errors."""
    parser = build_parser()
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    config_args, _ = config_parser.parse_known_args(argv)
    if config_args.config:
        try:
            defaults = _config_defaults(parser, config_args.config)
        except (ValueError, argparse.ArgumentTypeError) as err:
            parser.error(str(err))
        parser.set_defaults(**defaults)
        for action in parser._actions:  # a required flag the config sets (e.g. dataset) is no longer required
            if action.dest in defaults:
                action.required = False
    config = from_namespace(TrainConfig, parser.parse_args(argv))
    from ..train.config import check_train_config  # imports torch: after --help is answered
    problems = check_train_config(config)
    if problems:
        parser.error(' '.join(problems))
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    config = parse_train_args(argv)
    from ..train.trainer import train
    return run_reporting_errors('sp-timm train', train, config)


register_command('train', 'train with timm flags through Accelerate (sp-timm train --help)', build_parser, main=main)
