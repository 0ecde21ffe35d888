""" The training loop: one plain loop through Accelerate (devices, DDP over gloo or NCCL, mixed precision,
several machines), timm's model / optimizer / scheduler factories, sp_timm's loss factory, the in-memory
``TensorLoader`` sharded by process, PGD-AT or TRADES, and checkpoints that resume exactly.

Reproducibility: every epoch reseeds torch / numpy / random from (seed, epoch, process index), and the data
order and augmentation of an epoch depend only on (seed, epoch), so a run resumed from the checkpoint of
epoch e replays epoch e + 1 exactly as the uninterrupted run did.

Weight EMA (``--model-ema``, timm's ``ModelEmaV3`` as timm's train.py uses it): after optimizer update t (counted
over the whole run, so a resumed run continues the count), every floating-point entry of the state dict
(parameters and BatchNorm statistics) is updated as ``ema <- d_t * ema + (1 - d_t) * w`` (integer buffers are
copied), with ``d_t = 0`` at t = 1 (the first update copies the weights) and ``d_t = d`` (``--model-ema-decay``)
afterwards, or with ``--model-ema-warmup`` ``d_t = min(d, 1 - t^(-2/3))``. The EMA weights are validated after every
epoch (``ema_val_*``) and, as in timm's train.py, their metric picks ``best`` and drives a plateau schedule.
"""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import EMA_FILE, load_ema_state, load_training_state, read_run_record, save_checkpoint
from ..data import ImageData, TensorLoader, carve_validation, create_dataset, create_mixup
from ..errors import CheckpointError, Interrupted
from ..losses import ClassWeightedLoss, LogitAdjustedLoss, SPLoss, class_weights, create_classification_loss
from ..records import (CLASS_WEIGHT_REDUCTION, ClassWeighting, FlagChange, LogitAdjustment, ModelEma, ReductionChange,
                       TrainConfig, ValidationSplit)
from ..threat.pgd import pgd_attack, trades_attack, trades_kl
from .metrics import GRAD_STATS, METRICS_FILE, accumulate_grad_norm, accuracy_stats, grad_norm_metrics, write_metrics
from .config import check_train_config
from .record import RunSetup, build_run_record, model_args_for
from .resume import SCHEDULE_ARGS, args_history, changed_args, prepare_output, resume_hint, run_folder
from .sync_batchnorm import convert_sync_batchnorm

__all__ = ['Trainer', 'train', 'reseed']



class RunData(NamedTuple):
    """The images a run trains and validates on, and what the run record says of them."""
    train: ImageData
    val: ImageData
    split_counts: List[int]  # per class, of the whole training split (before validation and subsets)
    num_classes: int
    validation: ValidationSplit


@dataclass
class ResumeHistory:
    """What a resume adds to the run record: the earlier values of changed flags, the earlier batch losses."""
    flags: Optional[List[FlagChange]] = None
    reductions: Optional[List[ReductionChange]] = None


def check_model_name(name: str) -> None:
    import difflib
    import timm
    from timm.models import parse_model_name
    source, model_id = parse_model_name(name)
    if source is None and not timm.is_model(model_id):
        close = difflib.get_close_matches(model_id, timm.list_models(), n=3)
        raise ValueError(f"Unknown model '{name}'" + (f"; did you mean {', '.join(close)}?" if close else '.')
                         + " List them with timm.list_models('*cifar*') (sp-timm's CIFAR networks) or "
                           "timm.list_models().")


def reseed(seed: int, epoch: int, process_index: int) -> None:
    import random
    import numpy as np
    value = (seed * 1_000_003 + epoch * 7_919 + process_index) % (2 ** 31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class Trainer:
    """One training run as ``config`` says: the data, model, loss, optimizer, schedule and EMA built once, then
    ``run()`` trains epoch after epoch (``train_epoch``, ``evaluate``, ``save``). The run record is built once,
    complete, when everything it describes is known (``self.record``)."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator, PartialState
        from accelerate.utils import broadcast_object_list, parse_flag_from_env
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        self.config = config
        check_model_name(config.model)
        self.loss_fn = create_classification_loss(config.loss, smoothing=config.smoothing,
                                                  soft_targets=config.mixup > 0 or config.cutmix > 0,
                                                  **config.sp_kwargs())
        # without --amp the launcher's config (accelerate launch --mixed_precision) decides, as in Accelerate
        mixed = {'float16': 'fp16', 'bfloat16': 'bf16'}[config.amp_dtype] if config.amp else None
        if mixed == 'fp16' and not torch.cuda.is_available():
            raise ValueError('--amp with float16 needs a GPU; on CPU use --amp --amp-dtype bfloat16.')
        # starts the process group (CPU processes need ACCELERATE_USE_CPU, as in Accelerate), so the run folder can
        # be broadcast before anything is written
        PartialState(cpu=parse_flag_from_env('ACCELERATE_USE_CPU'))
        output, self.resume_from = prepare_output(config)
        self.output = Path(broadcast_object_list([str(output)])[0])
        self.accelerator = accelerator = Accelerator(mixed_precision=mixed, log_with=default_trackers(),
                                                     project_dir=self.output)
        self.main = accelerator.is_main_process
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = not config.deterministic  # as timm's train.py: autotuned convolutions

        data = self._load_data()
        self.mixup = create_mixup(data.num_classes, config.mixup, config.cutmix, config.smoothing, config.mixup_prob,
                                  config.mixup_switch_prob)
        self.eval_loss = nn.CrossEntropyLoss()
        model_args = model_args_for(config, data.train, data.num_classes)
        self.model = model = self._create_model(model_args)
        member = self.loss_fn  # the run record keeps the SP member's parameters, not the class-weight wrapper's
        adjustment = None
        if config.logit_adjust is not None:
            self.loss_fn, adjustment = self._logit_adjusted_loss(data.train, data.num_classes)
        self.class_weighting, weighting = None, None
        if config.class_weight != 'none':
            self.class_weighting, weighting = self._class_weighting(data.train, data.num_classes)
            self.loss_fn = self.class_weighting
        self._create_loaders(data)
        optimizer = create_optimizer_v2(model, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay,
                                        momentum=config.momentum)
        self.scheduler, self.num_epochs = create_scheduler_v2(
            optimizer, sched=config.sched, num_epochs=config.epochs, decay_epochs=config.decay_epochs,
            decay_milestones=config.decay_milestones, decay_rate=config.decay_rate, min_lr=config.min_lr,
            warmup_lr=config.warmup_lr, warmup_epochs=config.warmup_epochs, step_on_epochs=not config.sched_on_updates,
            updates_per_epoch=len(self.train_loader))
        self.model_ema = self.ema_eval_model = ema_record = None
        if config.model_ema:  # as timm: on the device, before the DDP wrapper (and Accelerate's hooks)
            self.model_ema, ema_record = self._create_model_ema(model.to(accelerator.device))
            self.ema_eval_model = self.model_ema.module
        self.ddp_model, self.optimizer = accelerator.prepare(model, optimizer)
        self.attack_model = model  # unwrapped: attacks need no gradient synchronisation
        if config.torchcompile:
            self._compile()
        self.start_epoch, self.best_metric, self.num_updates = 0, None, 0
        history = self._load(self.resume_from) if self.resume_from is not None else ResumeHistory()
        if weighting is not None and history.reductions:
            weighting.reduction_history = history.reductions
        self.record = build_run_record(config, model_args, data.train, member, RunSetup(
            num_processes=accelerator.num_processes, split_counts=data.split_counts,
            mixed_precision=accelerator.mixed_precision, validation=data.validation, class_weight=weighting,
            logit_adjustment=adjustment, model_ema=ema_record, args_history=history.flags))
        if self.main:
            accelerator.init_trackers('sp-timm', config={k: v for k, v in config.to_json().items()
                                                           if isinstance(v, (int, float, str, bool))})

    def _load_data(self) -> 'RunData':
        """The training and validation images (``--val-split``, ``--train-examples``, ``--val-examples``) and the
        number of classes."""
        config = self.config
        def load(split):
            return create_dataset(config.dataset, split, config.data_dir, config.imbalance_ratio,
                                                    config.imbalance_profile)
        full_train = load('train')
        split_counts = full_train.class_counts()
        train_data, val_data, val_record = carve_validation(full_train, config.val_split)
        if val_data is None:
            val_data = load('test')
            if self.main:
                print('sp-timm train: --val-split 0: validating and choosing `best` on the TEST split (the old '
                      'behaviour); sp-timm eval will then report on points that chose the model.')
        if config.train_examples and config.train_examples > len(train_data):
            raise ValueError(f'--train-examples {config.train_examples} exceeds the {len(train_data)} training '
                             f'images of {config.dataset} (after the validation split); omit it to train on all of '
                             f'them.')
        if config.train_examples and config.train_examples < len(train_data):  # random: -lt splits are class-sorted
            keep = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(0))[:config.train_examples]
            train_data = train_data.subset(keep.sort().values, f'{config.train_examples} random (seed 0)')
        if config.val_examples and config.val_examples > len(val_data):
            raise ValueError(f'--val-examples {config.val_examples} exceeds the {len(val_data)} validation images '
                             f'({val_record["source"]}); omit it to validate on all of them.')
        if config.val_examples:
            val_data = val_data.subset(range(config.val_examples), f'first {config.val_examples}')
        num_classes = config.num_classes or train_data.num_classes
        if num_classes < train_data.num_classes:
            raise ValueError(f'--num-classes {num_classes} is smaller than the {train_data.num_classes} classes of '
                             f'{config.dataset}.')
        validation = ValidationSplit(**dict(val_record, used=len(val_data)))
        return RunData(train_data, val_data, split_counts, num_classes, validation)

    def _create_model(self, model_args: Dict[str, Any]) -> nn.Module:
        import timm
        from accelerate.utils import set_seed
        set_seed(self.config.seed)
        model = timm.create_model(self.config.model, **model_args)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return self._sync_batchnorm(model) if self.config.sync_bn else model

    def _create_loaders(self, data: 'RunData') -> None:
        config, accelerator = self.config, self.accelerator
        shards = dict(num_shards=accelerator.num_processes, shard_index=accelerator.process_index,
                      device=accelerator.device, seed=config.seed)
        self.train_loader = TensorLoader(data.train, config.batch_size, shuffle=True, augment=not config.no_aug,
                                         drop_last=True, even_shards=True, **shards)
        self.val_loader = TensorLoader(data.val, config.batch_size, even_shards=False, **shards)
        if len(self.train_loader) == 0:
            raise ValueError(f'{len(data.train)} training images give no full batch of {config.batch_size} '
                             f'per process.')
        adv_count = min(config.adv_val_examples, len(data.val))
        attacked = config.adv != 'none' and adv_count > 0
        self.adv_val_loader = (TensorLoader(data.val.subset(range(adv_count), f'first {adv_count}'), config.batch_size,
                                            even_shards=False, **shards) if attacked else None)

    def _compile(self) -> None:
        """--torchcompile: the model (training and attack calls), the EMA copy and the loss."""
        backend, model = self.config.torchcompile, self.attack_model
        self.ddp_model = torch.compile(self.ddp_model, backend=backend)
        self.attack_model = torch.compile(model, backend=backend)
        if self.model_ema is not None:  # as timm's train.py: the EMA copy is compiled for its validation
            self.ema_eval_model = torch.compile(self.model_ema.module, backend=backend)
        member = getattr(self.loss_fn, 'base', self.loss_fn)  # the member inside --class-weight's wrapper
        if isinstance(member, SPLoss):
            member.compile_backend = backend
        elif self.class_weighting is None:  # the wrapper's on/off switch (--drw-epoch) stays in Python
            self.loss_fn = torch.compile(self.loss_fn, backend=backend)

    def _logit_adjusted_loss(self, train_data: ImageData, num_classes: int) -> Tuple[nn.Module, LogitAdjustment]:
        """--logit-adjust: the training loss on ``z + tau log(prior)``, the prior from the per-class counts of the
        training images used (after --val-split and --train-examples). Returns the loss and its record."""
        config = self.config
        counts = _class_counts(train_data, num_classes)
        loss = LogitAdjustedLoss(self.loss_fn, counts, config.logit_adjust).to(self.accelerator.device)
        shift = [round(v, 6) for v in loss.shift.tolist()]
        record = LogitAdjustment(tau=config.logit_adjust, class_counts=counts, shift=shift,
                                 meaning='the training loss of z + shift, shift = tau * log(n_k / N); the model '
                                         'outputs z')
        if self.main:
            print(f'sp-timm train: --logit-adjust {config.logit_adjust:g}: the loss sees the logits shifted by {shift} '
                  f'(tau * log prior of {counts}); the model is the plain network.')
        return loss, record

    def _class_weighting(self, train_data: ImageData, num_classes: int) -> Tuple[ClassWeightedLoss, ClassWeighting]:
        """--class-weight: weights from the per-class counts of the training images used (after --val-split and
        --train-examples); on from the start, or from epoch --drw-epoch + 1. Returns the loss and its record."""
        config = self.config
        counts = _class_counts(train_data, num_classes)
        weights = class_weights(counts, config.class_weight, config.class_weight_beta)
        loss = ClassWeightedLoss(self.loss_fn, weights, enabled=config.drw_epoch is None).to(self.accelerator.device)
        rounded = [round(w, 6) for w in weights.tolist()]
        record = ClassWeighting(
            mode=config.class_weight, beta=config.class_weight_beta if config.class_weight == 'effective' else None,
            drw_epoch=config.drw_epoch, class_counts=counts, weights=rounded,
            meaning='per-sample weight w[y] (soft targets: w . t) on the loss of each sample',
            reduction=CLASS_WEIGHT_REDUCTION)
        if self.main:
            when = (f'from epoch {config.drw_epoch + 1} (--drw-epoch)' if config.drw_epoch is not None
                    else 'from the start')
            print(f'sp-timm train: --class-weight {config.class_weight}: weights {rounded} {when}.')
            if len({c for c in counts if c > 0}) == 1:
                print(f'sp-timm train: --class-weight {config.class_weight} on a balanced training set '
                      f'({max(counts)} images per class): every weight is equal, the loss is the unweighted one.')
        return loss, record

    def _create_model_ema(self, model: nn.Module):
        """--model-ema: timm's ``ModelEmaV3`` of the unwrapped model, created as timm's train.py does (decay, warmup;
        on the model's device, after device placement), and its record. Every process keeps its own copy and updates
        it from the same parameters; the floating-point buffers (BatchNorm statistics), which each process computes
        on its own share of the batch, are made the main process's before every validation (``_sync_ema_buffers``),
        so every process validates, and the main process saves, the same EMA weights."""
        from timm.utils import ModelEmaV3
        config = self.config
        ema = ModelEmaV3(model, decay=config.model_ema_decay, use_warmup=config.model_ema_warmup)
        record = ModelEma(
            implementation='timm.utils.ModelEmaV3', decay=config.model_ema_decay, warmup=config.model_ema_warmup,
            warmup_gamma=ema.warmup_gamma, warmup_power=ema.warmup_power, file=EMA_FILE,
            rule='after update t: ema = d_t * ema + (1 - d_t) * weights (parameters and float buffers); d_1 = 0, '
                 'd_t = ' + ('min(decay, 1 - t^(-2/3))' if config.model_ema_warmup else 'decay') + ' for t >= 2',
            best_on='ema', eval_export_default='ema')
        if self.main:
            warmup = ', warmup d_t = min(d, 1 - t^(-2/3))' if config.model_ema_warmup else ''
            print(f'sp-timm train: --model-ema: timm ModelEmaV3, decay {config.model_ema_decay}{warmup}; the EMA '
                  f'weights are validated every epoch (ema_val_*), pick `best`, are saved as {EMA_FILE}, and are what '
                  f'sp-timm eval / export use by default (--weights raw for the trained weights).')
        return ema, record

    def _sync_ema_buffers(self) -> None:
        """Several processes: the EMA's floating-point buffers from the main process (its parameters are the same on
        every process already). One process: nothing to do."""
        if self.model_ema is None or self.accelerator.num_processes < 2:
            return
        import torch.distributed as dist
        for buffer in self.model_ema.module.buffers():
            if buffer.is_floating_point():
                dist.broadcast(buffer, src=0)

    def _selection_metric(self, metrics: Dict[str, float]) -> float:
        """The metric of `best` and of a plateau schedule: PGD accuracy (adversarial training) or clean accuracy on
        the validation images, of the EMA weights when --model-ema is on (timm train.py's rule), else of the model."""
        prefix = 'ema_' if self.model_ema is not None else ''
        return metrics.get(f'{prefix}val_adv_acc', metrics[f'{prefix}val_acc'])

    def _sync_batchnorm(self, model: nn.Module) -> nn.Module:
        accelerator = self.accelerator
        model, converted = convert_sync_batchnorm(model, accelerator.num_processes, accelerator.device)
        if self.main:
            if accelerator.num_processes < 2:
                print('sp-timm train: --sync-bn with one process: BatchNorm already sees the whole batch; nothing '
                      'to synchronise, the model is unchanged.')
            elif not converted:
                print(f'sp-timm train: --sync-bn: {self.config.model} has no BatchNorm layers; nothing to synchronise.')
            else:
                print(f'sp-timm train: --sync-bn: {converted} BatchNorm layers synchronised over '
                      f'{accelerator.num_processes} processes (statistics of the global batch).')
        return model

    def _load(self, checkpoint: Path) -> 'ResumeHistory':
        """Continue from ``checkpoint``: weights, optimizer state (momentum buffers), schedule position, EMA, update
        count and best metric; returns what the run record keeps of the resume (flags and batch loss changed). Flags
        changed with --resume-override take effect: the optimizer's hyperparameters
        (learning rate, momentum, weight decay) are this run's, and a changed schedule flag (``SCHEDULE_ARGS``)
        rebuilds the learning-rate schedule from the new flags at the resumed epoch. Resumed into another (empty)
        --output, ``best`` is the best of the epochs run there."""
        model_state, training_state, state = load_training_state(checkpoint)
        record = read_run_record(checkpoint)
        changed = changed_args(record, self.config)
        this_run = [{k: v for k, v in group.items() if k != 'params'} for group in self.optimizer.param_groups]
        try:
            self.model.load_state_dict(model_state, strict=True)
            self.optimizer.load_state_dict(training_state['optimizer'])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"--resume '{checkpoint}' does not fit this run's model or optimizer "
                                  f"({str(err)[:300]}).") from err
        self.start_epoch, self.best_metric = state['epoch'], state.get('best_metric')  # epochs completed
        self.num_updates = state.get('num_updates', self.start_epoch * len(self.train_loader))
        rebuild = sorted(changed.keys() & set(SCHEDULE_ARGS))
        if self.config.sched_on_updates and self.num_updates != self.start_epoch * len(self.train_loader):
            old_updates = self.num_updates // max(self.start_epoch, 1)
            raise CheckpointError(f"--resume '{checkpoint}': the schedule steps per update (--sched-on-updates) and "
                                  f"this resume changes the updates per epoch ({old_updates} -> "
                                  f"{len(self.train_loader)}: batch size, training images or processes); resume with "
                                  f"the run's, or train again.")
        for group, values in zip(self.optimizer.param_groups, this_run if changed else ()):
            group.update({k: v for k, v in values.items() if rebuild or k not in ('lr', 'initial_lr')})
        if rebuild:  # the fresh schedule of the new flags, moved to where the run stands
            self.scheduler.step(self.start_epoch)
            self.scheduler.step_update(num_updates=self.num_updates)
            if self.main:
                changed_flags = ', '.join('--' + k.replace('_', '-') for k in rebuild)
                print(f"sp-timm train: --resume-override changed {changed_flags}: "
                      f"the learning-rate schedule is rebuilt from the new flags at epoch {self.start_epoch + 1} "
                      f"(lr {self.optimizer.param_groups[0]['lr']:.4g}).")
        else:
            self.scheduler.load_state_dict(training_state['scheduler'])
        if training_state.get('scaler') is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(training_state['scaler'])
        if run_folder(checkpoint) != self.output.resolve():
            self.best_metric = None  # 'best' here is chosen among the epochs this folder holds
            if self.main:
                print(f"sp-timm train: resuming into another folder: its 'best' is the best of the epochs run there; "
                      f"the run's earlier best stays in '{run_folder(checkpoint)}'.")
        if self.model_ema is not None:
            self._load_ema(checkpoint, training_state)
        reductions = list(record.class_weight.reduction_history or []) if record.class_weight is not None else []
        if earlier := record.earlier_reduction():  # the checkpoint's loss, continued under --resume-override
            reductions.append(ReductionChange(until_epoch=self.start_epoch, reduction=earlier))
        if self.main:  # keep the metrics of the epochs the checkpoint contains, drop those after it
            write_metrics(self.output / METRICS_FILE, state['epoch'], [])
        return ResumeHistory(args_history(record, self.config, self.start_epoch) or None, reductions or None)

    def _load_ema(self, checkpoint: Path, training_state: Dict[str, Any]) -> None:
        """The EMA weights of a resumed run (verified ``model_ema.safetensors``) and the state of ModelEmaV3's
        stochastic-rounding generator (bfloat16 EMA tensors only). A checkpoint without EMA weights (--model-ema
        switched on with --resume-override) starts the EMA from the resumed weights, and says so."""
        ema_state = load_ema_state(checkpoint)
        if ema_state is None:
            self.model_ema.set(self.model)
            if self.main:
                print(f"sp-timm train: --resume '{checkpoint}' has no EMA weights (trained without --model-ema): "
                      f"the EMA starts from the resumed weights.")
            return
        try:
            self.model_ema.module.load_state_dict(ema_state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"--resume '{checkpoint}': its EMA weights do not fit this run's model "
                                  f"({str(err)[:300]}).") from err
        generator = getattr(self.model_ema, '_sr_generator', None)
        if generator is not None and training_state.get('model_ema_rng') is not None:
            generator.set_state(training_state['model_ema_rng'])

    def _check_loss_inputs(self) -> None:
        """Raise the deferred input error of an SP loss in 'async' validation (GPU) mode; syncs."""
        loss_fn = getattr(self.loss_fn, '_orig_mod', self.loss_fn)
        loss_fn = getattr(loss_fn, 'base', loss_fn)  # inside --class-weight's wrapper
        if isinstance(loss_fn, SPLoss):
            loss_fn.check_inputs()

    def _inner_loss(self):
        return self.loss_fn if self.config.adv_loss == 'train' else F.cross_entropy

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        config, accelerator = self.config, self.accelerator
        self.ddp_model.train()
        self.train_loader.set_epoch(epoch)
        if self.class_weighting is not None and config.drw_epoch is not None:  # deferred re-weighting
            self.class_weighting.enabled = epoch >= config.drw_epoch
            if self.main and epoch == config.drw_epoch:
                tqdm.write(f'sp-timm train: --drw-epoch {config.drw_epoch}: class weights ({config.class_weight}) '
                           f'on from epoch {epoch + 1}.')
        stats = torch.zeros(4, device=accelerator.device)  # loss sum, correct, seen, adv-correct
        grad_stats = torch.zeros(GRAD_STATS, device=accelerator.device)  # --clip-grad: see accumulate_grad_norm
        start = time.perf_counter()
        bar = tqdm(self.train_loader, desc=f'epoch {epoch + 1}/{self.num_epochs}',
                   disable=not self.main or config.no_progress, leave=False, dynamic_ncols=True)
        for step, (images, labels) in enumerate(bar):
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = labels
            if self.mixup is not None:
                images, targets = self.mixup(images, labels)
            if config.adv == 'pgd':
                images = pgd_attack(self.attack_model, images, labels, config.adv_eps, config.adv_step_size,
                                    config.adv_steps, config.adv_norm, self._inner_loss())
            if config.adv == 'trades':
                adv_images = trades_attack(self.attack_model, images, config.adv_eps, config.adv_step_size,
                                           config.adv_steps, config.adv_norm)
                logits_all = self.ddp_model(torch.cat([images, adv_images]))
                logits, adv_logits = logits_all.float().chunk(2)
                loss = self.loss_fn(logits, targets) + config.trades_beta * trades_kl(adv_logits, logits)
                stats[3] += (adv_logits.argmax(1) == labels).sum()
            else:
                logits = self.ddp_model(images).float()
                loss = self.loss_fn(logits, targets)
                if config.adv == 'pgd':
                    stats[3] += (logits.argmax(1) == labels).sum()
            self.optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.clip_grad is not None:
                grad_norm = accelerator.clip_grad_norm_(self.ddp_model.parameters(), config.clip_grad)
                if grad_norm is not None:
                    accumulate_grad_norm(grad_stats, grad_norm, config.clip_grad)
            self.optimizer.step()
            self.num_updates += 1
            if self.model_ema is not None:  # timm: after the update, with the run's update count
                self.model_ema.update(self.model, step=self.num_updates)
            self.scheduler.step_update(num_updates=self.num_updates)
            stats[0] += loss.detach() * labels.numel()
            stats[1] += (logits.argmax(1) == labels).sum()  # the images trained on: adversarial ones for PGD-AT
            stats[2] += labels.numel()
            if step % config.log_interval == 0:  # the step's only host syncs, at log intervals
                self._check_loss_inputs()
                bar.set_postfix(loss=f'{loss.item():.4f}', lr=f"{self.optimizer.param_groups[0]['lr']:.4g}")
        self._check_loss_inputs()
        total = accelerator.gather_for_metrics(stats[None]).sum(0).tolist()  # waits for the device: then time
        seconds = time.perf_counter() - start
        result = {'train_loss': total[0] / total[2], 'train_images_per_s': total[2] / seconds,
                  'lr': self.optimizer.param_groups[0]['lr']}
        if self.mixup is None and config.adv != 'pgd':
            result['train_acc'] = 100 * total[1] / total[2]
        if config.adv != 'none':
            result['train_adv_acc'] = 100 * total[3] / total[2]
        if config.clip_grad is not None:
            result.update(grad_norm_metrics(grad_stats))
        return result

    def evaluate(self, model: Optional[nn.Module] = None, prefix: str = '') -> Dict[str, float]:
        """Clean accuracy / CE on the (first --val-examples) validation images (carved from the training split;
        the test split only with --val-split 0) and, when training adversarially, PGD accuracy (CE, the training
        attack's settings) on the first --adv-val-examples of them; gathered over processes. ``model``: the trained
        model by default, or the EMA copy (``prefix`` 'ema_': keys ema_val_loss, ema_val_acc, ema_val_adv_acc)."""
        config, accelerator = self.config, self.accelerator
        model = self.attack_model if model is None else model
        model.eval()
        stats = torch.zeros(3, device=accelerator.device)
        with torch.no_grad(), accelerator.autocast():
            for images, labels in self.val_loader:
                if config.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                logits = model(images).float()
                stats += torch.cat([self.eval_loss(logits, labels)[None] * labels.numel(),
                                    accuracy_stats(logits, labels)])
        total = accelerator.gather_for_metrics(stats[None]).sum(0).tolist()
        result = {f'{prefix}val_loss': total[0] / total[2], f'{prefix}val_acc': 100 * total[1] / total[2]}
        if self.adv_val_loader is not None:
            adv_stats = torch.zeros(2, device=accelerator.device)
            for images, labels in self.adv_val_loader:
                with accelerator.autocast():
                    adv = pgd_attack(model, images, labels, config.adv_eps, config.adv_step_size, config.adv_steps,
                                     config.adv_norm)
                    with torch.no_grad():
                        adv_stats += accuracy_stats(model(adv).float(), labels)
            adv_total = accelerator.gather_for_metrics(adv_stats[None]).sum(0).tolist()
            result[f'{prefix}val_adv_acc'] = 100 * adv_total[0] / max(adv_total[1], 1)
        return result

    def save(self, epoch: int, metrics: Dict[str, float]) -> None:
        metric = self._selection_metric(metrics)
        is_best = self.best_metric is None or metric > self.best_metric
        if is_best:
            self.best_metric = metric
        if self.main:
            scaler = self.accelerator.scaler
            training_state = {'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                              'scaler': scaler.state_dict() if scaler is not None else None}
            ema_state = None
            if self.model_ema is not None:
                ema_state = self.model_ema.module.state_dict()
                generator = getattr(self.model_ema, '_sr_generator', None)
                training_state['model_ema_rng'] = generator.get_state() if generator is not None else None
            state = {'num_updates': self.num_updates, 'best_metric': self.best_metric, 'metrics': metrics}
            # metrics first: a kill between the two leaves a line the resumed run drops, never a missing one
            write_metrics(self.output / METRICS_FILE, epoch, [dict(epoch=epoch + 1, **metrics)])
            save_checkpoint(self.output, epoch + 1, self.model.state_dict(), training_state, state, self.record,
                            is_best, ema_state=ema_state)
        self.accelerator.wait_for_everyone()

    def run(self) -> Path:
        config, accelerator = self.config, self.accelerator
        if self.main:
            print(f"sp-timm train: {config.model} on {config.dataset} ({len(self.train_loader.labels)} train images), "
                  f"loss {self.loss_fn.__class__.__name__}, adv {config.adv}, {accelerator.num_processes} process(es) "
                  f"x batch "
                  f"{config.batch_size} = global batch {self.record.global_batch_size}, device {accelerator.device}, "
                  f"mixed precision {accelerator.mixed_precision}, "
                  f"output {self.output}" + (f', resuming after epoch {self.start_epoch}' if self.resume_from else ''))
        epochs = tqdm(range(self.start_epoch, self.num_epochs), desc='training', initial=self.start_epoch,
                      total=self.num_epochs, disable=not self.main or config.no_progress, dynamic_ncols=True)
        for epoch in epochs:
            reseed(config.seed, epoch, accelerator.process_index)
            metrics = self.train_epoch(epoch)
            metrics.update(self.evaluate())
            if self.model_ema is not None:
                self._sync_ema_buffers()
                metrics.update(self.evaluate(self.ema_eval_model, prefix='ema_'))
            self.scheduler.step(epoch + 1, self._selection_metric(metrics))
            self.save(epoch, metrics)
            accelerator.log(metrics, step=epoch + 1)
            shown = {k: round(v, 4) for k, v in metrics.items()}
            epochs.set_postfix({k: shown[k] for k in ('train_loss', 'val_acc', 'val_adv_acc', 'ema_val_acc',
                                                      'ema_val_adv_acc') if k in shown})
            if self.main and (config.no_progress or not epochs.disable):
                tqdm.write(f'epoch {epoch + 1}: ' + ', '.join(f'{k} {v:.4g}' for k, v in shown.items()))
        accelerator.end_training()
        return self.output


def default_trackers():
    try:
        import tensorboard  # noqa: F401
        return 'tensorboard'
    except ImportError:
        return None


def train(config: TrainConfig) -> Path:
    """Train as ``config`` says (``TrainConfig``; on the command line ``sp-timm train``); returns the run folder.
    The config is checked first (``check_train_config``): a mistake is one ``ValueError`` naming every problem."""
    from accelerate.state import AcceleratorState
    problems = check_train_config(config)
    if problems:
        raise ValueError(' '.join(problems))
    trainer = None
    try:
        trainer = Trainer(config)
        return trainer.run()
    except BaseException as err:
        if trainer is not None:  # the epochs logged so far reach the tracker's files (end_training does it on success)
            for tracker in trainer.accelerator.trackers:
                tracker.finish()
        if isinstance(err, KeyboardInterrupt):
            raise Interrupted(resume_hint(trainer.output if trainer is not None else None)) from None
        raise
    finally:  # lets a later run in this process choose other mixed-precision settings (the process group stays)
        AcceleratorState._reset_state(reset_partial_state=False)


def _class_counts(train_data: ImageData, num_classes: int) -> List[int]:
    """Training images per class, 0 for the classes (of ``--num-classes``) the data does not hold."""
    return train_data.class_counts() + [0] * (num_classes - train_data.num_classes)
