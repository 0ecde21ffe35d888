""" The model card of an export (rendered from ``model_cards/template.md`` with huggingface_hub's ``ModelCard``) and
the run's complete training configuration, ``train_args.yaml``: its front matter holds a model-index with every
evaluation's numbers, its body the loss, the training settings that act in the run and the command that
reproduces it.
"""
import os
import re
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..formatting import format_ci
from ..model_source import default_model_name
from ..records import AuditSummary, EvalReport, ModelInfo, RunRecord, TrainConfig, to_json
from ..threat.budget import exact_eps, format_eps

__all__ = ['render_model_card', 'train_config', 'train_args_yaml', 'check_license', 'CARD_TEMPLATE', 'CARD_TAGS',
           'SP_TAG', 'DATASET_CARD_INFO', 'DatasetCardInfo', 'TRAIN_ARGS_FILE', 'TRAIN_ARGS_NOT_WRITTEN',
           'DEFAULT_LICENSE', 'PAPER_ARXIV_ID', 'dataset_info', 'plain_timm_architecture']

CARD_TEMPLATE = Path(__file__).resolve().parents[1] / 'templates' / 'model_card.md'
TRAIN_ARGS_FILE = 'train_args.yaml'
# flags of sp-timm train that name places on the machine that ran it, or how it showed progress and errors, not what
# it computed: train_args.yaml leaves them out (--data-dir is added on the command line where the data is local)
TRAIN_ARGS_NOT_WRITTEN = ('config', 'output', 'resume', 'resume_override', 'data_dir', 'no_progress', 'debug')
DEFAULT_LICENSE = 'apache-2.0'
PAPER_ARXIV_ID = '2302.09575'  # Stationary Point Losses for Robust Model

_LICENSE_ID = re.compile(r'^[a-z0-9][a-z0-9.+-]*$')

CARD_TAGS = ['image-classification', 'timm', 'adversarial-robustness', 'robustbench']
SP_TAG = 'sp-loss'  # only on the cards of models trained with an SP loss


class DatasetCardInfo(NamedTuple):
    """How a card names a dataset: its Hub dataset id and ``load_dataset`` config (None where it is not on the Hub),
    its title, and whether it is sp-timm's long-tailed variant (the test split stays balanced)."""
    hub_id: Optional[str]
    hub_config: Optional[str]
    title: str
    base: str
    long_tailed: bool


DATASET_CARD_INFO = {
    'cifar10': ('uoft-cs/cifar10', 'plain_text', 'CIFAR-10'),
    'cifar100': ('uoft-cs/cifar100', 'plain_text', 'CIFAR-100'),
    'digits': (None, None, "scikit-learn's digits (8x8 handwritten digits, resized to 32x32)"),
}


def dataset_info(dataset: str) -> DatasetCardInfo:
    """The card's names of sp-timm dataset ``dataset`` (``cifar10-lt``: CIFAR-10 on the Hub, long-tailed)."""
    long_tailed = dataset.endswith('-lt')
    base = dataset[:-3] if long_tailed else dataset
    hub_id, hub_config, title = DATASET_CARD_INFO.get(base, (None, None, base))
    return DatasetCardInfo(hub_id, hub_config, title, base, long_tailed)


def plain_timm_architecture(architecture: Optional[str]) -> bool:
    """Whether plain timm (without ``import sp_timm``) builds ``architecture``: one of timm's own models, not one
    of sp-timm's CIFAR networks (``sp_timm.models.CIFAR_MODELS``, registered with timm by ``import sp_timm``)."""
    import timm
    from ..models import CIFAR_MODELS
    if not architecture:
        return False
    name = architecture.split('.', 1)[0]  # timm's 'model.pretrained_tag'
    return name not in CIFAR_MODELS and timm.is_model(name)


def _fmt(value: Optional[float]) -> str:
    return '' if value is None else f'{value:.2f}'


def train_config(record: Optional[RunRecord]) -> Tuple[Dict[str, Any], List[str]]:
    """The resolved ``sp-timm train`` configuration of a run, as ``train_args.yaml`` holds it, and the recorded
    flags left out because this sp-timm's ``train`` no longer has them.

    The record's ``config`` less ``TRAIN_ARGS_NOT_WRITTEN``, in ``TrainConfig``'s order, each value as ``--config``
    parses it back to the same value: eps budgets that are multiples of 1/255 as ``'8/255'``, ``--val-split`` auto
    as ``'auto'``. Empty when the record holds no flags."""
    if record is None or record.config is None:
        return {}, []
    config = {}
    for key, value in record.config.to_json().items():
        if key in TRAIN_ARGS_NOT_WRITTEN:
            continue
        if key == 'val_split' and value is None:
            value = 'auto'
        elif key in ('adv_eps', 'adv_step_size'):
            value = exact_eps(value)
        config[key] = value
    return config, [k for k in (record.retired_flags or {}) if k not in TRAIN_ARGS_NOT_WRITTEN]


def _launch_prefix(record: RunRecord) -> str:
    processes = record.num_processes or 1
    return ('sp-timm train' if processes <= 1 else
            f'accelerate launch --multi_gpu --num_processes {processes} -m sp_timm.train')


def train_args_yaml(info: ModelInfo) -> str:
    """``train_args.yaml``: the run's configuration (``train_config``) with a header saying how to use it."""
    import yaml
    record = info.run
    config, unknown = train_config(record)
    lines = [f'# The complete configuration of the run that trained {default_model_name(info)}, written by sp-timm '
             f'{record.sp_timm_version} export',
             f'# from its run record (sp_timm.json). Reproduce it with:  {_launch_prefix(record)} --config '
             f'{TRAIN_ARGS_FILE}',
             f'# Left out (per machine or display only): {", ".join(TRAIN_ARGS_NOT_WRITTEN)}; add --data-dir DIR for a '
             f'local copy of the data.']
    if (record.num_processes or 1) > 1:
        lines.append(f"# Trained on {record.num_processes} processes: batch_size is per process (global batch "
                     f"{record.global_batch_size}).")
    if record.args_history:
        lines.append('# The run was resumed with changed flags (--resume-override): these are the values of its last '
                     'epochs; sp_timm.json args_history holds the earlier ones.')
    if unknown:
        lines.append(f'# Flags of the run that this sp-timm train no longer has (left out): {", ".join(unknown)}')
    return '\n'.join(lines) + '\n' + yaml.safe_dump(config, sort_keys=False, default_flow_style=None,
                                                    allow_unicode=True)


def _setting_applies(key: str, config: Dict[str, Any]) -> bool:
    """Whether ``key`` of the configuration acts in this run (the adversarial flags of a standard run, the
    schedule parameters of another scheduler, ... do not)."""
    adv, sched = config.get('adv', 'none'), config.get('sched')
    mixing = (config.get('mixup') or 0) > 0 or (config.get('cutmix') or 0) > 0
    if key in ('adv', 'adv_eps', 'adv_steps', 'adv_step_size', 'adv_norm', 'adv_val_examples'):
        return adv != 'none'
    rules = {'adv_loss': adv == 'pgd', 'trades_beta': adv == 'trades', 'mixup_prob': mixing,
             'mixup_switch_prob': (config.get('mixup') or 0) > 0 and (config.get('cutmix') or 0) > 0,
             'imbalance_ratio': str(config.get('dataset', '')).endswith('-lt'),
             'imbalance_profile': str(config.get('dataset', '')).endswith('-lt'),
             'decay_epochs': sched == 'step', 'decay_milestones': sched == 'multistep',
             'decay_rate': sched in ('step', 'multistep', 'plateau'),
             'warmup_lr': (config.get('warmup_epochs') or 0) > 0,
             'amp_dtype': bool(config.get('amp')), 'log_interval': False,
             'model_ema_decay': bool(config.get('model_ema')), 'model_ema_warmup': bool(config.get('model_ema')),
             'class_weight_beta': config.get('class_weight') == 'effective'}
    return rules.get(key, True)


_ZERO_IS_OFF = ('drop', 'smoothing', 'mixup', 'cutmix', 'warmup_epochs')  # 0 switches these off


def _format_setting(key: str, value: Any) -> str:
    if value is True:
        return 'on'
    if isinstance(value, float):
        short = f'{value:g}'
        return short if float(short) == value else repr(value)
    if isinstance(value, (list, tuple)):
        return ' '.join(_format_setting(key, v) for v in value)
    if isinstance(value, dict):
        return ' '.join(f'{k}={v}' for k, v in value.items())
    return str(value)


def _training_rows(config: Dict[str, Any]) -> List[List[str]]:
    """The card's training table: every setting of ``train_args.yaml`` that acts in this run, as its flag; switches
    that are off and unset options (their default) are left out."""
    def off(key, value):
        return (value is None or value is False or (isinstance(value, (dict, list)) and not value)
                or (key in _ZERO_IS_OFF and value == 0))
    rows = [[f"`--{key.replace('_', '-')}`", _format_setting(key, value)] for key, value in config.items()
            if not off(key, value) and _setting_applies(key, config)]
    return rows if rows else [['flags', 'not recorded']]


def _train_command(record: Optional[RunRecord]) -> str:
    """The card's command: the run's configuration file, plus --data-dir where the run read a local copy."""
    if not train_config(record)[0]:
        return "# the run record holds no flags of sp-timm train: see sp_timm.json"
    command = f'{_launch_prefix(record)} --config {TRAIN_ARGS_FILE}'
    if record.config.data_dir:
        command += f" \\\n  --data-dir /path/to/{record.dataset}  # the run read a local copy of the data"
    return command


def _evaluation_context(report: EvalReport) -> Dict[str, Any]:
    protocol = report.protocol
    per_class = [dict(to_json(c), clean_acc=_fmt(c.clean_acc), robust_acc=_fmt(c.robust_acc),
                      train_count='' if c.train_count is None else c.train_count,
                      group='' if c.group is None else c.group)
                 for c in report.per_class] if report.long_tailed else []
    return dict(threat_model=protocol.threat_model, eps=protocol.eps, n_examples=protocol.n_examples,
                attacks=', '.join(protocol.attacks), clean_acc=_fmt(report.clean_acc),
                robust_acc=_fmt(report.robust_acc),
                clean_ci=format_ci(report.clean_ci), robust_ci=format_ci(report.robust_ci),
                balanced_clean_acc=_fmt(report.balanced_clean_acc),
                balanced_robust_acc=_fmt(report.balanced_robust_acc),
                warnings=report.warnings, unreliable=report.unreliable, per_class=per_class,
                audit=_audit_context(report.audit), preview=protocol.full_test_split is False,
                local_data=bool(protocol.local_data))


def _audit_context(audit: Optional[AuditSummary]) -> Optional[Dict[str, Any]]:
    if audit is None:
        return None
    return dict(robust_acc=_fmt(audit.robust_acc), robust_ci=format_ci(audit.robust_ci), unreliable=audit.unreliable)


def _training_split(info: DatasetCardInfo, config: Optional[TrainConfig]) -> str:
    """The training data of a run on ``info`` in words: the dataset, or its long-tailed training split with the
    imbalance ratio and profile where the record holds them."""
    if not info.long_tailed:
        return info.title
    if config is None:
        return f'a long-tailed training split of {info.title}'
    return (f'the long-tailed training split of {info.title} (imbalance ratio {float(config.imbalance_ratio):g}, '
            f'{config.imbalance_profile} profile)')


def _eval_dataset(dataset: str, split: str, trained_on: DatasetCardInfo,
                  config: Optional[TrainConfig]) -> Tuple[str, Optional[str], str]:
    """(type, config, name) of an evaluation's dataset in the model-index: the Hub dataset id and its
    ``load_dataset`` config where it is on the Hub (else sp-timm's dataset name and no config), and a name. The
    evaluated split of a ``-lt`` dataset is the balanced one, so the training imbalance is in the name only."""
    info = dataset_info(dataset)
    name = info.title
    if trained_on.long_tailed:
        imbalance = (f'ratio-{float(config.imbalance_ratio):g} {config.imbalance_profile}-profile '
                     if config is not None else '')
        name = f'{info.title} ({split} split; model trained on the {imbalance}long-tailed train split)'
    return info.hub_id or info.base, info.hub_config, name


def _eval_results(info: ModelInfo, reports: Sequence[EvalReport]) -> list:
    """The model-index entries of the reports: clean, AutoAttack and (when the report has an audit) audited
    robust accuracy in percent, each with the number of test points, threat model, eps and whether it is audited,
    on the evaluated dataset (``_eval_dataset``: the Hub dataset id and config, the split)."""
    from huggingface_hub import EvalResult
    config = info.run.config if info.run is not None else None
    trained_on = dataset_info(info.dataset or 'unknown')
    results = []
    for report in reports:
        protocol = report.protocol
        dataset_type, dataset_config, dataset_name = _eval_dataset(
            protocol.dataset or info.dataset or 'unknown', protocol.split, trained_on, config)
        common = dict(task_type='image-classification', dataset_type=dataset_type, dataset_name=dataset_name,
                      dataset_config=dataset_config, dataset_split=protocol.split, metric_type='accuracy')
        audit = report.audit
        tm, eps, n = protocol.threat_model, protocol.eps, protocol.n_examples
        context = {'n_examples': n, 'threat_model': tm, 'eps': eps, 'audited': audit is not None}
        clean_name = 'clean accuracy' if len(reports) == 1 else f'clean accuracy ({tm} evaluation, {n} points)'
        results.append(EvalResult(metric_value=round(report.clean_acc, 2), metric_name=clean_name,
                                  metric_args=dict(context), **common))
        results.append(EvalResult(
            metric_value=round(report.robust_acc, 2), metric_name=f'AutoAttack accuracy ({tm}, eps={eps})',
            metric_args=dict(context, attack='AutoAttack standard', unreliable=report.unreliable), **common))
        if audit is not None:
            results.append(EvalResult(
                metric_value=round(audit.robust_acc, 2), metric_name=f'audited robust accuracy ({tm}, eps={eps})',
                metric_args=dict(context, attack='AutoAttack standard + adaptive audit (sp-timm eval --audit)',
                                 unreliable=audit.unreliable), **common))
    return results


def check_license(license: str) -> str:
    if not isinstance(license, str) or not _LICENSE_ID.match(license):
        raise ValueError(f"--license {license!r} is not a Hub licence identifier (lower case, e.g. apache-2.0, mit, "
                         f"cc-by-4.0, other); see the Hub's list of licences.")
    return license


def render_model_card(info: ModelInfo, reports: Sequence[EvalReport] = (), repo_id: Optional[str] = None,
                      folder_name: str = 'model', template: os.PathLike = CARD_TEMPLATE,
                      license: str = DEFAULT_LICENSE) -> str:
    """The model card (markdown with YAML front matter) of a trained model.

    ``info`` is the loaded model's ``ModelInfo`` (its run record and which weights); ``reports`` are ``sp-timm eval``
    reports. The front matter's ``model-index`` holds clean, AutoAttack and (where audited) audited robust accuracy
    (percent) of every report with its number of test points, Hub dataset id and config, threat model and eps;
    ``license`` is the Hub licence id. Only a model trained with an SP loss is tagged ``sp-loss`` and cites the SP
    paper. The training table and command come from the run's configuration (``train_config``, ``train_args.yaml``);
    "How to use" says whether plain timm builds the architecture (``plain_timm_architecture``).
    """
    from huggingface_hub import ModelCard, ModelCardData
    import timm
    from ..version import __version__
    from ..losses import create_loss, is_sp_loss
    record = info.run
    dataset = info.dataset or 'unknown'
    trained_on = dataset_info(dataset)
    config = record.config if record is not None else None
    loss_name = record.loss if record is not None else 'unknown'
    is_sp = is_sp_loss(loss_name)
    name = default_model_name(info)
    repo_id = repo_id or f'ORG/{name}'
    eval_results = _eval_results(info, reports)
    card_data = ModelCardData(library_name='timm', license=check_license(license),
                              tags=CARD_TAGS + [SP_TAG] if is_sp else list(CARD_TAGS), model_name=name,
                              datasets=[trained_on.hub_id] if trained_on.hub_id else None,
                              pipeline_tag='image-classification', eval_results=eval_results or None)
    loss_params = record.loss_params if record is not None else {}
    try:
        formula = create_loss(loss_name, **loss_params).formula
    except (ValueError, TypeError, AttributeError):
        formula = 'see sp-timm losses'
    adversarial = None
    if config is not None and config.adv != 'none':
        adversarial = (f"{config.adv.upper()} ({config.adv_norm}, eps {format_eps(config.adv_eps)}, {config.adv_steps} "
                       f"steps of {format_eps(config.adv_step_size)})")
    model_args = info.model_args
    card = ModelCard.from_template(
        card_data, template_path=str(template), model_name=name, architecture=info.architecture, dataset=dataset,
        training_split=_training_split(trained_on, config), long_tailed=trained_on.long_tailed,
        plain_timm=plain_timm_architecture(info.architecture), loss_name=loss_name, loss_formula=formula, is_sp=is_sp,
        loss_params=', '.join(f'{k}={v}' for k, v in loss_params.items()) or 'defaults', adversarial=adversarial,
        sp_timm_version=record.sp_timm_version if record is not None else __version__,
        timm_version=record.timm_version if record is not None else timm.__version__,
        input_mean=tuple(model_args.get('input_mean') or (record.input_mean if record is not None else None) or ()),
        input_std=tuple(model_args.get('input_std') or (record.input_std if record is not None else None) or ()),
        training_rows=_training_rows(train_config(record)[0]), train_args_file=TRAIN_ARGS_FILE,
        resumed_with_changes=bool(record is not None and record.args_history), arxiv_id=PAPER_ARXIV_ID,
        train_counts=record.train_class_counts if record is not None and trained_on.long_tailed else None,
        train_command=_train_command(record), evaluations=[_evaluation_context(r) for r in reports],
        repo_id=repo_id, folder_name=folder_name,
        ema=record.model_ema if record is not None and info.weights == 'ema' else None)
    return str(card)
