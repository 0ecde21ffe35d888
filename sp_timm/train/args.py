""" ``sp-timm train`` flags: timm ``train.py``'s names and meanings wherever they apply, plus the loss, dataset
and adversarial-training flags. ``--config FILE.yaml`` sets defaults (as in timm); flags given on the command
line win. """
import argparse
import math
from pathlib import Path
from typing import List, Optional, Sequence

import yaml

from ..data.split import parse_val_split
from ..threat.budget import check_eps
from ..threat.budget import parse_eps as parse_fraction

__all__ = ['build_train_parser', 'parse_train_args', 'parse_fraction', 'ADV_MODES', 'ADV_NORMS']

ADV_MODES = ('none', 'pgd', 'trades')
ADV_NORMS = ('Linf', 'L2')
AMP_DTYPES = ('float16', 'bfloat16')
DEFAULT_EMA_DECAY = 0.9998  # timm train.py's --model-ema-decay default


def build_train_parser() -> argparse.ArgumentParser:
    from ..data.flags import add_data_args
    from ..options import DefaultsHelpFormatter, add_debug_arg
    p = argparse.ArgumentParser(prog='sp-timm train', description='Train a timm model with an SP (or timm) loss on '
                                'one or many processes through Accelerate; standard or adversarial training.',
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument('-c', '--config', default='', metavar='FILE', help='YAML of flag defaults (keys: flag names with _)')
    g = p.add_argument_group('data')
    add_data_args(g)
    g.add_argument('--train-examples', type=int, default=None, help='train on N random training images (seed 0; smoke runs; default: all)')
    g.add_argument('--val-split', type=_val_split_flag, default=None, metavar='N|FRACTION|auto',
                   help='validation images carved from the training split, stratified by class (seed 0): a count, a '
                        'fraction, or auto = min(1000, 10%%); `best` and the per-epoch metrics use it. 0: validate on '
                        'the test split (the old behaviour, which lets model selection see test points). Default: auto')
    g.add_argument('--val-examples', type=int, default=None, help='validate on the first N validation images only (default: all)')
    g.add_argument('--no-aug', action='store_true', help='no random crop / flip (timm: --no-aug)')
    g = p.add_argument_group('model')
    g.add_argument('--model', default='resnet32_cifar', help='any timm model name (see sp_timm.models.CIFAR_MODELS)')
    g.add_argument('--num-classes', type=int, default=None, help='default: the dataset\'s')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=_ModelKwargs, help='extra create_model args k=v')
    g.add_argument('--drop', type=float, default=0.0, metavar='PCT', help='dropout before the classifier')
    g.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    g.add_argument('--sync-bn', action='store_true',
                   help="BatchNorm statistics over the global batch of all processes, through PyTorch's SyncBatchNorm "
                        "(timm: --sync-bn); with one process the batch is already global: nothing changes (logged)")
    g.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                   help='torch.compile the model with BACKEND (inductor when no BACKEND is given; default: off)')
    g = p.add_argument_group('loss')
    g.add_argument('--loss', default='sp_ls', help="a loss of sp_timm's factory: SP (sp-timm losses) or a timm loss type")
    g.add_argument('--sp-pstar', type=float, default=None, help="target probability p* of sp_ls, sp_ce, sp_focal (default: the loss's, see sp-timm losses)")
    g.add_argument('--sp-lam', type=float, default=None, help="logit penalty weight of sp_logit (default: the loss's)")
    g.add_argument('--sp-margin', type=float, default=None, help="margin of sp_margin (default: the loss's)")
    g.add_argument('--sp-gamma', type=float, default=None, help="focusing exponent of sp_focal (default: the loss's)")
    g.add_argument('--smoothing', type=float, default=0.0, help='label smoothing (timm: --smoothing)')
    g.add_argument('--class-weight', choices=('none', 'balanced', 'effective'), default='none',
                   help='per-class weights on every sample\'s loss (any SP loss, ce): balanced = inverse frequency '
                        'N/(K n_k); effective = Cui et al.\'s (1-beta)/(1-beta^n_k), normalised to sum K; counts of '
                        'the training images used')
    g.add_argument('--class-weight-beta', type=float, default=0.9999,
                   help='beta of --class-weight effective, in [0, 1)')
    g.add_argument('--drw-epoch', type=int, default=None, metavar='E',
                   help='deferred re-weighting (LDAM-DRW): --class-weight applies from epoch E + 1 on (after E '
                        'epochs), the plain loss before (default: from the start)')
    g.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (timm: --mixup)')
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (timm: --cutmix)')
    g.add_argument('--mixup-prob', type=float, default=1.0,
                   help='probability of mixing a batch when --mixup or --cutmix is on (timm: --mixup-prob)')
    g.add_argument('--mixup-switch-prob', type=float, default=0.5,
                   help='probability of cutmix instead of mixup when both are on (timm: --mixup-switch-prob)')
    g = p.add_argument_group('optimizer and schedule (timm factories)')
    g.add_argument('--opt', default='sgd', help="timm optimizer name (sgd is Nesterov in timm; 'momentum' is plain)")
    g.add_argument('--lr', type=float, default=0.1, help='learning rate: the peak of the schedule')
    g.add_argument('--momentum', type=float, default=0.9, help='SGD momentum')
    g.add_argument('--weight-decay', type=float, default=5e-4, help='weight decay of the optimizer')
    g.add_argument('--clip-grad', type=float, default=None,
                   help='clip the gradient norm at this value (timm: --clip-grad; default: no clipping); metrics.jsonl '
                        'then logs the norm before clipping (grad_norm_mean, grad_norm_max), clipped_pct (the %% of '
                        'steps it cut) and grad_nonfinite_pct (steps with an Inf / NaN norm)')
    g.add_argument('--sched', default='cosine', help='timm scheduler: cosine, step, multistep, plateau, ...')
    g.add_argument('--sched-on-updates', action='store_true', help='step the schedule every update, not every epoch')
    g.add_argument('--epochs', type=int, default=200, help='epochs to train')
    g.add_argument('--warmup-epochs', type=int, default=0, help='epochs of linear warmup from --warmup-lr')
    g.add_argument('--warmup-lr', type=float, default=1e-5, help='learning rate at the start of the warmup')
    g.add_argument('--min-lr', type=float, default=0.0, help='floor of the schedule (cosine: the final learning rate)')
    g.add_argument('--decay-epochs', type=float, default=90, help='epochs between decays (--sched step)')
    g.add_argument('--decay-milestones', type=int, nargs='+', default=[100, 150], metavar='EPOCH',
                   help='epochs at which the learning rate decays (--sched multistep)')
    g.add_argument('--decay-rate', type=float, default=0.1, help='factor of each decay (step, multistep)')
    g.add_argument('-b', '--batch-size', type=int, default=128,
                   help='images per process per step; the global batch is batch-size x number of processes')
    g = p.add_argument_group("weight EMA (timm's --model-ema flags, timm.utils.ModelEmaV3)")
    g.add_argument('--model-ema', action='store_true',
                   help='keep an exponential moving average of the weights (parameters and buffers): validated each '
                        'epoch (ema_val_*), `best` chosen on its metric, saved as model_ema.safetensors; sp-timm eval / '
                        'export use it unless --weights raw')
    g.add_argument('--model-ema-decay', type=float, default=DEFAULT_EMA_DECAY,
                   help='EMA decay d in [0, 1): after optimizer update t, ema <- d_t * ema + (1 - d_t) * weights with '
                        'd_t = d (d_1 = 0: the first update copies the weights; timm: --model-ema-decay)')
    g.add_argument('--model-ema-warmup', action='store_true',
                   help="timm's decay warmup: d_t = min(d, 1 - t^(-2/3)) at update t (reaches 0.999 after ~31.6k "
                        "updates; timm: --model-ema-warmup)")
    g = p.add_argument_group('adversarial training')
    g.add_argument('--adv', choices=ADV_MODES, default='none', help='PGD-AT (Madry et al.) or TRADES (Zhang et al.)')
    g.add_argument('--adv-eps', type=parse_fraction, default=8 / 255, help='perturbation budget in [0, 1] pixels, e.g. 8/255 (default: 8/255)')
    g.add_argument('--adv-steps', type=int, default=10, help='attack iterations per training batch')
    g.add_argument('--adv-step-size', type=parse_fraction, default=2 / 255,
                   help='attack step size in [0, 1] pixels (default: 2/255)')
    g.add_argument('--adv-norm', choices=ADV_NORMS, default='Linf', help="norm of the training attack's budget")
    g.add_argument('--adv-loss', choices=('ce', 'train'), default='ce',
                   help='the loss the inner maximisation ascends for PGD-AT: ce (cross-entropy) or train (the training loss)')
    g.add_argument('--trades-beta', type=float, default=6.0, help="weight of TRADES' robustness (KL) term")
    g.add_argument('--adv-val-examples', type=int, default=500, help='validation images attacked with PGD after each epoch')
    g = p.add_argument_group('run')
    g.add_argument('--amp', action='store_true', help='mixed precision through Accelerate')
    g.add_argument('--amp-dtype', choices=AMP_DTYPES, default='float16', help='float16 (GPU) or bfloat16')
    g.add_argument('--seed', type=int, default=42, help='seed of the initialisation, data order and augmentation')
    g.add_argument('--deterministic', action='store_true', help='torch.use_deterministic_algorithms(True)')
    g.add_argument('--output', default='', help='run folder (default: output/train/<time>-<model>-<loss>)')
    g.add_argument('--resume', default='', help='a checkpoint folder (OUTPUT/last) or a run folder to continue')
    g.add_argument('--resume-override', action='store_true',
                   help='resume with changed hyper-parameters (refused otherwise); run.json records the epochs run with '
                        'each value under args_history')
    g.add_argument('--log-interval', type=int, default=50, help='batches between progress-bar updates of the loss')
    g.add_argument('--no-progress', action='store_true', help='no progress bars')
    add_debug_arg(g)
    return p


class _ModelKwargs(argparse.Action):
    """timm's ``ParseKwargs`` (``key=value``, values through ``ast.literal_eval``), with a usage error instead of a
    traceback for an item without ``=``; timm is imported when the flag is used, so the parser builds without it."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if v and '=' not in v]
        if bad:
            parser.error(f"{option_string} takes key=value pairs (e.g. drop_path_rate=0.1), got {' '.join(bad)}.")
        from timm.utils import ParseKwargs
        ParseKwargs.__call__(self, parser, namespace, values, option_string)


def _val_split_flag(text: str):
    try:
        return parse_val_split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    config_path = Path(path)
    if not config_path.is_file():
        raise ValueError(f"--config '{path}' does not exist.")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"--config '{path}' is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"--config '{path}' must be a mapping of flag names to values.")
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in config if k.replace('-', '_') not in known)
    if unknown:
        raise ValueError(f"--config '{path}' has unknown keys {unknown}; keys are flag names, e.g. batch_size, adv_eps.")
    defaults = {k.replace('-', '_'): v for k, v in config.items()}
    if 'val_split' in defaults:
        defaults['val_split'] = parse_val_split(str(defaults['val_split']))
    for key in ('adv_eps', 'adv_step_size'):
        if isinstance(defaults.get(key), str):
            defaults[key] = parse_fraction(defaults[key])
    return defaults


def parse_train_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse like timm's train.py: ``--config`` first, its values become defaults, then the command line."""
    parser = build_train_parser()
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    config_args, _ = config_parser.parse_known_args(argv)
    if config_args.config:
        try:
            defaults = _config_defaults(parser, config_args.config)
        except ValueError as err:
            parser.error(str(err))
        parser.set_defaults(**defaults)
        for action in parser._actions:  # a required flag the config sets (e.g. dataset) is no longer required
            if action.dest in defaults:
                action.required = False
    args = parser.parse_args(argv)
    problems = check_train_args(args)
    if problems:
        parser.error(' '.join(problems))
    return args


def check_train_args(args: argparse.Namespace) -> List[str]:
    """Values argparse cannot check alone, each as a sentence that names the fix."""
    problems = []
    if args.epochs < 1:
        problems.append(f'--epochs must be >= 1, got {args.epochs}.')
    if args.batch_size < 1:
        problems.append(f'--batch-size must be >= 1, got {args.batch_size}.')
    if args.lr <= 0:
        problems.append(f'--lr must be > 0, got {args.lr}.')
    if (args.mixup > 0 or args.cutmix > 0) and args.batch_size % 2:
        problems.append(f'--mixup/--cutmix need an even --batch-size, got {args.batch_size}.')
    if args.adv != 'none':
        if (args.mixup > 0 or args.cutmix > 0):
            problems.append('--mixup/--cutmix cannot be combined with --adv (the attack needs hard labels).')
        if args.adv_eps <= 0 or args.adv_step_size <= 0 or args.adv_steps < 1:
            problems.append('--adv-eps and --adv-step-size must be > 0 and --adv-steps >= 1.')
        elif args.adv_eps > 0:  # the bound sp-timm eval applies (Linf <= 1, L2 <= sqrt(image size))
            try:
                check_eps(args.adv_eps, args.adv_norm, _image_numel(args.dataset))
            except ValueError as err:
                problems.append(f'--adv-eps: {err}')
    if not 0 <= args.class_weight_beta < 1:
        problems.append(f'--class-weight-beta must be in [0, 1), got {args.class_weight_beta}.')
    if args.drw_epoch is not None:
        if args.class_weight == 'none':
            problems.append('--drw-epoch defers class weights: give --class-weight balanced or effective too.')
        elif not 1 <= args.drw_epoch < args.epochs:
            problems.append(f'--drw-epoch must be in [1, --epochs - 1] = [1, {args.epochs - 1}] (the weights switch on '
                            f'after that many epochs), got {args.drw_epoch}.')
    if not 0 <= args.model_ema_decay < 1:
        problems.append(f'--model-ema-decay must be in [0, 1) (timm\'s default {DEFAULT_EMA_DECAY}; 0.999 averages over '
                        f'about 1000 updates), got {args.model_ema_decay}.')
    if not 0 <= args.smoothing < 1:
        problems.append(f'--smoothing must be in [0, 1), got {args.smoothing}.')
    for flag in ('train_examples', 'val_examples'):
        value = getattr(args, flag)
        if value is not None and value < 1:
            problems.append(f"--{flag.replace('_', '-')} must be >= 1, got {value}.")
    if args.num_classes is not None and args.num_classes < 2:
        problems.append(f'--num-classes must be >= 2 (default: the dataset\'s), got {args.num_classes}.')
    for flag in ('mixup', 'cutmix'):
        if getattr(args, flag) < 0:
            problems.append(f'--{flag} is an alpha >= 0 (0: off), got {getattr(args, flag)}.')
    for flag in ('mixup_prob', 'mixup_switch_prob'):
        if not 0 <= getattr(args, flag) <= 1:
            problems.append(f"--{flag.replace('_', '-')} is a probability in [0, 1], got {getattr(args, flag)}.")
    problems += _path_and_model_problems(args)
    return problems


def _image_numel(dataset: Optional[str]) -> int:
    from ..data import dataset_spec
    try:
        return math.prod(dataset_spec(dataset).image_shape)
    except ValueError:  # an unknown dataset is reported by the data loader
        return 3 * 32 * 32


def _path_and_model_problems(args: argparse.Namespace) -> List[str]:
    """--output a writable folder (not a file), --model-kwargs arguments the model takes and no file names."""
    import timm
    from ..files import check_output_folder
    from ..model_source import check_model_args
    problems = []
    checks = []
    if args.output:
        checks.append(lambda: check_output_folder(args.output, '--output'))
    if args.model_kwargs and timm.is_model(args.model):
        checks.append(lambda: check_model_args(args.model, dict(args.model_kwargs), '--model-kwargs'))
    for check in checks:
        try:
            check()
        except ValueError as err:
            problems.append(str(err))
    return problems
