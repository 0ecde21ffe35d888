""" Checkpoints: written atomically, loaded without pickle, complete enough to rebuild their model.

A training run's output folder::

    OUTPUT/
      epoch-0007/            one complete checkpoint (written as a temporary folder, then renamed)
        model.safetensors    the model's state dict (timm's names; what ``sp-timm export`` publishes)
        training.pt          optimizer, scheduler and AMP scaler state; loaded with ``torch.load(weights_only=True)``
        state.json           epoch, step, best metric, SHA-256 of the two files above
        run.json             the run record: model name and arguments, classes, input normalisation, dataset,
                             loss and its parameters, every training flag, versions
      last -> epoch-0007     symlinks, replaced atomically; folders no link points to are removed
      best -> epoch-0005
      metrics.jsonl          one JSON line per epoch
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

__all__ = [
    'CheckpointError', 'atomic_write_text', 'atomic_write_bytes', 'atomic_write_json', 'save_checkpoint', 'load_state_dict_safely',
    'read_run_record', 'load_training_state', 'default_model_name', 'resolve_checkpoint', 'create_model_from_checkpoint', 'load_model',
    'WEIGHTS_FILE', 'RUN_FILE', 'STATE_FILE', 'TRAINING_FILE',
]

WEIGHTS_FILE = 'model.safetensors'
TRAINING_FILE = 'training.pt'
STATE_FILE = 'state.json'
RUN_FILE = 'run.json'
LINKS = ('last', 'best')
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message says why and what to do."""


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a reader sees the
    old file or the new one, never half of one."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """``atomic_write_text`` for bytes (figures, binary results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        _fsync_write(Path(tmp), data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the rest of a group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def make_shareable(folder: Path) -> None:
    """rwxr-xr-x / rw-r--r-- for a folder made by ``mkdtemp`` (0700) and its files."""
    os.chmod(folder, 0o755)
    for path in folder.rglob('*'):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _replace_link(output: Path, name: str, target: str) -> None:
    tmp = output / f'.{name}.tmp'
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, output / name)


def save_checkpoint(
        output: PathLike,
        epoch: int,
        model_state: Dict[str, torch.Tensor],
        training_state: Dict[str, Any],
        state: Dict[str, Any],
        run_record: Dict[str, Any],
        is_best: bool,
) -> Path:
    """Write ``OUTPUT/epoch-NNNN`` (NNNN = ``epoch``, the epochs completed; complete before it gets its name), point ``last`` (and ``best`` when
    ``is_best``) at it, and remove checkpoint folders no link points to. Returns the new folder."""
    from safetensors.torch import save_file
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    name = f'epoch-{epoch:04d}'
    tmp = Path(tempfile.mkdtemp(prefix=f'.{name}.', suffix='.tmp', dir=output))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / WEIGHTS_FILE))
        torch.save(training_state, tmp / TRAINING_FILE)
        hashes = {f: _sha256(tmp / f) for f in (WEIGHTS_FILE, TRAINING_FILE)}
        _fsync_write(tmp / STATE_FILE, (json.dumps(dict(state, epoch=epoch, sha256=hashes), indent=2) + '\n').encode())
        _fsync_write(tmp / RUN_FILE, (json.dumps(run_record, indent=2) + '\n').encode())
        final = output / name
        if final.exists():  # the same epoch saved again (a resumed run)
            shutil.rmtree(final)
        make_shareable(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_link(output, 'last', name)
    if is_best or not (output / 'best').exists():
        _replace_link(output, 'best', name)
    keep = {os.readlink(output / link) for link in LINKS if (output / link).is_symlink()}
    for old in output.glob('epoch-*'):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: PathLike) -> Path:
    """A checkpoint folder, or a run's output folder (then its ``last`` checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint '{path}' does not exist; give a checkpoint folder (OUTPUT/last, "
                              f"OUTPUT/best) or a training run's --output folder.")
    if (path / 'last').exists() and not (path / RUN_FILE).exists():
        path = path / 'last'
    if not (path / RUN_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"'{path}' is not an sp-timm checkpoint: it needs {RUN_FILE} and {WEIGHTS_FILE} "
                              f"(written by sp-timm train). For a timm Hub folder use 'local-dir:{path}'.")
    return path.resolve()


def _verify_hash(checkpoint: Path, filename: str) -> None:
    state_path = checkpoint / STATE_FILE
    if not state_path.is_file():
        return
    expected = json.loads(state_path.read_text()).get('sha256', {}).get(filename)
    if expected is not None and _sha256(checkpoint / filename) != expected:
        raise CheckpointError(f"'{checkpoint / filename}' does not match the SHA-256 recorded in {STATE_FILE} when it "
                              f"was written: the file was modified or corrupted. Refusing to load it.")


def load_state_dict_safely(path: PathLike) -> Dict[str, torch.Tensor]:
    """Load a state dict without running pickled code: ``.safetensors`` with safetensors, ``.pt`` / ``.pth`` /
    ``.bin`` with ``torch.load(weights_only=True)``. Anything else, or a file that fails those loaders (a
    pickled module, a tampered or truncated file), raises ``CheckpointError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file '{path}' does not exist.")
    if path.suffix == '.safetensors':
        try:
            return load_file(str(path), device='cpu')
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"'{path}' is not a valid safetensors file ({err}); it may be truncated, tampered "
                                  f"with or a renamed pickle. Refusing to load it.") from err
    if path.suffix in ('.pt', '.pth', '.bin'):
        state = _torch_load_safely(path)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"'{path}' holds a {type(state).__name__}, not a state dict of tensors.")
        return state
    raise CheckpointError(f"Refusing '{path}': weights load only from .safetensors (or .pt/.pth/.bin state dicts "
                          f"through torch.load(weights_only=True)).")


def read_run_record(checkpoint: PathLike) -> Dict[str, Any]:
    path = Path(checkpoint) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"Cannot read the run record '{path}' ({err}).") from err


def load_training_state(checkpoint: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], Dict[str, Any]]:
    """``(model_state, training_state, state)`` of a checkpoint folder, every file checked against its hash."""
    checkpoint = Path(checkpoint)
    for filename in (WEIGHTS_FILE, TRAINING_FILE, STATE_FILE):
        if not (checkpoint / filename).is_file():
            raise CheckpointError(f"'{checkpoint}' is incomplete: {filename} is missing. Resume from another checkpoint.")
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{checkpoint / STATE_FILE}' is corrupt ({err}).") from err
    for filename in (WEIGHTS_FILE, TRAINING_FILE):
        _verify_hash(checkpoint, filename)
    training_state = _torch_load_safely(checkpoint / TRAINING_FILE)
    return load_state_dict_safely(checkpoint / WEIGHTS_FILE), training_state, state


def _torch_load_safely(path: Path) -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` of a nested state (optimizer, scheduler), as ``CheckpointError`` on failure."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Refusing '{path}': it does not load with torch.load(weights_only=True) ({type(err).__name__}). "
                              f"A pickled model or code object can run arbitrary code; save a state dict with "
                              f"safetensors instead.") from err


def create_model_from_checkpoint(checkpoint: PathLike) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild the model of an sp-timm checkpoint from its run record alone and load its weights (strict)."""
    import timm
    checkpoint = resolve_checkpoint(checkpoint)
    record = read_run_record(checkpoint)
    _verify_hash(checkpoint, WEIGHTS_FILE)
    model = timm.create_model(record['model'], pretrained=False, **record.get('model_args', {}))
    _load_strict(model, load_state_dict_safely(checkpoint / WEIGHTS_FILE), checkpoint)
    return model.eval(), record


def _load_strict(model: torch.nn.Module, state: Dict[str, torch.Tensor], origin: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(f"The weights in '{origin}' do not fit the model {type(model).__name__}: "
                              f"{' '.join(first[:3])[:600]}") from err


def _check_hub_folder(folder: Path) -> None:
    """Validate the weights timm would load from a Hub-format folder before timm touches them."""
    if not (folder / 'config.json').is_file():
        raise CheckpointError(f"'{folder}' has no config.json: it is not a timm Hub folder (sp-timm export writes one).")
    candidates = [folder / WEIGHTS_FILE] + sorted(folder.glob('*.safetensors')) + sorted(folder.glob('*.bin')) \
        + sorted(folder.glob('*.pth'))
    existing = [c for c in candidates if c.is_file()]
    if not existing:
        raise CheckpointError(f"'{folder}' holds no weights file (model.safetensors).")
    load_state_dict_safely(existing[0])


def load_model(source: str) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The model to evaluate or export, from

    - an sp-timm checkpoint folder or a run's output folder (rebuilt from ``run.json``);
    - ``local-dir:DIR`` or ``hf-hub:ORG/NAME``: timm's Hub format, through ``timm.create_model(source, pretrained=True)``
      after checking that its weights load without pickle.

    Returns the model in eval mode and a record (the run record, or what the Hub config says).
    """
    import timm
    if source.startswith('local-dir:'):
        folder = Path(source[len('local-dir:'):])
        _check_hub_folder(folder)
        record = _hub_record(folder)
    elif source.startswith('hf-hub:'):
        from huggingface_hub import snapshot_download
        try:
            folder = Path(snapshot_download(source[len('hf-hub:'):], allow_patterns=['*.json', '*.safetensors', '*.md']))
        except Exception as err:
            raise CheckpointError(f"Cannot fetch '{source}' from the Hub ({type(err).__name__}: {err}). Offline, "
                                  f"download it elsewhere and use 'local-dir:DIR'.") from err
        _check_hub_folder(folder)
        record = _hub_record(folder)
    else:
        return create_model_from_checkpoint(source)
    model = timm.create_model(source, pretrained=True)
    return model.eval(), record


def default_model_name(record: Dict[str, Any]) -> str:
    """The name a trained model goes by in cards and leaderboard files: ``<model>-<dataset>-<loss>``."""
    return record.get('name') or f"{record.get('model')}-{record.get('dataset')}-{record.get('loss')}"


def _hub_record(folder: Path) -> Dict[str, Any]:
    """The run record an export stores beside timm's config, or the little timm's config itself says."""
    exported = folder / 'sp_timm.json'
    if exported.is_file():
        return json.loads(exported.read_text())
    config = json.loads((folder / 'config.json').read_text())
    return {'model': config.get('architecture'), 'model_args': config.get('model_args', {}),
            'num_classes': config.get('num_classes'), 'classes': config.get('label_names')}
