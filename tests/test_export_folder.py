""" The export-folder transaction of both exporters: export never deletes what it did not write, replaces only its
own unchanged export, undoes a killed export, follows a link given as --out, and pushes without its marker. Each test
checks the exit status, the message and that the files around are unchanged. """
import json
import shutil
import subprocess
import sys
import pytest
import sp_timm  # noqa: F401  (registers the models)
from sp_timm.export.folder import EXPORT_MARKER
from sp_timm.export.hub import export_model, push_folder
from conftest import run_cli, snapshot


def test_export_refuses_foreign_folders_run_folders_dot_and_files(run, tmp_path, capsys, monkeypatch):
    foreign = tmp_path / 'mine'
    (foreign / 'sub').mkdir(parents=True)
    (foreign / 'thesis.tex').write_text('\\documentclass{article}')
    (foreign / 'sub' / 'data.csv').write_text('a,b\n1,2\n')
    a_file = tmp_path / 'notes.txt'
    a_file.write_text('keep me')
    before = {p: snapshot(p) for p in (foreign, run)}
    for out, message in ((foreign, 'did not write (sub/data.csv, thesis.tex)'), (run, 'training run'),
                         (run / 'last', 'training run'), (a_file, 'is a file')):
        status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', out], capsys)
        assert status == 2 and message in err and 'Nothing was changed' in err, err
    monkeypatch.chdir(foreign)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', '.'], capsys)
    assert status == 2 and 'is the current folder' in err
    empty = tmp_path / 'empty'  # an empty current folder would be swapped for a new one under the caller's shell
    empty.mkdir()
    monkeypatch.chdir(empty)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', '.'], capsys)
    assert status == 2 and 'is the current folder' in err and empty.is_dir() and not list(empty.iterdir())
    monkeypatch.chdir(tmp_path)
    tree = tmp_path / 'tree'
    (tree / 'a' / 'b').mkdir(parents=True)  # folders holding only folders: not an empty folder to replace
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', tree], capsys)
    assert status == 2 and 'holds folders (a)' in err and (tree / 'a' / 'b').is_dir()
    assert {p: snapshot(p) for p in (foreign, run)} == before and a_file.read_text() == 'keep me'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no half-built export left beside


def test_export_replaces_only_its_own_unchanged_export(run, tmp_path, capsys):
    out = export_model(str(run / 'last'), tmp_path / 'export')
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert set(marker['files']) == {p for p in snapshot(out) if p != EXPORT_MARKER}
    assert export_model(str(run / 'last'), out) == out  # an earlier export is replaced
    (out / EXPORT_MARKER).unlink()  # without its list of files, an edited card could not be told from ours
    (out / 'README.md').write_text('my edited card')
    before = snapshot(out)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', out], capsys)
    assert status == 2 and 'without sp-timm\'s record of its files' in err and snapshot(out) == before
    shutil.rmtree(out)
    export_model(str(run / 'last'), out)
    (out / 'README.md').write_text('my edited card')
    (out / 'extra.txt').write_text('mine')
    before = snapshot(out)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', out], capsys)
    assert status == 2 and 'extra.txt' in err and snapshot(out) == before
    (out / 'extra.txt').unlink()
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', out], capsys)
    assert status == 2 and 'edited since they were written (README.md)' in err
    assert (out / 'README.md').read_text() == 'my edited card'


# a kill right after export moved the previous export aside (1), or right after it renamed the new one in (2)
_KILLED_EXPORT = """
import os, sys
from pathlib import Path
from sp_timm.export.hub import export_model
out, after = Path(sys.argv[2]), sys.argv[3]
real = os.replace
def replace(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    if (after == 'aside' and Path(src) == out) or (after == 'in' and Path(dst) == out):
        os._exit(137)
os.replace = replace
export_model(sys.argv[1], out)
"""


@pytest.mark.parametrize('killed_after', ['aside', 'in'])
def test_an_export_killed_between_its_renames_is_undone_by_the_next(run, tmp_path, killed_after):
    import sp_timm.export.folder as folder
    out = export_model(str(run / 'last'), tmp_path / 'export')
    first = snapshot(out)
    sibling = tmp_path / '.export.sp-timm-old.sp-timm-old'  # another export's (of 'export.sp-timm-old') folder
    sibling.mkdir()
    result = subprocess.run([sys.executable, '-c', _KILLED_EXPORT, str(run / 'last'), str(out), killed_after],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 137, result.stderr
    aside = tmp_path / '.export.sp-timm-old'
    assert aside.is_dir() and out.exists() == (killed_after == 'in')
    staging = [p for p in tmp_path.iterdir() if p.name.endswith('.sp-timm-staging')]
    assert len(staging) == (killed_after == 'aside')
    folder._recover_interrupted_export(out)
    assert snapshot(out) == first  # the previous export back in place, or the new one (the same files) kept
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == [sibling.name]
    assert export_model(str(run / 'last'), out) == out and snapshot(out) == first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == [sibling.name]


def test_a_link_as_out_exports_into_the_folder_it_names(run, tmp_path):
    target = export_model(str(run / 'last'), tmp_path / 'export')
    link = tmp_path / 'link'
    link.symlink_to(target, target_is_directory=True)
    assert export_model(str(run / 'last'), link) == target
    assert link.is_symlink() and (link / EXPORT_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['export', 'link']


def test_push_leaves_out_the_marker(run, tmp_path, monkeypatch):
    out = export_model(str(run / 'last'), tmp_path / 'export')
    calls = {}

    class FakeApi:
        def __init__(self, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            return type('Url', (), {'repo_id': repo_id})()

        def upload_folder(self, **kwargs):
            calls.update(kwargs)
            return 'https://example.invalid/commit'

    monkeypatch.setattr('huggingface_hub.HfApi', FakeApi)
    push_folder(out, 'me/model', token='hf_fake')
    assert calls['ignore_patterns'] == [EXPORT_MARKER]


def test_a_full_disk_during_export_is_one_line_and_keeps_the_earlier_export(run, tmp_path, capsys, monkeypatch):
    import safetensors.torch
    out = export_model(str(run / 'last'), tmp_path / 'export')
    before = snapshot(out)

    def full(*args, **kwargs):
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                           'on device" })')
    monkeypatch.setattr(safetensors.torch, 'save_file', full)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', out], capsys)
    assert status == 2 and 'No space left on the device while writing the export' in err and 'is untouched' in err
    assert 'Traceback' not in err and snapshot(out) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith('.')]  # the partial export was removed
