""" Checkpoints: written atomically, loaded without pickle, complete enough to rebuild their model.

A training run's output folder::

    OUTPUT/
      epoch-0007/            one complete checkpoint (written as a temporary folder, then renamed)
        model.safetensors    the model's state dict (timm's names)
        model_ema.safetensors  with ``--model-ema``: the EMA of the weights (timm's ``ModelEmaV3``), same names;
                             what ``sp-timm eval`` / ``export`` load by default when present (``--weights raw``: the
                             other)
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
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from .errors import CheckpointError
from .files import (PathLike, disk_full_errors, fsync_file, fsync_write, make_shareable, read_json_object, sha256_file,
                    staging_folder)
from .records import RunRecord, read_run_record_json, to_json

__all__ = ['WEIGHTS_FILE', 'EMA_FILE', 'TRAINING_FILE', 'STATE_FILE', 'RUN_FILE', 'LINKS', 'save_checkpoint',
           'resolve_checkpoint', 'verify_hash', 'load_state_dict_safely', 'read_run_record', 'load_training_state',
           'has_ema_weights', 'load_ema_state', 'weights_sha256']

WEIGHTS_FILE = 'model.safetensors'
EMA_FILE = 'model_ema.safetensors'
TRAINING_FILE = 'training.pt'
STATE_FILE = 'state.json'
RUN_FILE = 'run.json'
LINKS = ('last', 'best')


def weights_sha256(model: torch.nn.Module) -> str:
    """The SHA-256 (hex) of a model's weights: every state-dict entry's name and raw bytes, in name order. It does
    not depend on the file format, so a checkpoint, its export and a ``local-dir:`` load of it give the same hash;
    ``sp-timm eval`` records it in its report and ``sp-timm export --eval`` checks it."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
        run_record: RunRecord,
        is_best: bool,
        ema_state: Optional[Dict[str, torch.Tensor]] = None,
) -> Path:
    """Write ``OUTPUT/epoch-NNNN`` (NNNN = ``epoch``, the epochs completed; complete before it gets its name), point
    ``last`` (and ``best`` when ``is_best``) at it, and remove checkpoint folders no link points to. ``ema_state``
    (``--model-ema``): the EMA weights, written to ``model_ema.safetensors`` and hashed in ``state.json`` like the
    weights. Returns the new folder."""
    from safetensors.torch import save_file
    output = Path(output)
    name = f'epoch-{epoch:04d}'
    last = os.readlink(output / 'last') if (output / 'last').is_symlink() else None
    hint = (f'The last saved checkpoint, {output / last}, is untouched: free some space, then continue with sp-timm '
            f'train --resume {output}.' if last else 'No checkpoint of this run was saved yet: free some space and '
                                                     'start the run again.')
    with disk_full_errors(f'checkpoint {name} in {output}', hint), staging_folder(output, name) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / WEIGHTS_FILE))
        files = [WEIGHTS_FILE, TRAINING_FILE, RUN_FILE]
        if ema_state is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema_state.items()}, str(tmp / EMA_FILE))
            files.append(EMA_FILE)
        torch.save(training_state, tmp / TRAINING_FILE)
        fsync_write(tmp / RUN_FILE, (json.dumps(to_json(run_record), indent=2) + '\n').encode())
        for f in set(files) - {RUN_FILE}:
            fsync_file(tmp / f)
        hashes = {f: sha256_file(tmp / f) for f in files}
        fsync_write(tmp / STATE_FILE, (json.dumps(dict(state, epoch=epoch, sha256=hashes), indent=2) + '\n').encode())
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
        if old.name not in keep and _is_checkpoint_folder(old):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _is_checkpoint_folder(path: Path) -> bool:
    """A real folder holding only what ``save_checkpoint`` writes: what pruning may delete (never a user's file)."""
    names = {WEIGHTS_FILE, TRAINING_FILE, RUN_FILE, STATE_FILE, EMA_FILE}
    return path.is_dir() and not path.is_symlink() and all(p.name in names for p in path.iterdir())


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


def verify_hash(checkpoint: Path, filename: str) -> None:
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


def read_run_record(checkpoint: PathLike) -> RunRecord:
    """The run record of a checkpoint folder (any version sp-timm wrote, brought to the current one), every field
    checked: a malformed or edited ``run.json`` is a ``RecordError`` naming the field."""
    path = Path(checkpoint) / RUN_FILE
    return read_run_record_json(read_json_object(path, 'the run record'), str(path))


def load_training_state(checkpoint: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], Dict[str, Any]]:
    """``(model_state, training_state, state)`` of a checkpoint folder, every file checked against its hash."""
    checkpoint = Path(checkpoint)
    for filename in (WEIGHTS_FILE, TRAINING_FILE, STATE_FILE):
        if not (checkpoint / filename).is_file():
            raise CheckpointError(f"'{checkpoint}' is incomplete: {filename} is missing. Resume from another "
                                  "checkpoint.")
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{checkpoint / STATE_FILE}' is corrupt ({err}).") from err
    for filename in (WEIGHTS_FILE, TRAINING_FILE, RUN_FILE):
        verify_hash(checkpoint, filename)
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
    verify_hash(checkpoint, EMA_FILE)
    return load_state_dict_safely(checkpoint / EMA_FILE)


def _torch_load_safely(path: Path) -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` of a nested state (optimizer, scheduler), as ``CheckpointError`` on failure."""
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Refusing '{path}': it does not load with torch.load(weights_only=True) "
                              f"({type(err).__name__}). A pickled model or code object can run arbitrary code; save a "
                              "state dict with safetensors instead.") from err


# timm.create_model arguments that load files or weights: never taken from a record or a config file


