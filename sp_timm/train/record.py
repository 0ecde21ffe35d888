""" The run record: everything needed to rebuild, evaluate, export and describe a trained model without the
command that trained it (written as ``run.json`` into every checkpoint). """
import argparse
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..data import ImageData, class_groups, group_rule
from ..losses import SPLoss

__all__ = ['build_run_record', 'model_args_for', 'channel_stats']


def channel_stats(images: torch.Tensor) -> Tuple[list, list]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    x = images.float().div_(255).transpose(0, 1).flatten(1)
    return [round(v, 4) for v in x.mean(1).tolist()], [round(max(v, 1e-3), 4) for v in x.std(1).tolist()]


def model_args_for(args: argparse.Namespace, train_data: ImageData, num_classes: int) -> Dict[str, Any]:
    """The ``create_model`` arguments of the run; CIFAR networks get the training data's channel statistics."""
    import timm
    from ..models import CifarClassifier
    model_args = dict(num_classes=num_classes, **args.model_kwargs)
    if args.drop:
        model_args['drop_rate'] = args.drop
    with torch.device('meta'):
        probe = timm.create_model(args.model, **model_args)
    if isinstance(probe, CifarClassifier) and 'input_mean' not in model_args:
        model_args['input_mean'], model_args['input_std'] = channel_stats(train_data.images)
    return model_args


def build_run_record(args: argparse.Namespace, model_args: Dict[str, Any], train_data: ImageData,
                     loss: nn.Module, num_processes: int, split_counts: Optional[List[int]] = None) -> Dict[str, Any]:
    """Everything needed to rebuild, evaluate, export and describe the model without the original command.
    ``split_counts``: per-class images of the whole training split (before the validation split and any
    --train-examples subset); the long-tail groups come from them, so they match the literature's counts."""
    import timm
    from ..version import __version__
    counts = train_data.class_counts()
    split_counts = list(split_counts or counts)
    return {
        'model': args.model, 'model_args': model_args, 'num_classes': model_args['num_classes'],
        'classes': list(train_data.classes), 'dataset': args.dataset, 'data_source': train_data.source,
        'train_class_counts': counts, 'split_class_counts': split_counts, 'class_groups': class_groups(split_counts),
        'group_rule': group_rule(split_counts),
        'input_range': [0.0, 1.0], 'input_mean': model_args.get('input_mean'), 'input_std': model_args.get('input_std'),
        'loss': args.loss, 'loss_params': loss.hparams() if isinstance(loss, SPLoss) else {},
        'args': {k: v for k, v in vars(args).items()},
        'num_processes': num_processes, 'global_batch_size': args.batch_size * num_processes,
        'sp_timm_version': __version__, 'timm_version': timm.__version__, 'torch_version': torch.__version__,
    }
