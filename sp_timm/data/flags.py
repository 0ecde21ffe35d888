""" The dataset flags shared by ``sp-timm data``, ``train`` and ``eval``: their help texts (one source for the three
commands' configs) and ``add_data_args`` for ``sp-timm data``. Light: the dataset names come from ``sources``
without loading any data. """
import argparse
from typing import List

from ..options import finite_float

__all__ = ['add_data_args', 'dataset_names', 'imbalance_profiles', 'dataset_help', 'DATA_DIR_HELP',
           'IMBALANCE_RATIO_HELP', 'IMBALANCE_PROFILE_HELP']

DATA_DIR_HELP = ("a local copy: save_to_disk folder, parquet files or image folder (default: the Hub's copy; digits "
                 "ships with scikit-learn)")
IMBALANCE_RATIO_HELP = 'n_max / n_min of the -lt variants'
IMBALANCE_PROFILE_HELP = ('training images per class of the -lt variants: exp (exponential decay, LDAM-DRW) or step '
                          '(half the classes keep n_max, half n_max / ratio)')


def dataset_names() -> List[str]:
    from .sources import list_datasets
    return list(list_datasets())


def imbalance_profiles() -> List[str]:
    from .longtail import IMBALANCE_PROFILES
    return list(IMBALANCE_PROFILES)


def dataset_help(required: bool) -> str:
    return f"one of {', '.join(dataset_names())}" + ('' if required else " (default: the model's)")


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The dataset flags shared by the data, train and eval commands."""
    parser.add_argument('--dataset', required=required, default=None, choices=dataset_names(), metavar='NAME',
                        help=dataset_help(required))
    parser.add_argument('--data-dir', default=None, help=DATA_DIR_HELP)
    parser.add_argument('--imbalance-ratio', type=finite_float, default=100.0, help=IMBALANCE_RATIO_HELP)
    parser.add_argument('--imbalance-profile', choices=imbalance_profiles(), default='exp', help=IMBALANCE_PROFILE_HELP)
