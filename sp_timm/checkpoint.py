""" Checkpoints: written atomically, loaded without pickle, complete enough to rebuild their model.

A training run's output folder::

    OUTPUT/
      epoch-0007/            one complete checkpoint (written as a temporary folder, then renamed)
        model.safetensors    the model's state dict (timm's names)
        model_ema.safetensors  with ``--model-ema``: the EMA of the weights (timm's ``ModelEmaV3``), same names;
                             what ``sp-timm eval`` / ``export`` load by default when present (``--weights raw``: the other)
        training.pt          optimizer, scheduler and AMP scaler state; loaded with ``torch.load(weights_only=True)``
        state.json           epoch, step, best metric, SHA-256 of the files above (and of run.json)
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch

__all__ = [
    'CheckpointError', 'atomic_write_text', 'atomic_write_bytes', 'atomic_write_json', 'save_checkpoint', 'load_state_dict_safely',
    'read_run_record', 'load_training_state', 'default_model_name', 'resolve_checkpoint', 'create_model_from_checkpoint', 'load_model',
    'WEIGHTS_FILE', 'RUN_FILE', 'STATE_FILE', 'TRAINING_FILE', 'sha256_file', 'weights_sha256', 'safe_path_component',
    'check_model_args', 'read_json_object', 'check_output_folder', 'EMA_FILE', 'WEIGHT_CHOICES', 'load_ema_state',
    'has_ema_weights', 'staging_folder', 'make_shareable', 'fsync_file',
]

WEIGHTS_FILE = 'model.safetensors'
EMA_FILE = 'model_ema.safetensors'
# which weights load_model gives: auto = the EMA weights when the checkpoint has them, else the raw (trained) ones
WEIGHT_CHOICES = ('auto', 'ema', 'raw')
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


def fsync_file(path: Path) -> None:
    """Flush a file another library wrote (safetensors, torch.save) to disk before it is renamed into place."""
    with open(path, 'rb') as f:
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


def check_output_folder(path: PathLike, flag: str) -> Path:
    """``path`` (absolute) if an output folder can be created or written there; a ``CheckpointError`` naming
    ``flag`` if it, or a folder above it, is a file, or if the nearest existing folder is not writable.
    Creates nothing, so a refused command leaves no trace."""
    path = Path(os.path.abspath(path))
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = 'is a file' if existing == path else f"is inside '{existing}', which is a file"
        raise CheckpointError(f"{flag} '{path}' {where}, not a folder; choose a folder path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CheckpointError(f"{flag} '{path}': '{existing}' is not writable (permissions or a read-only file "
                              f"system); choose a folder you can write to.")
    return path


@contextmanager
def staging_folder(parent: Path, name: str, suffix: str = '.tmp') -> Iterator[Path]:
    """A private, empty folder ``parent/.NAME.XXXX{suffix}`` (``mkdtemp``: unique even beside another process) to build
    ``parent/name`` in before it is renamed into place; removed on leaving the block, whether it raised or not (after
    a successful rename there is nothing left to remove). Being beside the destination keeps the rename atomic."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f'.{name}.', suffix=suffix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_shareable(folder: Path) -> None:
    """rwxr-xr-x / rw-r--r-- for a folder made by ``mkdtemp`` (0700) and its files."""
    os.chmod(folder, 0o755)
    for path in folder.rglob('*'):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def sha256_file(path: PathLike) -> str:
    """The SHA-256 (hex) of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """The SHA-256 (hex) of a model's weights: every state-dict entry's name and raw bytes, in name order. It does
    not depend on the file format, so a checkpoint, its export and a ``local-dir:`` load of it give the same hash;
    ``sp-timm eval`` records it in its report and ``sp-timm export --eval`` checks it."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_UNSAFE_NAMES = ('', '.', '..')


def safe_path_component(value: Any, what: str) -> str:
    """``value`` if it can name one file or folder inside an output folder: a non-empty string with no path
    separator, no ``.``/``..``, no control character, at most 200 characters. Anything else (e.g. a ``name`` of
    ``../../tmp/x`` read from a JSON file) raises ``ValueError`` naming ``what`` and the fix."""
    problem = None
    if not isinstance(value, str):
        problem = f'is a {type(value).__name__}, not a string'
    elif value.strip() in _UNSAFE_NAMES or any(sep in value for sep in ('/', '\\')) \
            or any(ord(c) < 32 or ord(c) == 127 for c in value):
        problem = 'is not a single file name (empty, "." or "..", a path separator or a control character)'
    elif len(value) > 200:
        problem = f'is {len(value)} characters long (at most 200)'
    if problem:
        raise ValueError(f"{what} {str(value)[:120]!r} {problem}: it would be used as a file name, and could write "
                         f"outside the output folder. Use a plain name such as 'Author2026Title_WRN-28-10'.")
    return value


def _replace_link(output: Path, name: str, target: str) -> None:
    tmp = output / f'.{name}.tmp'
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, output / name)


def _replace_linked_folder(output: Path, final: Path, new: Path) -> None:
    """Replace the folder ``final`` by ``new`` while ``last`` / ``best`` may point at it: the links first move to a
    hard-linked copy of the old folder, so at every instant each link names a complete checkpoint."""
    aside = Path(tempfile.mkdtemp(prefix=f'.{final.name}.', suffix='.old', dir=output))
    aside.rmdir()
    shutil.copytree(final, aside, copy_function=os.link)
    moved = [link for link in LINKS if (output / link).is_symlink() and os.readlink(output / link) == final.name]
    for link in moved:
        _replace_link(output, link, aside.name)
    shutil.rmtree(final)
    os.replace(new, final)
    for link in moved:
        _replace_link(output, link, final.name)
    shutil.rmtree(aside, ignore_errors=True)


def save_checkpoint(
        output: PathLike,
        epoch: int,
        model_state: Dict[str, torch.Tensor],
        training_state: Dict[str, Any],
        state: Dict[str, Any],
        run_record: Dict[str, Any],
        is_best: bool,
        ema_state: Optional[Dict[str, torch.Tensor]] = None,
) -> Path:
    """Write ``OUTPUT/epoch-NNNN`` (NNNN = ``epoch``, the epochs completed; complete before it gets its name), point ``last`` (and ``best`` when
    ``is_best``) at it, and remove checkpoint folders no link points to. ``ema_state`` (``--model-ema``): the EMA
    weights, written to ``model_ema.safetensors`` and hashed in ``state.json`` like the weights. Returns the new folder."""
    from safetensors.torch import save_file
    output = Path(output)
    name = f'epoch-{epoch:04d}'
    with staging_folder(output, name) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / WEIGHTS_FILE))
        files = [WEIGHTS_FILE, TRAINING_FILE, RUN_FILE]
        if ema_state is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema_state.items()}, str(tmp / EMA_FILE))
            files.append(EMA_FILE)
        torch.save(training_state, tmp / TRAINING_FILE)
        _fsync_write(tmp / RUN_FILE, (json.dumps(run_record, indent=2) + '\n').encode())
        for f in set(files) - {RUN_FILE}:
            fsync_file(tmp / f)
        hashes = {f: sha256_file(tmp / f) for f in files}
        _fsync_write(tmp / STATE_FILE, (json.dumps(dict(state, epoch=epoch, sha256=hashes), indent=2) + '\n').encode())
        final = output / name
        make_shareable(tmp)
        if final.exists():  # the same epoch saved again (a resumed run): never leave a link without its folder
            _replace_linked_folder(output, final, tmp)
        else:
            os.replace(tmp, final)
    # best before last: a kill between the two leaves last on the older epoch, which the resumed run saves again;
    # the other order would leave state.json's best_metric ahead of best, and the next save would prune the best epoch
    if is_best or not (output / 'best').exists():
        _replace_link(output, 'best', name)
    _replace_link(output, 'last', name)
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
    """Check ``filename`` against the SHA-256 that ``state.json`` recorded when the checkpoint was written. A
    missing or unreadable ``state.json``, or no hash for the weights or training state, is an error; ``run.json``
    is checked when its hash is recorded (older checkpoints recorded only the other two)."""
    state_path = checkpoint / STATE_FILE
    try:
        hashes = json.loads(state_path.read_text()).get('sha256')
    except FileNotFoundError:
        raise CheckpointError(f"'{checkpoint}' has no {STATE_FILE}, which holds the SHA-256 of its files: its weights "
                              f"cannot be verified. Refusing to load it; use a complete checkpoint (OUTPUT/last, "
                              f"OUTPUT/best).") from None
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointError(f"'{state_path}' is corrupt ({err}); the weights cannot be verified. Refusing to load "
                              f"them; use another checkpoint.") from err
    expected = hashes.get(filename) if isinstance(hashes, dict) else None
    if expected is None:
        if filename == RUN_FILE:
            return
        raise CheckpointError(f"'{state_path}' records no SHA-256 for {filename}: the file cannot be verified. "
                              f"Refusing to load it; use a checkpoint written by sp-timm train.")
    if sha256_file(checkpoint / filename) != expected:
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


def read_json_object(path: PathLike, what: str) -> Dict[str, Any]:
    """The JSON object (a dict) in ``path``; a missing, unreadable or malformed file, or JSON that is not an
    object, raises ``CheckpointError`` naming ``what`` the file should be."""
    try:
        value = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"Cannot read {what} '{path}' ({err}).") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"'{path}' holds a JSON {type(value).__name__}, not the JSON object of {what}.")
    return value


def read_run_record(checkpoint: PathLike) -> Dict[str, Any]:
    return read_json_object(Path(checkpoint) / RUN_FILE, 'the run record')


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
    for filename in (WEIGHTS_FILE, TRAINING_FILE, RUN_FILE):
        _verify_hash(checkpoint, filename)
    training_state = _torch_load_safely(checkpoint / TRAINING_FILE)
    return load_state_dict_safely(checkpoint / WEIGHTS_FILE), training_state, state


def _recorded_hashes(checkpoint: Path) -> Dict[str, Any]:
    """The ``sha256`` mapping of a checkpoint's ``state.json`` ({} when unreadable: the verified loads report that)."""
    try:
        hashes = json.loads((checkpoint / STATE_FILE).read_text()).get('sha256')
    except (OSError, ValueError, AttributeError):
        return {}
    return hashes if isinstance(hashes, dict) else {}


def has_ema_weights(checkpoint: PathLike) -> bool:
    """Whether an sp-timm checkpoint folder holds EMA weights (``--model-ema``): the file, or its recorded hash."""
    checkpoint = Path(checkpoint)
    return (checkpoint / EMA_FILE).is_file() or EMA_FILE in _recorded_hashes(checkpoint)


def load_ema_state(checkpoint: PathLike) -> Optional[Dict[str, torch.Tensor]]:
    """The EMA weights of a checkpoint folder (``model_ema.safetensors``, checked against the SHA-256 that
    ``state.json`` recorded), or ``None`` for a checkpoint trained without ``--model-ema``. A file without a recorded
    hash, or a recorded hash without its file, is a ``CheckpointError``."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / EMA_FILE).is_file():
        if EMA_FILE in _recorded_hashes(checkpoint):
            raise CheckpointError(f"'{checkpoint}' is incomplete: its {STATE_FILE} records EMA weights but {EMA_FILE} "
                                  f"is missing. Use another checkpoint.")
        return None
    _verify_hash(checkpoint, EMA_FILE)
    return load_state_dict_safely(checkpoint / EMA_FILE)


def _check_weights_choice(weights: str) -> None:
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}.")


def _torch_load_safely(path: Path) -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` of a nested state (optimizer, scheduler), as ``CheckpointError`` on failure."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Refusing '{path}': it does not load with torch.load(weights_only=True) ({type(err).__name__}). "
                              f"A pickled model or code object can run arbitrary code; save a state dict with "
                              f"safetensors instead.") from err


def create_model_from_checkpoint(checkpoint: PathLike, weights: str = 'auto') -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild the model of an sp-timm checkpoint from its run record alone and load its weights (strict).

    ``weights``: ``auto`` (default) loads the EMA weights (``model_ema.safetensors``, ``--model-ema``) when the
    checkpoint has them and the raw (trained) weights otherwise; ``ema`` requires the EMA weights; ``raw`` always
    loads ``model.safetensors``. The returned record says which under ``weights`` (``'ema'`` or ``'raw'``)."""
    _check_weights_choice(weights)
    checkpoint = resolve_checkpoint(checkpoint)
    _verify_hash(checkpoint, RUN_FILE)
    record = read_run_record(checkpoint)
    use = 'ema' if weights == 'ema' or (weights == 'auto' and has_ema_weights(checkpoint)) else 'raw'
    if use == 'ema':
        state, origin = load_ema_state(checkpoint), checkpoint / EMA_FILE
        if state is None:
            raise CheckpointError(f"'{checkpoint}' has no EMA weights (trained without --model-ema); load its raw "
                                  f"weights (--weights raw, or auto).")
    else:
        _verify_hash(checkpoint, WEIGHTS_FILE)
        state, origin = load_state_dict_safely(checkpoint / WEIGHTS_FILE), checkpoint
    model = _create_checked(record.get('model'), record.get('model_args', {}), checkpoint / RUN_FILE)
    _load_strict(model, state, origin)
    return model.eval(), dict(record, weights=use)


# timm.create_model arguments that load files or weights: never taken from a record or a config file
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
    if source == 'local-dir':
        raise CheckpointError(f"{origin}: the model name '{model_name}' points at a folder; a record or config must name "
                              f"a timm architecture (e.g. resnet32_cifar).")
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
        raise CheckpointError(f"'{folder}' has no config.json: it is not a timm Hub folder (sp-timm export writes one).")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"'{folder}' holds no {WEIGHTS_FILE}; sp-timm loads a Hub folder's weights only from "
                              f"that file, never from a pickle (pytorch_model.bin, *.pth). Convert them to safetensors.")
    config = read_json_object(folder / 'config.json', "a timm model config")
    model_args = config.get('model_args') or {}
    if isinstance(model_args, dict) and config.get('num_classes') is not None:
        model_args = dict({'num_classes': config['num_classes']}, **model_args)
    state = load_state_dict_safely(weights)
    model = _create_checked(config.get('architecture'), model_args, folder / 'config.json')
    _load_strict(model, state, weights)
    return model


def load_model(source: str, weights: str = 'auto') -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The model to evaluate or export, from

    - an sp-timm checkpoint folder or a run's output folder (rebuilt from ``run.json``);
    - ``local-dir:DIR`` or ``hf-hub:ORG/NAME``: timm's Hub format: the architecture its ``config.json`` names,
      with the weights of exactly its ``model.safetensors`` (never a pickle timm might prefer).

    ``weights`` (``auto``, ``ema``, ``raw``): for a checkpoint, see ``create_model_from_checkpoint`` (``auto``: the
    EMA weights when present). A Hub folder holds one set, the one its export chose (``sp_timm.json``'s ``weights``);
    asking for the other is an error. Returns the model in eval mode and a record (the run record, or what the Hub
    config says) whose ``weights`` says which weights were loaded (``'ema'`` or ``'raw'``).
    """
    _check_weights_choice(weights)
    if not source.startswith(('local-dir:', 'hf-hub:')):
        return create_model_from_checkpoint(source, weights)
    if source.startswith('local-dir:'):
        folder = Path(source[len('local-dir:'):])
        if not folder.is_dir():
            raise CheckpointError(f"'{folder}' is not a folder; local-dir: needs a folder written by sp-timm export.")
    elif source.startswith('hf-hub:'):
        from huggingface_hub import snapshot_download
        try:
            folder = Path(snapshot_download(source[len('hf-hub:'):], allow_patterns=['*.json', '*.safetensors', '*.md']))
        except Exception as err:
            raise CheckpointError(f"Cannot fetch '{source}' from the Hub ({type(err).__name__}: {err}). Offline, "
                                  f"download it elsewhere and use 'local-dir:DIR'.") from err
    model = _load_hub_folder(folder)
    record = _hub_record(folder)
    held = 'ema' if record.get('weights') == 'ema' else 'raw'  # exports before --model-ema held the raw weights
    if weights not in ('auto', held):
        fix = ('export them with sp-timm export --weights raw' if held == 'ema' else 'the run had no --model-ema, or '
               'export its EMA weights with sp-timm export --weights ema')
        raise CheckpointError(f"'{source}' holds the {held} weights of its run only, not the {weights} ones; {fix}.")
    return model.eval(), dict(record, weights=held)


def default_model_name(record: Dict[str, Any]) -> str:
    """The name a trained model goes by in cards and leaderboard files: the record's ``name`` (which must be a
    single safe file name, see ``safe_path_component``), else ``<model>-<dataset>-<loss>`` with path separators
    and ``:`` of the model name (``hf-hub:org/name``) replaced by ``_``."""
    if record.get('name'):
        return safe_path_component(record['name'], "the record's name")
    derived = f"{record.get('model')}-{record.get('dataset')}-{record.get('loss')}"
    return safe_path_component(''.join('_' if c in '/\\:' else c for c in derived), 'the model name')


def _hub_record(folder: Path) -> Dict[str, Any]:
    """The run record an export stores beside timm's config, or the little timm's config itself says."""
    exported = folder / 'sp_timm.json'
    if exported.is_file():
        return read_json_object(exported, 'the sp-timm run record')
    config = read_json_object(folder / 'config.json', 'a timm model config')
    return {'model': config.get('architecture'), 'model_args': config.get('model_args', {}),
            'num_classes': config.get('num_classes'), 'classes': config.get('label_names')}
