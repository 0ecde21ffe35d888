""" Where a model to evaluate or export comes from: an sp-timm checkpoint (rebuilt from its run record), a timm Hub
folder written by ``sp-timm export`` (``local-dir:DIR``) or the Hub (``hf-hub:ORG/NAME``). Weights load only from
verified safetensors files, strictly; ``timm.create_model`` arguments that could load other files are refused.
"""
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from .checkpoint import (EMA_FILE, RUN_FILE, WEIGHTS_FILE, has_ema_weights, load_ema_state, load_state_dict_safely,
                         read_run_record, resolve_checkpoint, verify_hash)
from .errors import CheckpointError
from .files import EXPORT_MARKER, PathLike, read_json_object, safe_path_component, sha256_file
from .records import ModelInfo, RunRecord, read_export_record_json

__all__ = ['WEIGHT_CHOICES', 'EXPORT_RECORD_FILE', 'check_weights_choice', 'create_model_from_checkpoint',
           'run_model_info', 'check_model_args', 'load_model', 'default_model_name']

EXPORT_RECORD_FILE = 'sp_timm.json'  # an export's ExportRecord, beside timm's config.json


WEIGHT_CHOICES = ('auto', 'ema', 'raw')


def check_weights_choice(weights: str) -> None:
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}.")


def create_model_from_checkpoint(checkpoint: PathLike, weights: str = 'auto') -> Tuple[torch.nn.Module, ModelInfo]:
    """Rebuild the model of an sp-timm checkpoint from its run record alone and load its weights (strict).

    ``weights``: ``auto`` (default) loads the EMA weights (``model_ema.safetensors``, ``--model-ema``) when the
    checkpoint has them and the raw (trained) weights otherwise; ``ema`` requires the EMA weights; ``raw`` always
    loads ``model.safetensors``. The returned ``ModelInfo`` says which (``weights``: ``'ema'`` or ``'raw'``) and
    holds the run record."""
    check_weights_choice(weights)
    source = str(checkpoint)
    checkpoint = resolve_checkpoint(checkpoint)
    verify_hash(checkpoint, RUN_FILE)
    record = read_run_record(checkpoint)
    info = run_model_info(record, source, 'raw')
    use = 'ema' if weights == 'ema' or (weights == 'auto' and has_ema_weights(checkpoint)) else 'raw'
    if use == 'ema':
        state, origin = load_ema_state(checkpoint), checkpoint / EMA_FILE
        if state is None:
            raise CheckpointError(f"'{checkpoint}' has no EMA weights (trained without --model-ema); load its raw "
                                  f"weights (--weights raw, or auto).")
    else:
        verify_hash(checkpoint, WEIGHTS_FILE)
        state, origin = load_state_dict_safely(checkpoint / WEIGHTS_FILE), checkpoint
    model = _create_checked(record.model, record.model_args, checkpoint / RUN_FILE)
    _load_strict(model, state, origin)
    return model.eval(), replace(info, weights=use)


def run_model_info(record: RunRecord, source: str, weights: str) -> ModelInfo:
    """``ModelInfo`` of a model whose run record is known; a record naming a loss the factories cannot rebuild
    (an unknown name, parameters it does not take) is refused here, before any work."""
    from .losses import check_recorded_loss
    try:
        check_recorded_loss(record.loss, record.loss_params)
    except ValueError as err:
        raise CheckpointError(f"The run record of '{source}' names a loss sp-timm cannot rebuild ({err}); it was "
                              "edited or written by another tool.") from err
    return ModelInfo(source=source, weights=weights, architecture=record.model, model_args=record.model_args,
                     num_classes=record.num_classes, classes=record.classes, run=record)


_FILE_ARGS = ('checkpoint_path', 'pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'pretrained_model_args',
              'pretrained_strict', 'cache_dir')


_FILE_WORDS = ('path', 'file', 'dir', 'url', 'filename', 'checkpoint')  # as a name, or its last word (weights_file)


def check_model_args(model_name: Any, model_args: Any, origin: str) -> Dict[str, Any]:
    """``model_args`` if they are plain ``timm.create_model`` arguments of ``model_name``: a mapping whose names
    and values name no file (no ``checkpoint_path``, ``pretrained_cfg``, ``*_path``, no value with a path
    separator) and that the model accepts (checked by building it on the meta device). Raises ``CheckpointError``
    naming ``origin`` (the file or flag they came from) otherwise."""
    import timm
    from timm.models import parse_model_name
    if not isinstance(model_name, str) or not model_name:
        raise CheckpointError(f"{origin}: the model name {model_name!r} is not a timm model name.")
    source, _ = parse_model_name(model_name)
    if source in ('local-dir', 'hf-hub'):
        raise CheckpointError(f"{origin}: the model name '{model_name}' points at a "
                              f"{'folder' if source == 'local-dir' else 'Hub repository'}; a record or config must "
                              "name a registered timm architecture (e.g. resnet32_cifar), never another model to load.")
    if not timm.is_model(model_name):
        raise CheckpointError(f"{origin}: '{model_name}' is not a registered timm architecture (timm.list_models(); "
                              f"sp-timm's CIFAR models register on `import sp_timm`).")
    if not isinstance(model_args, dict) or not all(isinstance(k, str) for k in model_args):
        raise CheckpointError(f"{origin}: model_args must be a mapping of argument names to values, got "
                              f"{type(model_args).__name__}.")
    named = sorted(k for k, v in model_args.items() if k in _FILE_ARGS or k.lower().rsplit('_', 1)[-1] in _FILE_WORDS
                   or (isinstance(v, str) and ('/' in v or '\\' in v)))
    if named:
        raise CheckpointError(f"{origin}: model_args may not name files or weights ({', '.join(named)}); weights load "
                              f"only from the verified model.safetensors. Remove them.")
    if source is None:
        if not timm.is_model(model_name):
            raise CheckpointError(f"{origin}: '{model_name}' is not a timm model (import sp_timm registers the CIFAR "
                                  f"networks; timm.list_models() lists the rest).")
        try:
            with torch.device('meta'):
                timm.create_model(model_name, pretrained=False, **model_args)
        except (TypeError, ValueError, AssertionError, KeyError) as err:
            raise CheckpointError(f"{origin}: {model_name} does not accept model_args {sorted(model_args)} "
                                  f"({type(err).__name__}: {str(err)[:200]}).") from err
    return model_args


def _create_checked(model_name: Any, model_args: Any, origin: PathLike) -> torch.nn.Module:
    """``timm.create_model(model_name, pretrained=False, **model_args)`` after ``check_model_args``."""
    import timm
    check_model_args(model_name, model_args, str(origin))
    return timm.create_model(model_name, pretrained=False, **model_args)


def _load_strict(model: torch.nn.Module, state: Dict[str, torch.Tensor], origin: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(f"The weights in '{origin}' do not fit the model {type(model).__name__}: "
                              f"{' '.join(first[:3])[:600]}") from err


def _load_hub_folder(folder: Path) -> torch.nn.Module:
    """The model of a timm Hub-format folder: the architecture and ``model_args`` of its ``config.json`` (checked
    by ``check_model_args``) and the weights of exactly its ``model.safetensors``, loaded strictly. timm's own
    ``pretrained=True`` path is not used: it could pick another file (a pickled ``pytorch_model.bin``)."""
    if not (folder / 'config.json').is_file():
        raise CheckpointError(f"'{folder}' has no config.json: it is not a timm Hub folder (sp-timm export writes "
                              f"one).")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"'{folder}' holds no {WEIGHTS_FILE}; sp-timm loads a Hub folder's weights only from "
                              "that file, never from a pickle (pytorch_model.bin, *.pth). Convert them to "
                              "safetensors.")
    config = read_json_object(folder / 'config.json', "a timm model config")
    model_args = config.get('model_args') or {}
    if isinstance(model_args, dict) and config.get('num_classes') is not None:
        model_args = dict({'num_classes': config['num_classes']}, **model_args)
    state = load_state_dict_safely(weights)
    model = _create_checked(config.get('architecture'), model_args, folder / 'config.json')
    _load_strict(model, state, weights)
    return model


def _check_export_unchanged(folder: Path) -> None:
    """A folder sp-timm export wrote (its marker lists every file's SHA-256) whose weights or export record
    changed since is refused: its ``sp_timm.json`` (loss, name, run) and card would describe other weights, and a
    re-export would publish them under the old record. Folders without the marker (the Hub's, a user's) pass."""
    marker = folder / EXPORT_MARKER
    if not marker.is_file():
        return
    written = read_json_object(marker, 'the export marker').get('files')
    written = written if isinstance(written, dict) else {}
    for name in (WEIGHTS_FILE, EXPORT_RECORD_FILE):  # config.json edits meet check_model_args
        if name in written and (folder / name).is_file() and sha256_file(folder / name) != written[name]:
            raise CheckpointError(f"'{folder / name}' was changed after sp-timm export wrote this folder (its SHA-256 "
                                  f"differs from the one recorded in {EXPORT_MARKER}): the folder's record and card "
                                  f"describe other weights. Export again from the checkpoint; or, to load it as a "
                                  f"plain timm folder, remove {EXPORT_RECORD_FILE} and {EXPORT_MARKER}.")


def load_model(source: str, weights: str = 'auto') -> Tuple[torch.nn.Module, ModelInfo]:
    """The model to evaluate or export, from

    - an sp-timm checkpoint folder or a run's output folder (rebuilt from ``run.json``);
    - ``local-dir:DIR`` or ``hf-hub:ORG/NAME``: timm's Hub format: the architecture its ``config.json`` names,
      with the weights of exactly its ``model.safetensors`` (never a pickle timm might prefer).

    ``weights`` (``auto``, ``ema``, ``raw``): for a checkpoint, see ``create_model_from_checkpoint`` (``auto``: the
    EMA weights when present). A Hub folder holds one set, the one its export chose (``sp_timm.json``'s ``weights``);
    asking for the other is an error. Returns the model in eval mode and its ``ModelInfo`` (the run record when the
    folder has one; ``weights`` says which weights were loaded, ``'ema'`` or ``'raw'``).
    """
    check_weights_choice(weights)
    if not source.startswith(('local-dir:', 'hf-hub:')):
        return create_model_from_checkpoint(source, weights)
    if source.startswith('local-dir:'):
        folder = Path(source[len('local-dir:'):])
        if not folder.is_dir():
            raise CheckpointError(f"'{folder}' is not a folder; local-dir: needs a folder written by sp-timm export.")
    else:
        from huggingface_hub import snapshot_download
        try:
            folder = Path(snapshot_download(source[len('hf-hub:'):], allow_patterns=['*.json', '*.safetensors',
                                                                                     '*.md']))
        except Exception as err:
            raise CheckpointError(f"Cannot fetch '{source}' from the Hub ({type(err).__name__}: {err}). Offline, "
                                  f"download it elsewhere and use 'local-dir:DIR'.") from err
    _check_export_unchanged(folder)
    info = _hub_model_info(folder, source)
    model = _load_hub_folder(folder)
    if weights not in ('auto', info.weights):
        fix = ('export them with sp-timm export --weights raw' if info.weights == 'ema' else 'the run had no '
                                                                                             '--model-ema, or export '
                                                                                             'its EMA weights with '
                                                                                             'sp-timm export '
                                                                                             '--weights ema')
        raise CheckpointError(f"'{source}' holds the {info.weights} weights of its run only, not the {weights} ones; "
                              f"{fix}.")
    return model.eval(), info


def default_model_name(info: ModelInfo) -> str:
    """The name a trained model goes by in cards and leaderboard files: the name its source gives it (which must be
    a single safe file name, see ``safe_path_component``), else ``<model>-<dataset>-<loss>`` with path separators
    and ``:`` of the model name (``hf-hub:org/name``) replaced by ``_``."""
    if info.name:
        return safe_path_component(info.name, "the record's name")
    loss = info.run.loss if info.run is not None else None
    derived = f"{info.architecture}-{info.dataset}-{loss}"
    return safe_path_component(''.join('_' if c in '/\\:' else c for c in derived), 'the model name')


def _hub_model_info(folder: Path, source: str) -> ModelInfo:
    """What an export's ``sp_timm.json`` (the run record and which weights) and timm's ``config.json`` say."""
    config = read_json_object(folder / 'config.json', 'a timm model config')
    exported = folder / EXPORT_RECORD_FILE
    record = (read_export_record_json(read_json_object(exported, 'the sp-timm export record'), str(exported))
              if exported.is_file() else None)
    weights = record.weights if record is not None else 'raw'
    if record is not None and record.run is not None:
        _check_config_matches(config, record.run.model, record.run.num_classes, folder)
        return run_model_info(record.run, source, weights)
    num_classes, classes = config.get('num_classes'), config.get('label_names')
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 1):
        raise CheckpointError(f"'{folder / 'config.json'}': num_classes must be a whole number >= 1, got "
                              f"{num_classes!r}.")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
                                or (num_classes is not None and len(classes) != num_classes)):
        raise CheckpointError(f"'{folder / 'config.json'}': label_names must be a list of {num_classes} strings (one "
                              f"per class), got {str(classes)[:80]}.")
    return ModelInfo(source=source, weights=weights, architecture=config.get('architecture'),
                     model_args=config.get('model_args') or {}, num_classes=num_classes, classes=classes)


def _check_config_matches(config: Dict[str, Any], architecture: str, num_classes: int, folder: Path) -> None:
    """An export's ``config.json`` (what builds the model) and its ``sp_timm.json`` (what describes it) agree."""
    from timm.models import split_model_name_tag
    built = (config.get('architecture'), config.get('num_classes', num_classes))
    untagged = split_model_name_tag(str(built[0]))[0], split_model_name_tag(architecture)[0]
    if untagged[0] != untagged[1] or built[1] != num_classes:  # timm writes the name without its tag
        raise CheckpointError(f"'{folder}': config.json builds {built[0]!r} with {built[1]!r} classes, but "
                              f"{EXPORT_RECORD_FILE} records {architecture!r} with {num_classes}: the folder was "
                              "edited. Export it again from the checkpoint.")
