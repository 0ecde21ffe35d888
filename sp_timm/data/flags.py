""" The dataset flags shared by ``sp-timm data``, ``train`` and ``eval``. Light: the dataset names come from
``sources`` without loading any data. """
import argparse

__all__ = ['add_data_args']


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The dataset flags shared by the data, train and eval commands."""
    from .longtail import IMBALANCE_PROFILES
    from .sources import list_datasets
    parser.add_argument('--dataset', required=required, default=None, choices=list_datasets(), metavar='NAME',
                        help=f"one of {', '.join(list_datasets())}" + ('' if required else " (default: the model's)"))
    parser.add_argument('--data-dir', default=None,
                        help="a local copy: save_to_disk folder, parquet files or image folder (default: the Hub's "
                             "copy; digits ships with scikit-learn)")
    parser.add_argument('--imbalance-ratio', type=float, default=100.0, help='n_max / n_min of the -lt variants')
    parser.add_argument('--imbalance-profile', choices=IMBALANCE_PROFILES, default='exp',
                        help='training images per class of the -lt variants: exp (exponential decay, LDAM-DRW) or '
                             'step (half the classes keep n_max, half n_max / ratio)')
