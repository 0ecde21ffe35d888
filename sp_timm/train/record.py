""" The run record: everything needed to rebuild, evaluate, export and describe a trained model without the
command that trained it (written as ``run.json`` into every checkpoint). """
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ..data import ImageData, class_groups, group_rule
from ..losses import SPLoss
from ..records import ClassWeighting, FlagChange, LogitAdjustment, ModelEma, RunRecord, TrainConfig, ValidationSplit

__all__ = ['build_run_record', 'model_args_for', 'channel_stats', 'RunSetup']


class RunSetup(NamedTuple):
    """What the run set up besides its config, model and data, for the run record."""
    num_processes: int
    split_counts: List[int]  # per class, of the whole training split (before the validation split and subsets)
    mixed_precision: Optional[str] = None
    validation: Optional[ValidationSplit] = None
    class_weight: Optional[ClassWeighting] = None
    logit_adjustment: Optional[LogitAdjustment] = None
    model_ema: Optional[ModelEma] = None
    args_history: Optional[List[FlagChange]] = None


def channel_stats(images: torch.Tensor) -> Tuple[list, list]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    x = images.float().div_(255).transpose(0, 1).flatten(1)
    return [round(v, 4) for v in x.mean(1).tolist()], [round(max(v, 1e-3), 4) for v in x.std(1).tolist()]


def model_args_for(config: TrainConfig, train_data: ImageData, num_classes: int) -> Dict[str, Any]:
    """The ``create_model`` arguments of the run; CIFAR networks get the training data's channel statistics."""
    import timm
    from ..models import CifarClassifier
    model_args = dict(num_classes=num_classes, **config.model_kwargs)
    if config.drop:
        model_args['drop_rate'] = config.drop
    with torch.device('meta'):
        probe = timm.create_model(config.model, **model_args)
    if isinstance(probe, CifarClassifier) and 'input_mean' not in model_args:
        model_args['input_mean'], model_args['input_std'] = channel_stats(train_data.images)
    return model_args


def build_run_record(config: TrainConfig, model_args: Dict[str, Any], train_data: ImageData, loss: nn.Module,
                     setup: RunSetup) -> RunRecord:
    """Everything needed to rebuild, evaluate, export and describe the model without the original command, built
    once. ``loss``: the training loss (an SP member's parameters are recorded); ``setup.split_counts``: per-class
    images of the whole training split; the long-tail groups come from them, so they match the literature's counts."""
    import timm
    from ..version import __version__
    return RunRecord(
        model=config.model, model_args=model_args, num_classes=model_args['num_classes'],
        classes=list(train_data.classes), dataset=config.dataset, data_source=train_data.source,
        train_class_counts=train_data.class_counts(), split_class_counts=list(setup.split_counts),
        class_groups=class_groups(setup.split_counts), group_rule=group_rule(setup.split_counts),
        input_range=[0.0, 1.0], input_mean=model_args.get('input_mean'), input_std=model_args.get('input_std'),
        loss=config.loss, loss_params=loss.hparams() if isinstance(loss, SPLoss) else {}, config=config,
        num_processes=setup.num_processes, global_batch_size=config.batch_size * setup.num_processes,
        sp_timm_version=__version__, timm_version=timm.__version__, torch_version=torch.__version__,
        mixed_precision=setup.mixed_precision, validation=setup.validation, class_weight=setup.class_weight,
        logit_adjustment=setup.logit_adjustment, model_ema=setup.model_ema, args_history=setup.args_history)
