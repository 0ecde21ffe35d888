""" Export in timm's Hub format (timm's own ``save_for_hf``: ``config.json`` + ``model.safetensors``), with a
model card rendered from ``model_cards/template.md`` and the RobustBench JSON of each evaluation, and push
with huggingface_hub.

An export folder::

    DIR/
      config.json, model.safetensors        timm's format: timm.create_model('local-dir:DIR', pretrained=True)
      sp_timm.json                          the training run record (loss and its parameters, dataset, flags)
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
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence

from .checkpoint import (CheckpointError, atomic_write_json, default_model_name, load_model, make_shareable,
                         read_json_object, safe_path_component, sha256_file, weights_sha256)
from .eval.budget import THREAT_MODELS, format_eps

__all__ = ['export_model', 'render_model_card', 'push_folder', 'HubError', 'CARD_TEMPLATE', 'DATASET_CARD_INFO',
           'EXPORT_MARKER']

CARD_TEMPLATE = Path(__file__).parent / 'templates' / 'model_card.md'
EXPORT_MARKER = '.sp-timm-export.json'
# what an export wrote before it had a marker (sp-timm 0.1.0): such a folder is still recognised as an export
_LEGACY_EXPORT_FILES = ('config.json', 'model.safetensors', 'sp_timm.json', 'README.md', 'eval/*.json',
                        'model_info/*/*/*.json')
_REPORT_KEYS = ('protocol', 'leaderboard', 'clean_acc', 'robust_acc', 'clean_ci', 'robust_ci')
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


def _training_rows(args: Dict[str, Any]) -> List[List[str]]:
    keys = ('epochs', 'batch_size', 'opt', 'lr', 'momentum', 'weight_decay', 'sched', 'warmup_epochs', 'smoothing',
            'mixup', 'cutmix', 'amp', 'seed', 'adv', 'adv_eps', 'adv_steps', 'adv_step_size', 'adv_norm',
            'adv_loss', 'trades_beta')
    adversarial = args.get('adv') not in (None, 'none')
    rows = [[k.replace('_', '-'), format_eps(args[k])] for k in keys
            if k in args and args[k] not in (None, '', False) and (adversarial or not k.startswith(('adv_', 'trades')))]
    return rows if rows else [['flags', 'not recorded']]


def _train_command(record: Dict[str, Any]) -> str:
    args = record.get('args', {})
    flags = ['sp-timm train', f"--model {record.get('model')}", f"--dataset {record.get('dataset')}",
             f"--loss {record.get('loss')}"]
    flags += [f"--sp-{k} {v}" for k, v in record.get('loss_params', {}).items()]
    for key in ('epochs', 'batch_size', 'lr', 'weight_decay', 'smoothing', 'seed', 'adv', 'adv_eps', 'adv_steps',
                'adv_step_size'):
        if args.get(key) not in (None, '', False, 'none'):
            flags.append(f"--{key.replace('_', '-')} {args[key]}")
    return ' \\\n  '.join(flags)


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
                warnings=report.get('warnings', []), unreliable=report.get('unreliable', False), per_class=per_class)


def render_model_card(record: Dict[str, Any], reports: Sequence[Dict[str, Any]] = (), repo_id: Optional[str] = None,
                      folder_name: str = 'model', template: os.PathLike = CARD_TEMPLATE) -> str:
    """The model card (markdown with YAML front matter) of a trained model.

    ``record`` is the training run record (``run.json``); ``reports`` are ``sp-timm eval`` reports. The front
    matter's ``model-index`` holds clean and AutoAttack accuracy (percent) of every report.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    import timm
    from . import __version__
    from .losses import create_loss, is_sp_loss
    dataset = record.get('dataset', 'unknown')
    hub_dataset, dataset_title = _dataset_info(dataset)
    name = default_model_name(record)
    repo_id = repo_id or f'ORG/{name}'
    eval_results = []
    for report in reports:
        protocol = report['protocol']
        common = dict(task_type='image-classification', dataset_type=hub_dataset or dataset, dataset_name=dataset_title,
                      dataset_split='test', metric_type='accuracy')
        eval_results.append(EvalResult(metric_value=round(report['clean_acc'], 2), metric_name='clean accuracy', **common))
        eval_results.append(EvalResult(
            metric_value=round(report['robust_acc'], 2), metric_args={'threat_model': protocol['threat_model'], 'eps': protocol['eps']},
            metric_name=f"AutoAttack accuracy ({protocol['threat_model']}, eps={protocol['eps']})", **common))
    card_data = ModelCardData(library_name='timm', license='apache-2.0', tags=list(CARD_TAGS), model_name=name,
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
        training_rows=_training_rows(args), train_counts=record.get('train_class_counts') if dataset.endswith('-lt') else None,
        imbalance_note=f"imbalance ratio {args.get('imbalance_ratio')}, {args.get('imbalance_profile')} profile",
        train_command=_train_command(record), evaluations=[_evaluation_context(r) for r in reports],
        repo_id=repo_id, folder_name=folder_name)
    return str(card)


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; a previous ``out`` is removed only after that succeeded."""
    old = None
    if out.exists():
        old = out.with_name(f'.{out.name}.old-{os.getpid()}')
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    else:  # an export written before the marker existed, or someone else's folder
        is_ours = lambda f: any(len(PurePosixPath(f).parts) == len(PurePosixPath(p).parts) and PurePosixPath(f).match(p)
                                for p in _LEGACY_EXPORT_FILES)
        foreign = [f for f in files if not is_ours(f)] if {'config.json', 'sp_timm.json'} <= set(files) else files
        changed = []
    if foreign or changed:
        listed = lambda names: ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
        problem = (f'holds files sp-timm export did not write ({listed(foreign)})' if foreign
                   else f'holds export files edited since they were written ({listed(changed)})')
        raise CheckpointError(f"--out '{out}' {problem}; export replaces only an earlier export of its own. {nothing}")


def _read_report(path: os.PathLike, weights: str, source: str) -> Dict[str, Any]:
    """An ``sp-timm eval`` report, checked: its schema, the names that become file names, and that it evaluated
    the weights with SHA-256 ``weights`` (of ``source``)."""
    report = read_json_object(path, 'the evaluation report (report.json of sp-timm eval)')
    missing = [k for k in _REPORT_KEYS if k not in report]
    protocol, entry = report.get('protocol'), report.get('leaderboard')
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


def export_model(source: str, out: os.PathLike, reports: Sequence[os.PathLike] = (), repo_id: Optional[str] = None) -> Path:
    """Write ``source`` (a checkpoint, ``local-dir:`` or ``hf-hub:``) to ``out`` in timm's Hub format with its
    model card and RobustBench JSONs. The folder is built beside ``out`` and renamed into place when complete;
    an existing ``out`` is replaced only if it is an earlier export (see the module docstring)."""
    from timm.models import save_for_hf
    from . import __version__
    out = Path(os.path.abspath(out))
    _check_replaceable(out)
    model, record = load_model(source)
    weights = weights_sha256(model)
    loaded = [_read_report(path, weights, source) for path in reports]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
    try:
        model_config = {'label_names': record['classes']} if record.get('classes') else None
        save_for_hf(model, tmp, model_config=model_config, model_args=record.get('model_args') or None,
                    safe_serialization=True)
        atomic_write_json(tmp / 'sp_timm.json', record)
        for report in loaded:
            protocol, entry = report['protocol'], report['leaderboard']
            atomic_write_json(tmp / 'eval' / f"{protocol['threat_model']}.json", report)
            atomic_write_json(tmp / 'model_info' / entry['dataset'] / protocol['threat_model'] / f"{report.get('model_name') or entry['name']}.json", entry)
        card = render_model_card(record, loaded, repo_id=repo_id, folder_name=out.name)
        (tmp / 'README.md').write_text(card, encoding='utf-8')
        atomic_write_json(tmp / EXPORT_MARKER, {'written_by': f'sp-timm {__version__} export', 'weights_sha256': weights,
                                                'files': {f: sha256_file(tmp / f) for f in _files_in(tmp)}})
        make_shareable(tmp)
        _check_replaceable(out)  # again: it may have changed while the export was built
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
