""" Files written so that nothing is lost and nothing lands outside its folder: atomic writes (a temporary file
renamed into place, fsynced), private staging folders renamed when complete, SHA-256 hashes, names checked before
they become paths, JSON objects read with one clear error, and safetensors tensor files (never pickle).

The ground floor: every writer of sp-timm (checkpoints, evaluations, exports, the demo) uses these.
"""
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, Iterator, Optional, Union

from .errors import CheckpointError

__all__ = ['PathLike', 'Tensors', 'EXPORT_MARKER', 'disk_full_errors', 'fsync_write', 'fsync_file', 'atomic_write_text',
           'atomic_write_bytes', 'atomic_write_json',
           'check_output_folder', 'staging_folder', 'make_shareable', 'sha256_file', 'safe_path_component',
           'read_json_object', 'save_tensors', 'load_tensors', 'LOCAL_PATH', 'public_path', 'public_source',
           'public_text']

PathLike = Union[str, os.PathLike]
Tensors = Dict[str, 'torch.Tensor']  # noqa: F821 -- torch is imported where tensors are read or written


def fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk (for files renamed into place afterwards)."""
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
        fsync_write(Path(tmp), data)
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


_UNSAFE_NAMES = ('', '.', '..')


EXPORT_MARKER = '.sp-timm-export.json'  # written by sp-timm export: every file's SHA-256, to tell edits apart
_DISK_FULL = ('No space left on device', 'os error 28', 'code: 28', 'StorageFull', 'Disk quota exceeded')


@contextmanager
def disk_full_errors(what: str, hint: str) -> Iterator[None]:
    """Turn a full file system while ``what`` is written into one ``OSError(ENOSPC)`` that says what was being
    written and ``hint`` (what is still intact, how to go on): torch and safetensors report it as a
    ``RuntimeError`` or their own error type, which would otherwise end in a traceback."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(errno.ENOSPC, f'No space left on the device while writing {what}. {hint}') from err
        raise
    except Exception as err:  # noqa: BLE001 -- only a full disk is translated; anything else is raised as it was
        if any(text in str(err) for text in _DISK_FULL):
            raise OSError(errno.ENOSPC, f'No space left on the device while writing {what}. {hint}') from err
        raise


def safe_path_component(value: Any, what: str) -> str:
    """``value`` if it can name one file or folder inside an output folder: a non-empty string with no path
    separator, no ``.``/``..``, no control character, at most 200 characters and 200 bytes in UTF-8. Anything else
    (e.g. a ``name`` of ``../../tmp/x`` read from a JSON file) raises ``ValueError`` naming ``what`` and the fix."""
    problem = None
    if not isinstance(value, str):
        problem = f'is a {type(value).__name__}, not a string'
    elif value.strip() in _UNSAFE_NAMES or any(sep in value for sep in ('/', '\\')) \
            or any(ord(c) < 32 or ord(c) == 127 for c in value):
        problem = 'is not a single file name (empty, "." or "..", a path separator or a control character)'
    elif len(value) > 200:
        problem = f'is {len(value)} characters long (at most 200)'
    elif len(value.encode('utf-8')) > 200:  # file systems limit names in bytes (255 on most); '.json' etc. follow
        problem = f"is {len(value.encode('utf-8'))} bytes long in UTF-8 (at most 200)"
    if problem:
        raise ValueError(f"{what} {str(value)[:120]!r} {problem}: it would be used as a file name, and could write "
                         f"outside the output folder. Use a plain name such as 'Author2026Title_WRN-28-10'.")
    return value


LOCAL_PATH = '<local path>'
# an absolute POSIX, home or Windows path (or a file: URL) inside text, up to a space, quote, bracket or separator;
# not after a word character, ')' or '/' (a ratio such as '(0.5)/sqrt(d)' is no path)
_ABSOLUTE_PATH = re.compile(r"(?:(?<=local-dir:)|(?<![\w.:/~>)-]))(?:file://)?(?:/|~/|[A-Za-z]:[\\/])"
                            r"[^\s'\"`<>|,;()\[\]{}]+")


def public_path(path: str) -> str:
    """``path`` as a published file writes it: ``<local path>/NAME``, its last component only."""
    stripped = str(path).rstrip('/\\')
    name = (PureWindowsPath if '\\' in stripped else PurePosixPath)(stripped).name
    return f'{LOCAL_PATH}/{name}' if name else LOCAL_PATH


def public_source(source: Optional[str]) -> Optional[str]:
    """A model's source as published: a Hub or RobustBench name as it is, a local folder (``local-dir:`` too) by
    ``public_path``."""
    if not source or source.startswith(('hf-hub:', 'robustbench:')):
        return source
    prefix = 'local-dir:' if source.startswith('local-dir:') else ''
    return prefix + public_path(source[len(prefix):])


def public_text(text: str) -> str:
    """``text`` with every absolute path in it written as ``public_path``."""
    return _ABSOLUTE_PATH.sub(lambda match: public_path(match.group()), text)


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


def save_tensors(path: Optional[PathLike], tensors: Tensors) -> None:
    """Write ``tensors`` to ``path`` as safetensors (no pickle), atomically; nothing without a path."""
    from safetensors.torch import save
    if path is not None:
        atomic_write_bytes(path, save({k: v.contiguous().cpu() for k, v in tensors.items()}))


def load_tensors(path: Optional[PathLike]) -> Tensors:
    """The tensors of a safetensors file written by ``save_tensors``; ``{}`` when there is none, or when it cannot be
    read (a file cut by a crash outside these atomic writes: the caller computes it again)."""
    from safetensors.torch import load_file
    if path is None or not Path(path).exists():
        return {}
    try:
        return load_file(str(path))
    except Exception:  # noqa: BLE001 -- any unreadable file is recomputed, never trusted
        return {}
