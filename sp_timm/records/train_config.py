""" ``TrainConfig``: everything ``sp-timm train`` is told, one typed object. Each field is a flag (timm ``train.py``'s
names and meanings wherever they apply, plus the loss, dataset and adversarial-training flags): the command line is
generated from these fields (``options.add_options``) and the run record stores the config as they are, so a
default is written once. ``problems()`` checks what a value alone can tell; ``sp_timm.train.check_train_config``
adds the checks that need the machine (a writable ``--output``, ``--model-kwargs`` the model accepts). """
import argparse
import math
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple, Union

from ..data.flags import DATA_DIR_HELP, IMBALANCE_PROFILE_HELP, IMBALANCE_RATIO_HELP, dataset_help, dataset_names
from ..data.split import parse_val_split
from ..options import DEBUG_ENV, non_finite_options, option
from ..threat.budget import check_eps, parse_eps

__all__ = ['TrainConfig', 'ADV_MODES', 'ADV_NORMS', 'AMP_DTYPES', 'DEFAULT_EMA_DECAY', 'CLASS_WEIGHT_MODES',
           'TIMM_DEFAULTS',
           'SP_PARAMETERS']

ADV_MODES = ('none', 'pgd', 'trades')
ADV_NORMS = ('Linf', 'L2')
AMP_DTYPES = ('float16', 'bfloat16')
CLASS_WEIGHT_MODES = ('none', 'balanced', 'effective')
DEFAULT_EMA_DECAY = 0.9998  # timm train.py's --model-ema-decay default
SP_PARAMETERS = ('pstar', 'lam', 'margin', 'gamma')  # --sp-<name>: the SP members' parameters
ValSplit = Union[int, float, None]

DATA, MODEL, LOSS = 'data', 'model', 'loss'
OPTIM = 'optimizer and schedule (timm factories)'
EMA = "weight EMA (timm's --model-ema flags, timm.utils.ModelEmaV3)"
ADV = 'adversarial training'
RUN = 'run'


class ModelKwargs(argparse.Action):
    """timm's ``ParseKwargs`` (``key=value``, values through ``ast.literal_eval``), with a usage error instead of a
    traceback for an item without ``=``; timm is imported when the flag is used, so the parser builds without it."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if v and '=' not in v]
        if bad:
            parser.error(f"{option_string} takes key=value pairs (e.g. drop_path_rate=0.1), got {' '.join(bad)}.")
        from timm.utils import ParseKwargs
        ParseKwargs.__call__(self, parser, namespace, values, option_string)


# flags whose default is not timm train.py's: timm's default and why sp-timm's differs (in --help and the docs)
TIMM_DEFAULTS: Dict[str, Tuple[str, str]] = {
    'smoothing': ('0.1', 'label smoothing can mask gradients in robustness evaluations; the study tests it as a '
                         'baseline of its own'),
    'lr': ('none: --lr-base 0.1 x global batch / 256', 'CIFAR recipes state the peak rate; sp-timm has no --lr-base'),
    'weight_decay': ('2e-5', "the CIFAR robust-training value (Madry et al., Rice et al.); timm's is for ImageNet"),
    'epochs': ('300', 'the usual CIFAR schedule'),
    'warmup_epochs': ('5', 'CIFAR adversarial training recipes start at the peak rate'),
    'decay_milestones': ('90 180 270', "CIFAR's multistep schedule (200 epochs)"),
}


def _vs_timm(name: str, text: str) -> str:
    """``text`` with timm train.py's default of flag ``name`` and the reason sp-timm's differs."""
    timm_default, why = TIMM_DEFAULTS[name]
    return f"{text} [timm's train.py: {timm_default}; here: {why}]"


def _default(name: str) -> Any:
    """The default of ``TrainConfig`` field ``name``."""
    return TrainConfig.__dataclass_fields__[name].default


def val_split_flag(text: str) -> ValSplit:
    """``--val-split``'s argparse type: ``parse_val_split`` with argparse's usage error."""
    try:
        return parse_val_split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@dataclass
class TrainConfig:
    """The configuration of one training run (see the module docstring); ``TrainConfig(dataset='digits')`` is a
    complete one, every other field has timm's or sp-timm's default."""
    config: str = option('', 'YAML of flag defaults (keys: flag names with _)', flags=('-c', '--config'),
                         metavar='FILE')
    dataset: Optional[str] = option(None, dataset_help(True), group=DATA, required=True, choices=dataset_names,
                                    metavar='NAME')
    data_dir: Optional[str] = option(None, DATA_DIR_HELP, group=DATA)
    imbalance_ratio: float = option(100.0, IMBALANCE_RATIO_HELP, group=DATA, type=float)
    imbalance_profile: str = option('exp', IMBALANCE_PROFILE_HELP, group=DATA, choices=('exp', 'step'))
    train_examples: Optional[int] = option(
        None, 'train on N random training images (seed 0; smoke runs; default: all)', group=DATA, type=int)
    val_split: ValSplit = option(
        None, 'validation images carved from the training split, stratified by class (seed 0): a count, a fraction, '
              'or auto = min(1000, 10%%); `best` and the per-epoch metrics use it. 0: validate on the test split (the '
              'old behaviour, which lets model selection see test points). Default: auto',
        group=DATA, type=val_split_flag, metavar='N|FRACTION|auto')
    val_examples: Optional[int] = option(None, 'validate on the first N validation images only (default: all)',
                                         group=DATA, type=int)
    no_aug: bool = option(False, 'no random crop / flip (timm: --no-aug)', group=DATA, action='store_true')
    model: str = option('resnet32_cifar', 'any timm model name (see sp_timm.models.CIFAR_MODELS)', group=MODEL)
    num_classes: Optional[int] = option(None, "default: the dataset's", group=MODEL, type=int)
    model_kwargs: Dict[str, Any] = option({}, 'extra create_model args k=v', group=MODEL, nargs='*', action=ModelKwargs)
    drop: float = option(0.0, 'dropout before the classifier', group=MODEL, type=float, metavar='PCT')
    channels_last: bool = option(False, 'channels_last memory format', group=MODEL, action='store_true')
    sync_bn: bool = option(
        False, "BatchNorm statistics over the global batch of all processes, through PyTorch's SyncBatchNorm (timm: "
               "--sync-bn); with one process the batch is already global: nothing changes (logged)",
        group=MODEL, action='store_true')
    torchcompile: Optional[str] = option(
        None, 'torch.compile the model with BACKEND (inductor when no BACKEND is given; default: off)', group=MODEL,
        nargs='?', const='inductor', metavar='BACKEND')
    loss: str = option('sp_ls', "a loss of sp_timm's factory: SP (sp-timm losses) or a timm loss type", group=LOSS)
    sp_pstar: Optional[float] = option(
        None, "target probability p* of sp_ls, sp_ce, sp_focal (default: the loss's, see sp-timm losses)", group=LOSS,
        type=float)
    sp_lam: Optional[float] = option(None, "logit penalty weight of sp_logit (default: the loss's)", group=LOSS,
                                     type=float)
    sp_margin: Optional[float] = option(None, "margin of sp_margin (default: the loss's)", group=LOSS, type=float)
    sp_gamma: Optional[float] = option(None, "focusing exponent of sp_focal (default: the loss's)", group=LOSS,
                                       type=float)
    smoothing: float = option(0.0, _vs_timm('smoothing', 'label smoothing (timm: --smoothing)'), group=LOSS,
                              type=float)
    class_weight: str = option(
        'none', "per-class weights on every sample's loss (any SP loss, ce): balanced = inverse frequency N/(K n_k); "
                "effective = Cui et al.'s (1-beta)/(1-beta^n_k), normalised to sum K; counts of the training images "
                "used",
        group=LOSS, choices=CLASS_WEIGHT_MODES)
    class_weight_beta: float = option(0.9999, 'beta of --class-weight effective, in [0, 1)', group=LOSS, type=float)
    drw_epoch: Optional[int] = option(
        None, 'deferred re-weighting (LDAM-DRW): --class-weight applies from epoch E + 1 on (after E epochs), the '
              'plain loss before (default: from the start)', group=LOSS, type=int, metavar='E')
    logit_adjust: Optional[float] = option(
        None, "logit adjustment (Menon et al.) of ce or any SP loss: the loss of z + TAU log(prior), the prior from "
              "the training images used per class; --loss ce --logit-adjust 1 is the balanced softmax (Ren et al., "
              "AT-BSL). Training only: the model stays the plain network (default: off)", group=LOSS, type=float,
        metavar='TAU')
    mixup: float = option(0.0, 'mixup alpha (timm: --mixup)', group=LOSS, type=float)
    cutmix: float = option(0.0, 'cutmix alpha (timm: --cutmix)', group=LOSS, type=float)
    mixup_prob: float = option(1.0, 'probability of mixing a batch when --mixup or --cutmix is on (timm: --mixup-prob)',
                               group=LOSS, type=float)
    mixup_switch_prob: float = option(
        0.5, 'probability of cutmix instead of mixup when both are on (timm: --mixup-switch-prob)', group=LOSS,
        type=float)
    opt: str = option('sgd', "timm optimizer name (sgd is Nesterov in timm; 'momentum' is plain)", group=OPTIM)
    lr: float = option(0.1, _vs_timm('lr', 'learning rate: the peak of the schedule'), group=OPTIM, type=float)
    momentum: float = option(0.9, 'SGD momentum', group=OPTIM, type=float)
    weight_decay: float = option(5e-4, _vs_timm('weight_decay', 'weight decay of the optimizer'), group=OPTIM,
                                 type=float)
    clip_grad: Optional[float] = option(
        None, 'clip the gradient norm at this value (timm: --clip-grad; default: no clipping); metrics.jsonl then logs '
              'the norm before clipping (grad_norm_mean, grad_norm_max), clipped_pct (the %% of steps it cut) and '
              'grad_nonfinite_pct (steps with an Inf / NaN norm)', group=OPTIM, type=float)
    sched: str = option('cosine', 'timm scheduler: cosine, step, multistep, plateau, ...', group=OPTIM)
    sched_on_updates: bool = option(False, 'step the schedule every update, not every epoch', group=OPTIM,
                                    action='store_true')
    epochs: int = option(200, _vs_timm('epochs', 'epochs to train'), group=OPTIM, type=int)
    warmup_epochs: int = option(0, _vs_timm('warmup_epochs', 'epochs of linear warmup from --warmup-lr'), group=OPTIM,
                                type=int)
    warmup_lr: float = option(1e-5, 'learning rate at the start of the warmup', group=OPTIM, type=float)
    min_lr: float = option(0.0, 'floor of the schedule (cosine: the final learning rate)', group=OPTIM, type=float)
    decay_epochs: float = option(90, 'epochs between decays (--sched step)', group=OPTIM, type=float)
    decay_milestones: List[int] = option([100, 150], _vs_timm('decay_milestones', 'epochs at which the learning rate '
                                                                                  'decays (--sched multistep)'),
                                         group=OPTIM, type=int, nargs='+', metavar='EPOCH')
    decay_rate: float = option(0.1, 'factor of each decay (step, multistep)', group=OPTIM, type=float)
    batch_size: int = option(128, 'images per process per step; the global batch is batch-size x number of processes',
                             group=OPTIM, type=int, flags=('-b', '--batch-size'))
    model_ema: bool = option(
        False, 'keep an exponential moving average of the weights (parameters and buffers): validated each epoch '
               '(ema_val_*), `best` chosen on its metric, saved as model_ema.safetensors; sp-timm eval / export use it '
               'unless --weights raw', group=EMA, action='store_true')
    model_ema_decay: float = option(
        DEFAULT_EMA_DECAY, 'EMA decay d in [0, 1): after optimizer update t, ema <- d_t * ema + (1 - d_t) * weights '
                           'with d_t = d (d_1 = 0: the first update copies the weights; timm: --model-ema-decay)',
        group=EMA, type=float)
    model_ema_warmup: bool = option(
        False, "timm's decay warmup: d_t = min(d, 1 - t^(-2/3)) at update t (reaches 0.999 after ~31.6k updates; timm: "
               "--model-ema-warmup)", group=EMA, action='store_true')
    adv: str = option('none', 'PGD-AT (Madry et al.) or TRADES (Zhang et al.)', group=ADV, choices=ADV_MODES)
    adv_eps: float = option(8 / 255, 'perturbation budget in [0, 1] pixels, e.g. 8/255 (default: 8/255)', group=ADV,
                            type=parse_eps)
    adv_steps: int = option(10, 'attack iterations per training batch', group=ADV, type=int)
    adv_step_size: float = option(2 / 255, 'attack step size in [0, 1] pixels (default: 2/255)', group=ADV,
                                  type=parse_eps)
    adv_norm: str = option('Linf', "norm of the training attack's budget", group=ADV, choices=ADV_NORMS)
    adv_loss: str = option(
        'ce', 'the loss the inner maximisation ascends for PGD-AT: ce (cross-entropy) or train (the training loss)',
        group=ADV, choices=('ce', 'train'))
    trades_beta: float = option(6.0, "weight of TRADES' robustness (KL) term", group=ADV, type=float)
    adv_val_examples: int = option(500, 'validation images attacked with PGD after each epoch', group=ADV, type=int)
    amp: bool = option(False, 'mixed precision through Accelerate', group=RUN, action='store_true')
    amp_dtype: str = option('float16', 'float16 (GPU) or bfloat16', group=RUN, choices=AMP_DTYPES)
    seed: int = option(42, 'seed of the initialisation, data order and augmentation', group=RUN, type=int)
    deterministic: bool = option(False, 'torch.use_deterministic_algorithms(True)', group=RUN, action='store_true')
    output: str = option('', 'run folder (default: output/train/<time>-<model>-<loss>)', group=RUN)
    resume: str = option('', 'a checkpoint folder (OUTPUT/last) or a run folder to continue', group=RUN)
    resume_override: bool = option(
        False, 'resume with changed hyper-parameters (refused otherwise); run.json records the epochs run with each '
               'value under args_history', group=RUN, action='store_true')
    log_interval: int = option(50, 'batches between progress-bar updates of the loss', group=RUN, type=int)
    no_progress: bool = option(False, 'no progress bars', group=RUN, action='store_true')
    debug: bool = option(False, f'show the full traceback of an error (also: {DEBUG_ENV}=1)', group=RUN,
                         action='store_true')

    def _logit_adjust_problems(self) -> List[str]:
        problems = []
        if self.logit_adjust < 0:
            problems.append(f'--logit-adjust is a scale tau >= 0 of log(prior) (1: balanced softmax), got '
                            f'{self.logit_adjust}.')
        if self.class_weight != 'none':
            problems.append('--logit-adjust and --class-weight both re-balance the classes: give one of them.')
        if not (self.loss == 'ce' or self.loss.startswith('sp_')):
            problems.append(f"--logit-adjust works with --loss ce and the SP losses, not with '{self.loss}'.")
        return problems

    def sp_kwargs(self) -> Dict[str, Optional[float]]:
        """The ``--sp-*`` values as ``create_classification_loss``'s ``sp_``-prefixed arguments (None: the default)."""
        return {f'sp_{name}': getattr(self, f'sp_{name}') for name in SP_PARAMETERS}

    def to_json(self) -> Dict[str, Any]:
        """Every field in order, as JSON values (lists, not tuples), as the run record stores them."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def problems(self) -> List[str]:
        """Values that cannot work together or at all, each as a sentence that names the fix (nothing that needs the
        machine or timm: see ``sp_timm.train.check_train_config``)."""
        problems = non_finite_options(self)
        if problems:  # a NaN passes every comparison below
            return problems
        if self.epochs < 1:
            problems.append(f'--epochs must be >= 1, got {self.epochs}.')
        if self.batch_size < 1:
            problems.append(f'--batch-size must be >= 1, got {self.batch_size}.')
        if self.lr <= 0:
            problems.append(f'--lr must be > 0, got {self.lr}.')
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            problems.append(f'--mixup/--cutmix need an even --batch-size, got {self.batch_size}.')
        if self.adv != 'none':
            problems += self._adversarial_problems()
        if not 0 <= self.class_weight_beta < 1:
            problems.append(f'--class-weight-beta must be in [0, 1), got {self.class_weight_beta}.')
        elif self.class_weight != 'effective' and self.class_weight_beta != _default('class_weight_beta'):
            problems.append(f'--class-weight-beta {self.class_weight_beta:g} applies to --class-weight effective '
                            f'only; add --class-weight effective or leave --class-weight-beta out.')
        if self.adv_val_examples < 0:
            problems.append(f'--adv-val-examples must be >= 0 (0: no PGD validation, `best` on clean accuracy), got '
                            f'{self.adv_val_examples}.')
        if self.drw_epoch is not None:
            if self.class_weight == 'none':
                problems.append('--drw-epoch defers class weights: give --class-weight balanced or effective too.')
            elif not 1 <= self.drw_epoch < self.epochs:
                problems.append(f'--drw-epoch must be in [1, --epochs - 1] = [1, {self.epochs - 1}] (the weights '
                                f'switch on after that many epochs), got {self.drw_epoch}.')
        if self.logit_adjust is not None:
            problems += self._logit_adjust_problems()
        if not 0 <= self.model_ema_decay < 1:
            problems.append(f"--model-ema-decay must be in [0, 1) (timm's default {DEFAULT_EMA_DECAY}; 0.999 averages "
                            f"over about 1000 updates), got {self.model_ema_decay}.")
        if not 0 <= self.smoothing < 1:
            problems.append(f'--smoothing must be in [0, 1), got {self.smoothing}.')
        for flag in ('train_examples', 'val_examples'):
            value = getattr(self, flag)
            if value is not None and value < 1:
                problems.append(f"--{flag.replace('_', '-')} must be >= 1, got {value}.")
        if self.num_classes is not None and self.num_classes < 2:
            problems.append(f"--num-classes must be >= 2 (default: the dataset's), got {self.num_classes}.")
        for flag in ('mixup', 'cutmix'):
            if getattr(self, flag) < 0:
                problems.append(f'--{flag} is an alpha >= 0 (0: off), got {getattr(self, flag)}.')
        for flag in ('mixup_prob', 'mixup_switch_prob'):
            if not 0 <= getattr(self, flag) <= 1:
                problems.append(f"--{flag.replace('_', '-')} is a probability in [0, 1], got {getattr(self, flag)}.")
        return problems

    def _adversarial_problems(self) -> List[str]:
        problems = []
        if self.mixup > 0 or self.cutmix > 0:
            problems.append('--mixup/--cutmix cannot be combined with --adv (the attack needs hard labels).')
        if self.adv_eps <= 0 or self.adv_step_size <= 0 or self.adv_steps < 1:
            problems.append('--adv-eps and --adv-step-size must be > 0 and --adv-steps >= 1.')
            return problems
        try:  # the bound sp-timm eval applies (Linf <= 1, L2 <= sqrt(image size))
            check_eps(self.adv_eps, self.adv_norm, _image_numel(self.dataset))
        except ValueError as err:
            problems.append(f'--adv-eps: {err}')
        return problems


def _image_numel(dataset: Optional[str]) -> int:
    from ..data.sources import dataset_spec
    try:
        return math.prod(dataset_spec(dataset).image_shape)
    except ValueError:  # an unknown dataset is reported by the data loader
        return 3 * 32 * 32
