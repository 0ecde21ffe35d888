""" Export in timm's Hub format (timm's own ``save_for_hf``: ``config.json`` + ``model.safetensors``), with a
model card rendered from ``model_cards/template.md`` and the RobustBench JSON of each evaluation, and push
with huggingface_hub.

An export folder::

    DIR/
      config.json, model.safetensors        timm's format: timm.create_model('local-dir:DIR', pretrained=True)
      sp_timm.json                          the training run record (loss and its parameters, dataset, flags)
      train_args.yaml                       the run's complete configuration: sp-timm train --config train_args.yaml
      README.md                             the model card (YAML front matter with a model-index)
      eval/<threat_model>.json              full evaluation reports, when evaluations were given
      model_info/<dataset>/<threat_model>/<name>.json   RobustBench leaderboard entries
      .sp-timm-export.json                  the marker: every file the export wrote, with its SHA-256 (not pushed)

``--out`` is replaced only when it is absent, empty, or an earlier export whose files are exactly those its
marker lists, unchanged: a run folder, ``.``, or a folder holding anyone else's files is refused untouched.
Names read from reports (dataset, model name) must be single safe file names, and every report must carry the
SHA-256 of the weights being exported (``sp-timm eval`` records it).
"""
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .checkpoint import (CheckpointError, atomic_write_json, default_model_name, load_model, make_shareable,
                         read_json_object, safe_path_component, sha256_file, staging_folder, weights_sha256, fsync_file)
from .eval.budget import THREAT_MODELS, format_eps

__all__ = ['export_model', 'check_one_report_per_threat_model', 'render_model_card', 'push_folder', 'train_config', 'train_args_yaml', 'HubError',
           'CARD_TEMPLATE', 'DATASET_CARD_INFO', 'EXPORT_MARKER', 'TRAIN_ARGS_FILE', 'TRAIN_ARGS_NOT_WRITTEN',
           'DEFAULT_LICENSE', 'PAPER_ARXIV_ID']

CARD_TEMPLATE = Path(__file__).parent / 'templates' / 'model_card.md'
EXPORT_MARKER = '.sp-timm-export.json'
TRAIN_ARGS_FILE = 'train_args.yaml'
# flags of sp-timm train that name places on the machine that ran it, or how it showed progress and errors, not what
# it computed: train_args.yaml leaves them out (--data-dir is added on the command line where the data is local)
TRAIN_ARGS_NOT_WRITTEN = ('config', 'output', 'resume', 'resume_override', 'data_dir', 'no_progress', 'debug')
# flags added to sp-timm train after some runs were recorded, with the behaviour those runs had (written when the
# record lacks them, so that train_args.yaml does not silently take a newer default)
_BEFORE_FLAG_EXISTED = {'val_split': 0}  # before --val-split, validation used the test split
DEFAULT_LICENSE = 'apache-2.0'
PAPER_ARXIV_ID = '2302.09575'  # Stationary Point Losses for Robust Model
_LICENSE_ID = re.compile(r'^[a-z0-9][a-z0-9.+-]*$')
_REPORT_KEYS = ('protocol', 'leaderboard', 'clean_acc', 'robust_acc', 'clean_ci', 'robust_ci')
_PROTOCOL_KEYS = ('threat_model', 'eps', 'n_examples', 'dataset')
CARD_TAGS = ['image-classification', 'timm', 'adversarial-robustness', 'robustbench', 'sp-loss']
# dataset name -> (Hub dataset id or None, title)
DATASET_CARD_INFO = {
    'cifar10': ('uoft-cs/cifar10', 'CIFAR-10'),
    'cifar100': ('uoft-cs/cifar100', 'CIFAR-100'),
    'digits': (None, "scikit-learn's digits (8x8 handwritten digits, resized to 32x32)"),
}


class HubError(RuntimeError):
    """Pushing to the Hub failed; the local folder is intact."""


def _dataset_info(dataset: str):
    base = dataset[:-3] if dataset.endswith('-lt') else dataset
    hub_id, title = DATASET_CARD_INFO.get(base, (None, base))
    return hub_id, (f'{title}, long-tailed' if dataset.endswith('-lt') else title)


def _fmt(value: Optional[float]) -> str:
    return '' if value is None else f'{value:.2f}'


def _exact_fraction(value: Any) -> Any:
    """``'8/255'`` for a float that is exactly ``k / 255`` (as ``--adv-eps 8/255`` parses), the value otherwise."""
    if isinstance(value, float) and 0 < value <= 1:
        k = round(value * 255)
        if k / 255 == value:
            return f'{k}/255'
    return value


def train_config(record: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """The resolved ``sp-timm train`` configuration of a run, as ``train_args.yaml`` holds it, and the recorded
    flags left out because this sp-timm's ``train`` no longer has them.

    ``record['args']`` (``vars(args)`` of the run) less ``TRAIN_ARGS_NOT_WRITTEN``, in the parser's order, each
    value as ``--config`` parses it back to the same value: eps budgets that are multiples of 1/255 as ``'8/255'``,
    ``--val-split`` auto as ``'auto'``. Empty when the record holds no flags."""
    from .train.args import build_train_parser
    args = record.get('args')
    if not isinstance(args, dict) or not args:
        return {}, []
    dests = [a.dest for a in build_train_parser()._actions if a.dest != 'help']
    config = {}
    for key in dests:
        if key in TRAIN_ARGS_NOT_WRITTEN or (key not in args and key not in _BEFORE_FLAG_EXISTED):
            continue
        value = args[key] if key in args else _BEFORE_FLAG_EXISTED[key]
        if key == 'val_split' and value is None:
            value = 'auto'
        elif key in ('adv_eps', 'adv_step_size'):
            value = _exact_fraction(value)
        elif isinstance(value, tuple):
            value = list(value)
        config[key] = value
    unknown = [k for k in args if k not in dests and k not in TRAIN_ARGS_NOT_WRITTEN]
    return config, unknown


def _launch_prefix(record: Dict[str, Any]) -> str:
    processes = record.get('num_processes') or 1
    return ('sp-timm train' if processes <= 1 else
            f'accelerate launch --multi_gpu --num_processes {processes} -m sp_timm.train')


def train_args_yaml(record: Dict[str, Any]) -> str:
    """``train_args.yaml``: the run's configuration (``train_config``) with a header saying how to use it."""
    import yaml
    from . import __version__
    config, unknown = train_config(record)
    lines = [f'# The complete configuration of the run that trained {default_model_name(record)}, written by sp-timm '
             f'{record.get("sp_timm_version", __version__)} export',
             f'# from its run record (sp_timm.json). Reproduce it with:  {_launch_prefix(record)} --config {TRAIN_ARGS_FILE}',
             f'# Left out (per machine or display only): {", ".join(TRAIN_ARGS_NOT_WRITTEN)}; add --data-dir DIR for a '
             f'local copy of the data.']
    if (record.get('num_processes') or 1) > 1:
        lines.append(f"# Trained on {record['num_processes']} processes: batch_size is per process (global batch "
                     f"{record.get('global_batch_size')}).")
    if record.get('args_history'):
        lines.append('# The run was resumed with changed flags (--resume-override): these are the values of its last '
                     'epochs; sp_timm.json args_history holds the earlier ones.')
    if unknown:
        lines.append(f'# Flags of the run that this sp-timm train no longer has (left out): {", ".join(unknown)}')
    return '\n'.join(lines) + '\n' + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, allow_unicode=True)


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
             'decay_rate': sched in ('step', 'multistep', 'plateau'), 'warmup_lr': (config.get('warmup_epochs') or 0) > 0,
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
    off = lambda key, value: (value is None or value is False or (isinstance(value, (dict, list)) and not value)
                              or (key in _ZERO_IS_OFF and value == 0))
    rows = [[f"`--{key.replace('_', '-')}`", _format_setting(key, value)] for key, value in config.items()
            if not off(key, value) and _setting_applies(key, config)]
    return rows if rows else [['flags', 'not recorded']]


def _train_command(record: Dict[str, Any]) -> str:
    """The card's command: the run's configuration file, plus --data-dir where the run read a local copy."""
    if not train_config(record)[0]:
        return "# the run record holds no flags of sp-timm train: see sp_timm.json"
    command = f'{_launch_prefix(record)} --config {TRAIN_ARGS_FILE}'
    if (record.get('args') or {}).get('data_dir'):
        command += f" \\\n  --data-dir /path/to/{record.get('dataset')}  # the run read a local copy of the data"
    return command


def _evaluation_context(report: Dict[str, Any]) -> Dict[str, Any]:
    protocol = report['protocol']
    per_class = [dict(c, clean_acc=_fmt(c['clean_acc']), robust_acc=_fmt(c['robust_acc']),
                      train_count=c.get('train_count', ''), group=c.get('group', ''))
                 for c in report.get('per_class', [])] if report.get('long_tailed') else []
    ci = lambda pair: f'[{pair[0]:.2f}, {pair[1]:.2f}]'
    return dict(threat_model=protocol['threat_model'], eps=protocol['eps'], n_examples=protocol['n_examples'],
                attacks=', '.join(protocol.get('attacks', [])), clean_acc=_fmt(report['clean_acc']),
                robust_acc=_fmt(report['robust_acc']), clean_ci=ci(report['clean_ci']), robust_ci=ci(report['robust_ci']),
                balanced_clean_acc=_fmt(report.get('balanced_clean_acc')),
                balanced_robust_acc=_fmt(report.get('balanced_robust_acc')),
                warnings=report.get('warnings', []), unreliable=report.get('unreliable', False), per_class=per_class,
                audit=_audit_context(report.get('audit')))


def _audit_context(audit: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if not isinstance(audit, dict) or audit.get('robust_acc') is None:
        return None
    ci = audit.get('robust_ci')
    return dict(robust_acc=_fmt(audit['robust_acc']), robust_ci=f'[{ci[0]:.2f}, {ci[1]:.2f}]' if ci else '',
                unreliable=bool(audit.get('unreliable')))


def _dataset_config(dataset: str, protocol: Dict[str, Any], args: Dict[str, Any]) -> Tuple[str, str, Optional[Dict[str, Any]]]:
    """(config, name, args) of an evaluation's dataset in the model-index: the sp-timm dataset name, and for the
    -lt variants the training distribution (imbalance ratio and profile) in the config, name and args."""
    _, title = _dataset_info(dataset)
    if not dataset.endswith('-lt'):
        return dataset, title, None
    ratio = protocol.get('imbalance_ratio', args.get('imbalance_ratio'))
    profile = protocol.get('imbalance_profile', args.get('imbalance_profile'))
    if ratio is None or profile is None:
        return dataset, title, None
    ratio = float(ratio)
    return (f'{dataset}-{profile}-r{ratio:g}', f'{title} (imbalance ratio {ratio:g}, {profile} profile)',
            {'imbalance_ratio': ratio, 'imbalance_profile': profile})


def _eval_results(record: Dict[str, Any], reports: Sequence[Dict[str, Any]]) -> list:
    """The model-index entries of the reports: clean, AutoAttack and (when the report has an audit) audited
    robust accuracy in percent, each with the number of test points, threat model, eps and whether it is audited,
    on the dataset config of the run (imbalance ratio and profile for the -lt variants)."""
    from huggingface_hub import EvalResult
    args = record.get('args') if isinstance(record.get('args'), dict) else {}
    results = []
    for report in reports:
        protocol = report['protocol']
        dataset = protocol.get('dataset') or record.get('dataset', 'unknown')
        hub_dataset, _ = _dataset_info(dataset)
        config, dataset_name, dataset_args = _dataset_config(dataset, protocol, args)
        common = dict(task_type='image-classification', dataset_type=hub_dataset or dataset, dataset_name=dataset_name,
                      dataset_config=config, dataset_args=dataset_args, dataset_split=protocol.get('split', 'test'),
                      metric_type='accuracy')
        audit = report.get('audit') if isinstance(report.get('audit'), dict) else None
        audited = bool(audit and audit.get('robust_acc') is not None)
        tm, eps, n = protocol['threat_model'], protocol['eps'], protocol['n_examples']
        context = {'n_examples': n, 'threat_model': tm, 'eps': eps, 'audited': audited}
        clean_name = 'clean accuracy' if len(reports) == 1 else f'clean accuracy ({tm} evaluation, {n} points)'
        results.append(EvalResult(metric_value=round(report['clean_acc'], 2), metric_name=clean_name,
                                  metric_args=dict(context), **common))
        results.append(EvalResult(
            metric_value=round(report['robust_acc'], 2), metric_name=f'AutoAttack accuracy ({tm}, eps={eps})',
            metric_args=dict(context, attack='AutoAttack standard', unreliable=bool(report.get('unreliable'))), **common))
        if audited:
            results.append(EvalResult(
                metric_value=round(audit['robust_acc'], 2), metric_name=f'audited robust accuracy ({tm}, eps={eps})',
                metric_args=dict(context, attack='AutoAttack standard + adaptive audit (sp-timm eval --audit)',
                                 unreliable=bool(audit.get('unreliable'))), **common))
    return results


def _check_license(license: str) -> str:
    if not isinstance(license, str) or not _LICENSE_ID.match(license):
        raise ValueError(f"--license {license!r} is not a Hub licence identifier (lower case, e.g. apache-2.0, mit, "
                         f"cc-by-4.0, other); see the Hub's list of licences.")
    return license


def render_model_card(record: Dict[str, Any], reports: Sequence[Dict[str, Any]] = (), repo_id: Optional[str] = None,
                      folder_name: str = 'model', template: os.PathLike = CARD_TEMPLATE,
                      license: str = DEFAULT_LICENSE) -> str:
    """The model card (markdown with YAML front matter) of a trained model.

    ``record`` is the training run record (``run.json``); ``reports`` are ``sp-timm eval`` reports. The front
    matter's ``model-index`` holds clean, AutoAttack and (where audited) audited robust accuracy (percent) of every
    report with its number of test points, dataset config, threat model and eps; ``license`` is the Hub licence id.
    The training table and command come from the run's configuration (``train_config``, ``train_args.yaml``).
    """
    from huggingface_hub import ModelCard, ModelCardData
    import timm
    from . import __version__
    from .losses import create_loss, is_sp_loss
    dataset = record.get('dataset', 'unknown')
    hub_dataset, dataset_title = _dataset_info(dataset)
    name = default_model_name(record)
    repo_id = repo_id or f'ORG/{name}'
    eval_results = _eval_results(record, reports)
    card_data = ModelCardData(library_name='timm', license=_check_license(license), tags=list(CARD_TAGS), model_name=name,
                              datasets=[hub_dataset] if hub_dataset else None, pipeline_tag='image-classification',
                              eval_results=eval_results or None)
    loss_name = record.get('loss', 'unknown')
    loss_params = record.get('loss_params', {})
    try:
        formula = create_loss(loss_name, **loss_params).formula
    except (ValueError, TypeError, AttributeError):
        formula = 'see sp-timm losses'
    args = record.get('args', {})
    adversarial = None
    if args.get('adv') not in (None, 'none'):
        adversarial = f"{args['adv'].upper()} ({args.get('adv_norm', 'Linf')}, eps {format_eps(args.get('adv_eps'))}, " \
                      f"{args.get('adv_steps')} steps of {format_eps(args.get('adv_step_size'))})"
    model_args = record.get('model_args', {})
    card = ModelCard.from_template(
        card_data, template_path=str(template), model_name=name, architecture=record.get('model'), dataset=dataset,
        dataset_title=dataset_title, loss_name=loss_name, loss_formula=formula, is_sp=is_sp_loss(loss_name),
        loss_params=', '.join(f'{k}={v}' for k, v in loss_params.items()) or 'defaults', adversarial=adversarial,
        sp_timm_version=record.get('sp_timm_version', __version__), timm_version=record.get('timm_version', timm.__version__),
        input_mean=tuple(model_args.get('input_mean') or record.get('input_mean') or ()),
        input_std=tuple(model_args.get('input_std') or record.get('input_std') or ()),
        training_rows=_training_rows(train_config(record)[0]), train_args_file=TRAIN_ARGS_FILE,
        resumed_with_changes=bool(record.get('args_history')), arxiv_id=PAPER_ARXIV_ID, train_counts=record.get('train_class_counts') if dataset.endswith('-lt') else None,
        imbalance_note=f"imbalance ratio {args.get('imbalance_ratio')}, {args.get('imbalance_profile')} profile",
        train_command=_train_command(record), evaluations=[_evaluation_context(r) for r in reports],
        repo_id=repo_id, folder_name=folder_name, ema=record.get('model_ema') if record.get('weights') == 'ema' else None)
    return str(card)


_STAGING_SUFFIX = '.sp-timm-staging'
_OLD_SUFFIX = '.sp-timm-old'


def export_destination(out: os.PathLike) -> Path:
    """``out`` as an absolute path; a symbolic link as the folder it names (the export goes there, the link stays)."""
    out = Path(os.path.abspath(out))
    return Path(os.path.realpath(out)) if out.is_symlink() else out


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``. A previous ``out`` is first moved aside to ``.NAME.sp-timm-old`` and
    removed only after the second rename; a kill between the two leaves ``out`` absent and the previous export
    aside, which ``_recover_interrupted_export`` puts back on the next export."""
    old = None
    if out.exists():
        old = out.with_name(f'.{out.name}{_OLD_SUFFIX}')
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _recover_interrupted_export(out: Path) -> None:
    """Undo what a killed export of ``out`` left beside it (called with the parent folder locked, so no export of it
    is running): with ``out`` absent, the previous export moved aside (``.NAME.sp-timm-old``) is put back; with
    ``out`` present, that folder is the previous export a finished replacement had not removed yet (it was checked
    replaceable before it was moved) and is removed, as are staging folders (``.NAME.XXXXXXXX.sp-timm-staging``,
    ``mkdtemp``'s 8 characters). Only these exact names: another export's folders never match."""
    old = out.with_name(f'.{out.name}{_OLD_SUFFIX}')
    if old.exists() or old.is_symlink():
        if not out.exists() and not out.is_symlink() and old.is_dir() and not old.is_symlink():
            os.replace(old, out)
            print(f"export: '{out}' was left absent by an interrupted export; its previous export is back in place.")
        else:
            _remove(old)
    staging = re.compile(re.escape(f'.{out.name}.') + r'[a-z0-9_]{8}' + re.escape(_STAGING_SUFFIX))
    for path in out.parent.iterdir():
        if staging.fullmatch(path.name):
            _remove(path)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` for the block: exports beside each other run one at a time, and one that
    holds the lock knows every staging or moved-aside folder there is a dead export's. Released by the kernel if the
    process dies. (No locking where ``fcntl`` is missing: Windows.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def export_folder(out: Path, written_by: str, weights_hash: str) -> Iterator[Path]:
    """Build an export of ``out`` in a private folder beside it, given to the block to fill. When the block finishes,
    the folder gets its marker (``written_by``, the weights' hash and every file's SHA-256, so a later export can
    tell the folder was not edited), its files are flushed to disk, ``out`` is checked again (it may have changed
    meanwhile) and replaced by it. If anything fails ``out`` is untouched and the staging folder removed. The parent
    folder is locked throughout (``_locked``), and what a killed export left there is undone first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent):
        _recover_interrupted_export(out)
        with staging_folder(out.parent, out.name, suffix=_STAGING_SUFFIX) as tmp:
            yield tmp
            files = _files_in(tmp)
            for f in files:
                if not (tmp / f).is_symlink():
                    fsync_file(tmp / f)
            atomic_write_json(tmp / EXPORT_MARKER, {'written_by': written_by, 'weights_sha256': weights_hash,
                                                    'files': {f: sha256_file(tmp / f) for f in files}})
            make_shareable(tmp)
            _check_replaceable(out)
            _replace_folder(tmp, out)


def _files_in(folder: Path) -> List[str]:
    """Every file and link under ``folder`` (not following links), as POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_symlink() or not p.is_dir())


def _check_replaceable(out: Path) -> None:
    """Refuse (``CheckpointError``, nothing touched) an ``out`` that export may not replace: anything but an
    absent or empty folder, or an earlier export holding exactly the files its marker lists, unchanged."""
    nothing = 'Nothing was changed; choose a new or empty folder for --out.'
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise CheckpointError(f"--out '{out}' is a file, not a folder. {nothing}")
    if (out / 'last').is_symlink() or (out / 'metrics.jsonl').exists() or (out / 'run.json').exists():
        raise CheckpointError(f"--out '{out}' is a training run or checkpoint folder: export would delete its "
                              f"checkpoints. {nothing}")
    files = _files_in(out)
    if not files:
        return
    if (out / EXPORT_MARKER).is_file():
        written = read_json_object(out / EXPORT_MARKER, 'the export marker').get('files')
        written = written if isinstance(written, dict) else {}
        foreign = [f for f in files if f != EXPORT_MARKER and f not in written]
        changed = [f for f in files if f in written and sha256_file(out / f) != written[f]]
    elif {'config.json', 'sp_timm.json'} <= set(files):  # an export without its marker: edits cannot be told
        raise CheckpointError(f"--out '{out}' holds an export without sp-timm's record of its files ({EXPORT_MARKER}: "
                              f"an export of an early sp-timm, or the record was removed), so export cannot tell "
                              f"whether you edited or added files there. {nothing} Or remove that folder yourself.")
    else:
        foreign, changed = files, []
    if foreign or changed:
        listed = lambda names: ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
        problem = (f'holds files sp-timm export did not write ({listed(foreign)})' if foreign
                   else f'holds export files edited since they were written ({listed(changed)})')
        raise CheckpointError(f"--out '{out}' {problem}; export replaces only an earlier export of its own. {nothing}")


def _read_report(path: os.PathLike, weights: str, source: str) -> Dict[str, Any]:
    """An ``sp-timm eval`` report, checked: its schema, the names that become file names, and that it evaluated
    the weights with SHA-256 ``weights`` (of ``source``)."""
    from .eval.report import LEADERBOARD_FIELDS
    report = read_json_object(path, 'the evaluation report (report.json of sp-timm eval)')
    missing = [k for k in _REPORT_KEYS if k not in report]
    protocol, entry = report.get('protocol'), report.get('leaderboard')
    if not missing and isinstance(protocol, dict) and isinstance(entry, dict):
        missing = [f'protocol.{k}' for k in _PROTOCOL_KEYS if k not in protocol] + \
                  [f'leaderboard.{k}' for k in LEADERBOARD_FIELDS if k not in entry]
    if missing or not isinstance(protocol, dict) or not isinstance(entry, dict):
        raise CheckpointError(f"'{path}' is not a report of sp-timm eval (missing or malformed: "
                              f"{', '.join(missing) or 'protocol / leaderboard'}); give OUT/report.json of sp-timm eval.")
    if protocol.get('threat_model') not in THREAT_MODELS:
        raise CheckpointError(f"'{path}': protocol.threat_model {protocol.get('threat_model')!r} is not one of "
                              f"{', '.join(THREAT_MODELS)}.")
    safe_path_component(entry.get('dataset'), f"'{path}': leaderboard.dataset")
    safe_path_component(report.get('model_name') or entry.get('name'), f"'{path}': model_name")
    model = report.get('model') if isinstance(report.get('model'), dict) else {}
    recorded = model.get('weights_sha256')
    if recorded is None:
        raise CheckpointError(f"'{path}' records no SHA-256 of the weights it evaluated (an older sp-timm eval), so it "
                              f"cannot be matched to '{source}'. Re-run sp-timm eval on '{source}' (it reuses its saved "
                              f"chunks), then export with the new report.json.")
    if recorded != weights:
        raise CheckpointError(f"'{path}' evaluated other weights (SHA-256 {str(recorded)[:12]}...) than '{source}' "
                              f"({weights[:12]}...): its numbers would be published for the wrong model. Give the "
                              f"report of sp-timm eval on this checkpoint.")
    return report


def check_one_report_per_threat_model(paths: Sequence[os.PathLike], reports: Sequence[Dict[str, Any]]) -> None:
    """An export holds one evaluation per threat model (``eval/<threat_model>.json``, one leaderboard entry per
    threat-model folder): two reports of the same one are an error naming both, before anything is written."""
    seen: Dict[str, Tuple[os.PathLike, Dict[str, Any]]] = {}
    for path, report in zip(paths, reports):
        protocol = report['protocol']
        tm = protocol['threat_model']
        if tm in seen:
            what = lambda p: f"{p.get('dataset')}, {tm} eps {p.get('eps')}, {p.get('n_examples')} points"
            raise CheckpointError(
                f"--eval '{seen[tm][0]}' ({what(seen[tm][1])}) and '{path}' ({what(protocol)}) are both {tm} "
                f"evaluations; an export holds one per threat model (eval/{tm}.json and one leaderboard entry), so one "
                f"would overwrite the other. Give the one to publish. Nothing was written.")
        seen[tm] = (path, protocol)


def export_model(source: str, out: os.PathLike, reports: Sequence[os.PathLike] = (), repo_id: Optional[str] = None,
                 license: str = DEFAULT_LICENSE, weights: str = 'auto') -> Path:
    """Write ``source`` (a checkpoint, ``local-dir:`` or ``hf-hub:``) to ``out`` in timm's Hub format with its
    model card (licence ``license``, a Hub licence id), ``train_args.yaml`` (when the run record holds its flags)
    and RobustBench JSONs. The folder is built beside ``out`` and renamed into place when complete; an existing
    ``out`` is replaced only if it is an earlier export (see the module docstring)."""
    from timm.models import save_for_hf
    from . import __version__
    _check_license(license)
    out = export_destination(out)
    _check_replaceable(out)
    model, record = load_model(source, weights=weights)  # auto: the EMA weights of a --model-ema run; record['weights']
    weights = weights_sha256(model)
    loaded = [_read_report(path, weights, source) for path in reports]
    check_one_report_per_threat_model(reports, loaded)
    with export_folder(out, f'sp-timm {__version__} export', weights) as tmp:
        model_config = {'label_names': record['classes']} if record.get('classes') else None
        save_for_hf(model, tmp, model_config=model_config, model_args=record.get('model_args') or None,
                    safe_serialization=True)
        atomic_write_json(tmp / 'sp_timm.json', record)
        if train_config(record)[0]:
            (tmp / TRAIN_ARGS_FILE).write_text(train_args_yaml(record), encoding='utf-8')
        for report in loaded:
            protocol, entry = report['protocol'], report['leaderboard']
            atomic_write_json(tmp / 'eval' / f"{protocol['threat_model']}.json", report)
            atomic_write_json(tmp / 'model_info' / entry['dataset'] / protocol['threat_model'] / f"{report.get('model_name') or entry['name']}.json", entry)
        card = render_model_card(record, loaded, repo_id=repo_id, folder_name=out.name, license=license)
        (tmp / 'README.md').write_text(card, encoding='utf-8')
    return out


def push_folder(folder: os.PathLike, repo_id: str, token: Optional[str] = None, private: bool = False,
                commit_message: str = 'Add SP-loss model (sp-timm export)') -> str:
    """Upload an export folder to the Hub model repo ``repo_id`` (created if needed). Never modifies ``folder``.
    Raises ``HubError`` (naming the fix) with no token, no network or no permission."""
    from huggingface_hub import HfApi, get_token
    folder = Path(folder)
    if not (folder / 'config.json').is_file():
        raise HubError(f"'{folder}' is not an export folder (no config.json); run sp-timm export first.")
    token = token or get_token()
    if not token:
        raise HubError(f"No Hugging Face token: run `hf auth login` or set HF_TOKEN, then push again. "
                       f"The export in '{folder}' is intact.")
    api = HfApi(token=token, library_name='sp-timm')
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=url.repo_id, folder_path=str(folder), commit_message=commit_message,
                                   ignore_patterns=[EXPORT_MARKER])
    except Exception as err:
        raise HubError(f"Pushing '{folder}' to '{repo_id}' failed ({type(err).__name__}: {str(err)[:300]}). "
                       f"Check the network, the token's write access and the repo id; the export in '{folder}' "
                       f"is intact.") from err
    return str(getattr(commit, 'commit_url', commit))
