""" One export-folder transaction for both exporters (the Hub folder and the RobustBench submission): the folder is
built privately beside ``--out``, given a marker listing every file it wrote with its SHA-256, flushed to disk and
renamed into place; an existing ``--out`` is replaced only when it is absent, empty, or an earlier export whose files
are exactly those its marker lists, unchanged. Exports beside each other take a lock on their parent folder, and
what a killed export left there is undone by the next one.
"""
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

from ..errors import CheckpointError
from ..files import (EXPORT_MARKER, atomic_write_json, disk_full_errors, fsync_file, make_shareable, read_json_object,
                     sha256_file, staging_folder)

__all__ = ['EXPORT_MARKER', 'export_destination', 'export_folder', 'check_replaceable']



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
        with disk_full_errors(f'the export {out}', f'{out} is untouched (the partial export was removed): free '
                                                   f'some space and export again.'), \
                staging_folder(out.parent, out.name, suffix=_STAGING_SUFFIX) as tmp:
            yield tmp
            files = _files_in(tmp)
            for f in files:
                if not (tmp / f).is_symlink():
                    fsync_file(tmp / f)
            atomic_write_json(tmp / EXPORT_MARKER, {'written_by': written_by, 'weights_sha256': weights_hash,
                                                    'files': {f: sha256_file(tmp / f) for f in files}})
            make_shareable(tmp)
            check_replaceable(out)
            _replace_folder(tmp, out)


def _files_in(folder: Path) -> List[str]:
    """Every file and link under ``folder`` (not following links), as POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_symlink() or not p.is_dir())


def check_replaceable(out: Path) -> None:
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
    cwd = Path.cwd().resolve()
    if cwd == out.resolve() or out.resolve() in cwd.parents:
        raise CheckpointError(f"--out '{out}' is the current folder or holds it: replacing it would leave your shell "
                              f"in a deleted folder. {nothing}")
    files = _files_in(out)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    if not files and folders:
        raise CheckpointError(f"--out '{out}' holds folders ({', '.join(folders[:5])}), empty or not, that export did "
                              f"not write. {nothing}")
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
        def listed(names):
            return ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
        problem = (f'holds files sp-timm export did not write ({listed(foreign)})' if foreign
                   else f'holds export files edited since they were written ({listed(changed)})')
        raise CheckpointError(f"--out '{out}' {problem}; export replaces only an earlier export of its own. {nothing}")
