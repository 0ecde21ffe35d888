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

Nothing in the folder names a path of the machine that made it (``public_record``): the records' paths (the run's
output, resume, config and data folders, the evaluated checkpoint, a local data source, any absolute path in their
text) are written as ``<local path>/NAME``, their last component only.
"""
import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, TypeVar

from ..checkpoint import weights_sha256
from ..data import dataset_spec
from ..data.sources import DATASETS
from ..errors import CheckpointError, HubError, RecordError
from ..files import (LOCAL_PATH, atomic_write_json, public_path, public_source, public_text, read_json_object,
                     safe_path_component)
from ..model_source import EXPORT_RECORD_FILE, load_model
from ..records import EvalReport, ExportRecord, FlagChange, Protocol, RunRecord, read_report_json, to_json
from ..threat.budget import THREAT_MODELS
from .card import DEFAULT_LICENSE, TRAIN_ARGS_FILE, check_license, render_model_card, train_args_yaml, train_config
from .folder import EXPORT_MARKER, check_replaceable, export_destination, export_folder

__all__ = ['export_model', 'push_folder', 'read_report', 'check_one_report_per_threat_model', 'public_record',
           'public_path', 'LOCAL_PATH']

# TrainConfig fields holding paths of the machine that trained (also as keys of a resume's earlier flags)
_PATH_FLAGS = ('config', 'output', 'resume', 'data_dir')
# where data comes from when it is not a local folder: the Hub datasets and scikit-learn's digits
_PUBLIC_DATA_SOURCES = {spec.hub_id for spec in DATASETS.values() if spec.hub_id} | {'sklearn.datasets.load_digits'}

T = TypeVar('T')


def _public_text(value: Any) -> Any:
    """``value`` (a record, or anything inside one) with every absolute path in its strings made ``public_path``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _public_text(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_public_text(v) for v in value)
    if isinstance(value, dict):
        return {k: _public_text(v) for k, v in value.items()}
    return value


def _public_flags(flags: Dict[str, Any]) -> Dict[str, Any]:
    return {k: public_path(v) if k in _PATH_FLAGS and isinstance(v, str) and v else v for k, v in flags.items()}


def _public_data_source(source: str) -> str:
    """A data source (``DIR [note] [note]``, see ``ImageData.subset``) with a local folder made ``public_path``."""
    head, sep, notes = source.partition(' [')
    return source if head in _PUBLIC_DATA_SOURCES or not head else public_path(head) + sep + notes


def public_record(record: T) -> T:
    """A ``RunRecord``, ``ExportRecord`` or ``EvalReport`` as an export writes it: the same record with no path of this
    machine in it (the run's output, resume, config and data folders, a local data source, the evaluated checkpoint
    and any other absolute path in its text as ``public_path``)."""
    if isinstance(record, ExportRecord):
        return dataclasses.replace(record, run=public_record(record.run) if record.run is not None else None)
    if isinstance(record, RunRecord):
        config = (dataclasses.replace(record.config, **_public_flags(
            {k: getattr(record.config, k) for k in _PATH_FLAGS})) if record.config is not None else None)
        history = ([FlagChange(change.until_epoch, _public_flags(change.args)) for change in record.args_history]
                   if record.args_history is not None else None)
        record = dataclasses.replace(record, config=config, data_source=_public_data_source(record.data_source),
                                     args_history=history)
    elif isinstance(record, EvalReport):
        protocol, model = record.protocol, record.model
        record = dataclasses.replace(
            record, protocol=dataclasses.replace(protocol, data_source=_public_data_source(protocol.data_source)),
            model=dataclasses.replace(model, source=public_source(model.source)))
    return _public_text(record)


def read_report(path: os.PathLike, weights: str, source: str) -> EvalReport:
    """An ``sp-timm eval`` report, checked: every field (``records.EvalReport``), the names that become file names,
    and that it evaluated the weights with SHA-256 ``weights`` (of ``source``)."""
    data = read_json_object(path, 'the evaluation report (report.json of sp-timm eval)')
    try:
        report = read_report_json(data, str(path))
    except RecordError as err:
        raise CheckpointError(f"'{path}' is not a report of sp-timm eval ({err}); give OUT/report.json of sp-timm "
                              f"eval.") from err
    if report.protocol.threat_model not in THREAT_MODELS:
        raise CheckpointError(f"'{path}': protocol.threat_model {report.protocol.threat_model!r} is not one of "
                              f"{', '.join(THREAT_MODELS)}.")
    safe_path_component(report.protocol.dataset, f"'{path}': protocol.dataset")
    if report.leaderboard is not None:
        safe_path_component(report.leaderboard.dataset, f"'{path}': leaderboard.dataset")
    safe_path_component(report.model_name or (report.leaderboard.name if report.leaderboard else 'model'),
                        f"'{path}': model_name")
    recorded = report.model.weights_sha256
    if recorded is None:
        raise CheckpointError(f"'{path}' records no SHA-256 of the weights it evaluated (an older sp-timm eval), so it "
                              f"cannot be matched to '{source}'. Re-run sp-timm eval on '{source}' (it reuses its "
                              "saved chunks), then export with the new report.json.")
    if recorded != weights:
        raise CheckpointError(f"'{path}' evaluated other weights (SHA-256 {str(recorded)[:12]}...) than '{source}' "
                              f"({weights[:12]}...): its numbers would be published for the wrong model. Give the "
                              f"report of sp-timm eval on this checkpoint.")
    return report


def check_one_report_per_threat_model(paths: Sequence[os.PathLike], reports: Sequence[EvalReport]) -> None:
    """An export holds one evaluation per threat model (``eval/<threat_model>.json``, one leaderboard entry per
    threat-model folder): two reports of the same one are an error naming both, before anything is written."""
    seen: Dict[str, Tuple[os.PathLike, Protocol]] = {}
    for path, report in zip(paths, reports):
        protocol = report.protocol
        tm = protocol.threat_model
        if tm in seen:
            def what(p):
                return f"{p.dataset}, {tm} eps {p.eps}, {p.n_examples} points"
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
    from ..version import __version__
    check_license(license)
    out = export_destination(out)
    check_replaceable(out)
    model, info = load_model(source, weights=weights)  # auto: the EMA weights of a --model-ema run; info.weights
    weights = weights_sha256(model)
    loaded = [read_report(path, weights, source) for path in reports]
    check_one_report_per_threat_model(reports, loaded)
    if info.run is not None:
        model.pretrained_cfg = trained_pretrained_cfg(model.pretrained_cfg, info.run)
        info = dataclasses.replace(info, run=public_record(info.run))
    loaded = [public_record(report) for report in loaded]
    with export_folder(out, f'sp-timm {__version__} export', weights) as tmp:
        model_config = {'label_names': info.classes} if info.classes else None
        save_for_hf(model, tmp, model_config=model_config, model_args=info.model_args or None, safe_serialization=True)
        atomic_write_json(tmp / EXPORT_RECORD_FILE, to_json(ExportRecord(weights=info.weights or 'raw', run=info.run)))
        if train_config(info.run)[0]:
            (tmp / TRAIN_ARGS_FILE).write_text(train_args_yaml(info), encoding='utf-8')
        for report in loaded:
            tm, entry = report.protocol.threat_model, report.leaderboard
            atomic_write_json(tmp / 'eval' / f'{tm}.json', to_json(report))
            if entry is not None:  # the fast / rand protocols and class-count adaptations have no leaderboard entry
                atomic_write_json(tmp / 'model_info' / entry.dataset / tm / f'{report.model_name or entry.name}.json',
                                  to_json(entry))
        card = render_model_card(info, loaded, repo_id=repo_id, folder_name=out.name, license=license)
        (tmp / 'README.md').write_text(card, encoding='utf-8')
    return out


# the keys of a timm pretrained cfg that describe the architecture, not the weights it was published with
_ARCHITECTURE_KEYS = ('architecture', 'first_conv', 'classifier', 'fixed_input_size', 'pool_size')


def trained_pretrained_cfg(cfg: Dict, run: RunRecord) -> Dict:
    """The pretrained cfg an export of a run publishes: timm's data pipeline (``resolve_model_data_config`` +
    ``create_transform``) must feed what the run trained on, images of the dataset's size with pixels in [0, 1]
    (mean 0, std 1: a CIFAR network normalises inside, any other model was trained on [0, 1] pixels), resized
    without a crop. ``cfg`` is returned as it is when it already says so (sp-timm's CIFAR networks); else only its
    architecture keys are kept, so a plain timm model does not publish the ImageNet preprocessing, tag, paper and
    licence of weights it never used."""
    channels, height, width = dataset_spec(run.dataset).image_shape
    data = dict(input_size=(channels, height, width), mean=(0.0,) * channels, std=(1.0,) * channels, crop_pct=1.0,
                crop_mode='center', interpolation='bilinear', num_classes=run.num_classes)
    if all(tuple(cfg.get(k) or ()) == data[k] for k in ('input_size', 'mean', 'std')) and cfg.get('crop_pct') == 1:
        return cfg
    kept = {k: cfg[k] for k in _ARCHITECTURE_KEYS if k in cfg}
    if tuple(cfg.get('input_size', ())) != data['input_size']:
        kept['pool_size'] = None  # the feature map of another input size
    return dict(kept, url='', **data)


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
