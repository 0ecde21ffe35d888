""" The run record (``run.json`` in every checkpoint), the export record (``sp_timm.json`` in an export folder) and
``ModelInfo``, what ``load_model`` knows about the model it loaded. Typed and versioned (``records.schema``); read
through ``records.upgrade``, which brings every older record to the current schema. """
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .schema import check_finite, json_field, require
from .train_config import TrainConfig

__all__ = ['RUN_RECORD_VERSION', 'EXPORT_RECORD_VERSION', 'CLASS_WEIGHT_REDUCTION', 'EARLIER_CLASS_WEIGHT_REDUCTION',
           'RunRecord', 'ValidationSplit', 'ClassWeighting',
           'LogitAdjustment', 'ReductionChange', 'ModelEma', 'FlagChange',
           'ExportRecord', 'ModelInfo']

RUN_RECORD_VERSION = 2  # 1: before versions (the flags as `args`, vars() of the argparse namespace)
EXPORT_RECORD_VERSION = 2  # 1: before versions (the run record itself, plus `weights`)
CLASS_WEIGHT_REDUCTION = 'sum_i w_i l_i / sum_i w_i'  # the batch loss of --class-weight
EARLIER_CLASS_WEIGHT_REDUCTION = 'mean_i w_i l_i'  # what runs trained with before the weighted mean (unnamed then)


@dataclass
class ValidationSplit:
    """Where the per-epoch validation images came from (``data.carve_validation``): carved from the training split
    (size, seed, per-class counts, the indices and their SHA-256), or the test split (``--val-split 0``)."""
    size: int
    source: str
    seed: Optional[int] = json_field(None, omit_none=True)
    requested: Any = json_field(None, omit_none=True)  # 'auto', a count or a fraction
    class_counts: Optional[List[int]] = json_field(None, omit_none=True)
    indices_sha256: Optional[str] = json_field(None, omit_none=True)
    indices: Optional[List[int]] = json_field(None, omit_none=True)
    used: Optional[int] = json_field(None, omit_none=True)  # after --val-examples


@dataclass
class ReductionChange:
    """The epochs up to ``until_epoch`` trained with the batch loss ``reduction`` (a resume changed it)."""
    until_epoch: int
    reduction: str


@dataclass
class ClassWeighting:
    """``--class-weight``: the per-class weights, from which counts, how they act and since when."""
    mode: str
    beta: Optional[float]
    drw_epoch: Optional[int]
    class_counts: List[int]
    weights: List[float]
    meaning: str
    reduction: str
    reduction_history: Optional[List[ReductionChange]] = json_field(None, omit_none=True)


@dataclass
class LogitAdjustment:
    """``--logit-adjust``: the training loss saw ``z + tau * log(pi)``, ``pi`` the prior of the training images per
    class (``shift`` = ``tau * log(pi)``); the model, what is evaluated and exported, is the plain network."""
    tau: float
    class_counts: List[int]
    shift: List[float]
    meaning: str


@dataclass
class ModelEma:
    """``--model-ema``: timm's ``ModelEmaV3`` settings and how the run used the average."""
    implementation: str
    decay: float
    warmup: bool
    warmup_gamma: float
    warmup_power: float
    file: str
    rule: str
    best_on: str
    eval_export_default: str


@dataclass
class FlagChange:
    """The epochs up to ``until_epoch`` ran with these earlier values of the flags a resume changed."""
    until_epoch: int
    args: Dict[str, Any]


@dataclass(kw_only=True)
class RunRecord:
    """Everything needed to rebuild, evaluate, export and describe a trained model without the command that trained
    it: the model and its arguments, the classes and input normalisation, the data (and its per-class counts and
    long-tail groups), the loss and its parameters, the complete ``TrainConfig``, the processes, the versions; and
    what the run set up on its way (validation split, class weights, EMA, flags changed by a resume)."""
    schema_version: int = RUN_RECORD_VERSION
    model: str
    model_args: Dict[str, Any]
    num_classes: int
    classes: List[str]
    dataset: str
    data_source: str
    train_class_counts: List[int]
    split_class_counts: List[int]
    class_groups: Dict[str, List[int]]
    group_rule: str
    input_range: List[float]
    input_mean: Optional[List[float]]
    input_std: Optional[List[float]]
    loss: str
    loss_params: Dict[str, Any]
    config: Optional[TrainConfig] = None  # None: the record holds no flags (a hand-made or very early record)
    num_processes: int
    global_batch_size: int
    sp_timm_version: str
    timm_version: str
    torch_version: str
    mixed_precision: Optional[str] = json_field(None, omit_none=True)
    validation: Optional[ValidationSplit] = json_field(None, omit_none=True)
    class_weight: Optional[ClassWeighting] = json_field(None, omit_none=True)
    logit_adjustment: Optional[LogitAdjustment] = json_field(None, omit_none=True)
    model_ema: Optional[ModelEma] = json_field(None, omit_none=True)
    args_history: Optional[List[FlagChange]] = json_field(None, omit_none=True)
    retired_flags: Optional[Dict[str, Any]] = json_field(None, omit_none=True)  # flags this sp-timm no longer has

    def check_values(self, where: str) -> None:
        """The rules a run record keeps (``records.schema``): its counts agree with ``num_classes``, class groups
        name existing classes, the input range is ``[low, high]``, mean and std describe the same channels."""
        k = self.num_classes
        require(k >= 1, where, f'num_classes must be >= 1, got {k}')
        require(len(self.classes) == k, where, f'classes names {len(self.classes)} classes, num_classes is {k}')
        recorded = self.model_args.get('num_classes', k)
        require(recorded == k, where, f'model_args.num_classes is {recorded!r}, num_classes is {k}')
        for name in ('train_class_counts', 'split_class_counts'):
            counts = getattr(self, name)
            require(len(counts) in (0, k), where, f'{name} has {len(counts)} entries for {k} classes')
            require(all(c >= 0 for c in counts), where, f'{name} holds a negative count')
        for group, members in self.class_groups.items():
            require(all(0 <= c < k for c in members), where, f'class_groups.{group} names a class outside 0..{k - 1}')
        check_finite({'input_range': self.input_range, 'input_mean': self.input_mean}, where)
        check_finite({'input_std': self.input_std}, where, minimum=1e-12)
        require(len(self.input_range) == 2 and self.input_range[0] < self.input_range[1], where,
                f'input_range must be [low, high] with low < high, got {self.input_range}')
        require((self.input_mean is None) == (self.input_std is None)
                and (self.input_mean is None or len(self.input_mean) == len(self.input_std)), where,
                'input_mean and input_std must both be null or lists of one number per channel')
        require(self.num_processes >= 1 and self.global_batch_size >= 1, where,
                'num_processes and global_batch_size must be >= 1')

    def earlier_reduction(self) -> Optional[str]:
        """The batch loss the class weights trained with when it is not today's (``CLASS_WEIGHT_REDUCTION``); None
        without class weights or with today's."""
        weighting = self.class_weight
        return None if weighting is None or weighting.reduction == CLASS_WEIGHT_REDUCTION else weighting.reduction


@dataclass(kw_only=True)
class ExportRecord:
    """``sp_timm.json`` of an export folder: the run record of the exported model and which of its weights the
    folder holds (``ema``: the run's ``--model-ema`` average; ``raw``: the trained weights)."""
    schema_version: int = EXPORT_RECORD_VERSION
    weights: str
    run: Optional[RunRecord]  # None: exported from a plain timm folder (its config.json says what is known)

    def check_values(self, where: str) -> None:
        require(self.weights in ('ema', 'raw'), where, f"weights must be 'ema' or 'raw', got {self.weights!r}")


@dataclass
class ModelInfo:
    """What ``load_model`` knows about the model it loaded: where it came from, which weights, the architecture and
    its arguments, and the training run when known (sp-timm checkpoints and exports; a plain timm folder or a
    RobustBench zoo model has none). Not written to disk."""
    source: str
    weights: str
    architecture: Optional[str]
    model_args: Dict[str, Any] = field(default_factory=dict)
    num_classes: Optional[int] = None
    classes: Optional[List[str]] = None
    run: Optional[RunRecord] = None
    name: Optional[str] = None  # a name the source gives the model (RobustBench's zoo name)
    zoo_dataset: Optional[str] = None  # the dataset a RobustBench zoo model was trained for

    @property
    def dataset(self) -> Optional[str]:
        return self.run.dataset if self.run is not None else self.zoo_dataset
