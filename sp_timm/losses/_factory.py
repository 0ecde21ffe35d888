""" Loss factories: ``create_loss`` by name and ``create_classification_loss``, a drop-in superset of timm's.

SP names are built here; every other name goes to timm's own ``timm.loss.create_classification_loss``
(timm >= 1.0.31) or, on an older timm, to the choices timm's ``train.py`` made (JSD, soft-target CE for
Mixup / CutMix, label smoothing, CE, BCE).
"""
import fnmatch
import inspect
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ._registry import get_loss_cls, is_registered, list_registered, unknown_name_error

__all__ = ['create_loss', 'create_classification_loss', 'list_losses', 'is_sp_loss', 'timm_loss_types',
           'check_recorded_loss']

# Loss types of timm's train.py before timm had a loss factory.
_LEGACY_TIMM_LOSS_TYPES = ('ce', 'bce', 'jsd')
SP_KWARG_PREFIX = 'sp_'
# every loss type of timm's factory (timm >= 1.0.31) and of its earlier train.py: a record names one of these
# whichever timm reads it (the [robustbench] extra pins timm 1.0.9, whose list is shorter)
TIMM_LOSS_NAMES = ('ce', 'bce', 'jsd', 'asl', 'poly', 'twoway', 'zlpr', 'db', 'cross_entropy')


def _timm_factory() -> Optional[Callable[..., nn.Module]]:
    """timm's ``create_classification_loss`` when this timm has it (>= 1.0.31), else None."""
    try:
        from timm.loss import create_classification_loss as timm_create
    except ImportError:
        return None
    return timm_create


def timm_loss_types() -> Tuple[str, ...]:
    """The loss names timm's factory (or, before it, timm's train.py) understands."""
    if _timm_factory() is None:
        return _LEGACY_TIMM_LOSS_TYPES
    from timm.loss import LOSS_TYPES
    return tuple(LOSS_TYPES)


def is_sp_loss(name: str) -> bool:
    """True for the names of registered SP losses."""
    return is_registered(name)


def list_losses(pattern: str = '*') -> List[str]:
    """Every name the factories accept (SP members and timm's loss types) that matches ``pattern``."""
    names = set(list_registered(pattern)) | {n for n in timm_loss_types() if fnmatch.fnmatch(n, pattern)}
    return sorted(names)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a loss by name: an SP member with its own parameters (``create_loss('sp_ls', pstar=0.9)``),
    or a timm loss type with the keyword arguments of ``create_classification_loss``."""
    if is_registered(name):
        cls = get_loss_cls(name)
        accepted = _init_params(cls)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"'{name}' got unknown parameter(s) {unknown}; it accepts {accepted}.")
        return cls(**kwargs)
    if name in timm_loss_types():
        return create_classification_loss(name, **kwargs)
    raise unknown_name_error(name, list_losses())


def check_recorded_loss(name: str, params: dict) -> None:
    """A ``ValueError`` unless ``name`` is a loss of the factories and ``params`` (a run record's ``loss_params``: an
    SP member's own parameters, none for timm's losses) build it: what a record names must be what it can rebuild."""
    if not is_registered(name) and name not in set(timm_loss_types()) | set(TIMM_LOSS_NAMES):
        raise unknown_name_error(name, list_losses())
    if not is_registered(name) and params:
        raise ValueError(f"timm's loss '{name}' takes no recorded parameters, got {sorted(params)}.")
    if is_registered(name):
        create_loss(name, **params)


def _init_params(cls: type) -> List[str]:
    """Keyword parameters of ``cls.__init__``, following ``**kwargs`` up to the base classes."""
    names: List[str] = []
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.name != 'self' and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def create_classification_loss(
        loss_type: Optional[str] = None,
        multi_label: bool = False,
        smoothing: float = 0.,
        soft_targets: bool = False,
        class_weight: Optional[Union[torch.Tensor, float, Sequence[float]]] = None,
        pos_weight: Optional[Union[torch.Tensor, float, Sequence[float]]] = None,
        bce_target_thresh: Optional[float] = None,
        bce_sum: bool = False,
        asl_gamma_pos: float = 1.,
        asl_gamma_neg: float = 4.,
        asl_clip: Optional[float] = 0.05,
        asl_reduction: str = 'batchmean',
        poly_epsilon: float = 2.,
        poly_gamma: float = 0.,
        poly_alpha: Optional[float] = None,
        jsd_splits: int = 0,
        twoway_tp: float = 4.,
        twoway_tn: float = 1.,
        class_counts: Optional[Union[torch.Tensor, Sequence[float]]] = None,
        num_samples: Optional[int] = None,
        db_neg_scale: float = 2.,
        db_init_bias: float = 0.05,
        db_focal_gamma: float = 2.,
        logit_adjust_tau: Optional[float] = None,
        **sp_kwargs: Any,
) -> nn.Module:
    """Create the training criterion: timm's ``create_classification_loss`` plus the SP family.

    The arguments are timm's (see ``timm.loss.create_classification_loss``), with ``loss_type`` also
    accepting the SP names (``list_losses('sp_*')``) and SP parameters passed with an ``sp_`` prefix:
    ``create_classification_loss('sp_ls', smoothing=0.1, sp_pstar=0.9)``. ``None`` values of SP parameters
    mean "the member's default", so argparse defaults can be passed straight through.

    SP losses with timm's flags:
        * ``soft_targets=True`` (Mixup / CutMix): the member's soft-target form
          ``sum_k t_k l(z, k)``; ``smoothing`` is ignored, as in timm, since Mixup applies it.
        * ``smoothing=s`` with class indices: the member is evaluated on ``t = (1 - s) e_y + s/K``.
        * ``multi_label`` and the timm-only options (class weights, bce_*, asl_*, ...): a ValueError.

    Logit adjustment (not in timm): ``logit_adjust_tau=tau`` with ``class_counts`` (training images per class) wraps
    the single-label loss (``ce`` or an SP member) in ``LogitAdjustedLoss``: ``l(z + tau log(pi), y)``, ``pi`` the
    class prior; ``loss_type='ce', logit_adjust_tau=1`` is the balanced softmax.
    """
    call = dict(locals())
    call.pop('sp_kwargs')
    tau = call.pop('logit_adjust_tau')
    loss_type = call.pop('loss_type') or ('bce' if multi_label else 'ce')
    if tau is not None:
        return _create_logit_adjusted(loss_type, call, sp_kwargs, tau)
    if is_registered(loss_type):
        return _create_sp_loss(loss_type, call, sp_kwargs)
    if loss_type not in timm_loss_types():
        raise unknown_name_error(loss_type, list_losses())
    given = sorted(k for k, v in sp_kwargs.items() if v is not None)
    if given:
        raise ValueError(f"{given} apply to SP losses only, not to timm's '{loss_type}'.")
    timm_create = _timm_factory()
    if timm_create is not None:
        return timm_create(loss_type, **call)
    return _legacy_timm_loss(loss_type, call)


def _create_logit_adjusted(loss_type: str, call: dict, sp_kwargs: dict, tau: float) -> nn.Module:
    """``LogitAdjustedLoss`` around the single-label loss ``loss_type`` (ce or an SP member)."""
    from ._logit_adjust import LogitAdjustedLoss
    counts = call.pop('class_counts')
    if counts is None:
        raise ValueError('logit_adjust_tau needs class_counts: the training images of each class.')
    if call['multi_label'] or not (loss_type == 'ce' or is_registered(loss_type)):
        raise ValueError(f"logit adjustment works with single-label 'ce' and the SP losses, not with "
                         f"{'multi-label ' if call['multi_label'] else ''}'{loss_type}'.")
    base = create_classification_loss(loss_type, **call, **sp_kwargs)
    return LogitAdjustedLoss(base, counts, tau)


def _is_default(value: Any, default: Any) -> bool:
    if value is None or default is None or isinstance(value, torch.Tensor):
        return value is default
    return value == default


def _create_sp_loss(name: str, call: dict, sp_kwargs: dict) -> nn.Module:
    if call['multi_label']:
        raise ValueError(f"'{name}' is a single-label (softmax) loss; multi-label targets need one of "
                         f"timm's multi-label losses.")
    defaults = {n: p.default for n, p in inspect.signature(create_classification_loss).parameters.items()}
    timm_only = sorted(k for k, v in call.items()
                       if k not in ('smoothing', 'soft_targets', 'multi_label') and not _is_default(v, defaults[k]))
    if timm_only:
        raise ValueError(f"{timm_only} only apply to timm's losses, not to the SP loss '{name}'.")
    unprefixed = sorted(k for k in sp_kwargs if not k.startswith(SP_KWARG_PREFIX))
    if unprefixed:
        raise ValueError(f"Unknown argument(s) {unprefixed}: SP parameters take the '{SP_KWARG_PREFIX}' prefix "
                         f"(e.g. sp_pstar=0.9).")
    params = {k[len(SP_KWARG_PREFIX):]: v for k, v in sp_kwargs.items() if v is not None}
    smoothing = 0. if call['soft_targets'] else call['smoothing']
    return create_loss(name, smoothing=smoothing, **params)


def _legacy_timm_loss(loss_type: str, call: dict) -> nn.Module:
    """The loss timm's train.py (timm < 1.0.31) built for these flags."""
    from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if call['multi_label'] and loss_type != 'bce':
        raise ValueError(f"Loss type '{loss_type}' does not support multi-label targets, expected 'bce'.")
    if loss_type == 'jsd':
        if call['jsd_splits'] < 2:
            raise ValueError('JSD loss requires jsd_splits > 1 (augmentation splits).')
        return JsdCrossEntropy(num_splits=call['jsd_splits'], smoothing=call['smoothing'])
    smoothing = 0. if call['soft_targets'] else call['smoothing']
    if loss_type == 'bce':
        pos_weight = call['pos_weight']
        return BinaryCrossEntropy(
            smoothing=smoothing,
            target_threshold=call['bce_target_thresh'],
            sum_classes=call['bce_sum'],
            pos_weight=None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32),
        )
    if call['soft_targets']:
        return SoftTargetCrossEntropy()
    if smoothing:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()
