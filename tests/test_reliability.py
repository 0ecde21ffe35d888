""" Reliability (issue 16): export never deletes what it did not write, no path built from file contents leaves
its output folder, reports carry the SHA-256 of the weights they evaluated, untrusted metadata stays data, bad
input is refused before any work with one ``prog: error:`` line (exit 2), Ctrl-C says how to resume. Each test
checks the exit status, the message, the absence of a traceback and that the files around are unchanged. """
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sp_timm  # noqa: F401  (registers the models)
from sp_timm.cli.common import run_reporting_errors
from sp_timm.errors import CheckpointError
from sp_timm.model_source import check_model_args, create_model_from_checkpoint, load_model
from sp_timm.files import safe_path_component, sha256_file
from sp_timm.checkpoint import weights_sha256
from sp_timm.cli import main as cli_main
from sp_timm.eval.report import leaderboard_entry
from sp_timm.export.folder import EXPORT_MARKER
from sp_timm.export.hub import export_model, push_folder
from sp_timm.cli.train import parse_train_args
from sp_timm.train import train

CLI = [sys.executable, '-m', 'sp_timm']
TINY = ('--dataset digits --batch-size 32 --train-examples 64 --val-examples 32 --no-aug --no-progress '
        '--epochs 1 --lr 0.05').split()


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (links as their target) with its bytes: equal snapshots = nothing touched."""
    return {p.relative_to(folder).as_posix(): (os.readlink(p) if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob('*')) if p.is_symlink() or p.is_file()}


def run_cli(argv, capsys) -> tuple:
    """``sp-timm ARGV`` in this process: (exit status, stderr)."""
    capsys.readouterr()
    status = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    return status, err


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('run') / 'run'
    return train(parse_train_args(TINY + ['--model', 'small_cnn_cifar', '--loss', 'sp_ls', '--output', str(out)]))


@pytest.fixture(scope='module')
def plain_run(tmp_path_factory) -> Path:
    """A plain timm model (no normalisation inside), as the README's `--model resnet18` trains it."""
    out = tmp_path_factory.mktemp('plain') / 'run'
    return train(parse_train_args(TINY + ['--model', 'resnet18', '--num-classes', '10', '--loss', 'ce', '--output', str(out)]))


@pytest.fixture(scope='module')
def plain_report(plain_run, tmp_path_factory) -> Path:
    """A real sp-timm eval report of the plain model (4 points)."""
    out = tmp_path_factory.mktemp('eval') / 'eval'
    status = cli_main(['eval', '--checkpoint', str(plain_run / 'last'), '--n-examples', '4', '-b', '4',
                       '--min-pert-examples', '0', '--no-progress', '--out', str(out)])
    assert status == 0
    return out / 'report.json'


# ---- 1. export never destroys what it did not write -------------------------------------------------------------

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
    assert status == 2 and 'did not write' in err
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


# ---- 2. paths built from file contents stay inside the output folder ---------------------------------------------

def test_safe_path_component():
    assert safe_path_component('Author2026Title_WRN-28-10', 'x') == 'Author2026Title_WRN-28-10'
    for bad in ('../../tmp/x', '..', '.', '', 'a/b', 'a\\b', 'a\x00b', 7, 'x' * 201):
        with pytest.raises(ValueError, match='file name|string|characters'):
            safe_path_component(bad, 'leaderboard.dataset')


def _report_for(model_source: str, **changes) -> dict:
    """A minimal report in sp-timm eval's schema for the weights of ``model_source``."""
    from dataclasses import replace
    from sp_timm.records import to_json
    from test_hub import fake_report
    model, info = load_model(model_source)
    report = to_json(replace(fake_report(info, weights_sha256(model), n=4), model_name='tiny'))
    for key, value in changes.items():
        target = report
        *path, last = key.split('.')
        for part in path:
            target = target[part]
        target[last] = value
    return report


@pytest.mark.parametrize('field', ['leaderboard.dataset', 'model_name'])
def test_export_refuses_traversal_from_report_fields(run, tmp_path, capsys, field):
    report = tmp_path / 'work' / 'report.json'
    report.parent.mkdir()
    report.write_text(json.dumps(_report_for(str(run / 'last'), **{field: '../../../../escaped'})))
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', tmp_path / 'work' / 'export',
                           '--eval', report], capsys)
    assert status == 2 and 'escaped' in err and 'file name' in err
    assert not list(tmp_path.parent.rglob('escaped*')) and not (tmp_path / 'work' / 'export').exists()


def test_eval_refuses_traversal_from_record_name_and_model_name(run, tmp_path, capsys):
    export = export_model(str(run / 'last'), tmp_path / 'export')
    record = json.loads((export / 'sp_timm.json').read_text())
    (export / 'sp_timm.json').write_text(json.dumps(dict(record, name='../../../../evil')))
    out = tmp_path / 'evals' / 'one'
    status, err = run_cli(['eval', '--checkpoint', f'local-dir:{export}', '--n-examples', '2', '--out', out], capsys)
    assert status == 2 and 'unknown field(s) name in ExportRecord' in err and 'edited' in err  # a typed record
    status, err = run_cli(['eval', '--checkpoint', run / 'last', '--model-name', '../x', '--out', out], capsys)
    assert status == 2 and "--model-name '../x'" in err
    # what the traversal would write: evil.json (another test's evil.safetensors may share the session folder)
    assert not (tmp_path / 'evals').exists() and not list(tmp_path.parent.parent.rglob('evil.json'))


# ---- 3. provenance ----------------------------------------------------------------------------------------------

def test_plain_timm_model_exports_evaluates_and_refuses_other_reports(plain_run, plain_report, run, tmp_path, capsys):
    report = json.loads(plain_report.read_text())
    model, _ = create_model_from_checkpoint(plain_run / 'last')
    assert report['model']['weights_sha256'] == weights_sha256(model)
    out = export_model(str(plain_run / 'last'), tmp_path / 'plain', reports=[plain_report])
    card = (out / 'README.md').read_text()
    assert 'uses them as they are' in card and 'AutoAttack accuracy' in card
    loaded, _ = load_model(f'local-dir:{out}')  # the export's weights have the same hash as the checkpoint's
    assert weights_sha256(loaded) == report['model']['weights_sha256']
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    before = snapshot(tmp_path)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', tmp_path / 'other', '--eval', plain_report],
                          capsys)
    assert status == 2 and 'evaluated other weights' in err and snapshot(tmp_path) == before


@pytest.mark.parametrize('content, message', [
    ('[1, 2]', 'JSON list'), ('{"clean_acc": 1}', 'not a report of sp-timm eval'), ('{not json', 'Cannot read'),
    (None, 'records no SHA-256'), ('no_eps', "protocol: Protocol field 'eps' is missing"),
    ('no_architecture', "leaderboard: LeaderboardEntry field 'architecture' is missing")])
def test_export_refuses_malformed_or_unverifiable_reports(run, tmp_path, capsys, content, message):
    report = tmp_path / 'report.json'
    if content in (None, 'no_eps', 'no_architecture'):  # a real report, one field removed
        data = _report_for(str(run / 'last'))
        del {None: data['model'], 'no_eps': data['protocol'], 'no_architecture': data['leaderboard']}[content][
            {None: 'weights_sha256', 'no_eps': 'eps', 'no_architecture': 'architecture'}[content]]
        content = json.dumps(data)
    report.write_text(content)
    status, err = run_cli(['export', '--checkpoint', run / 'last', '--out', tmp_path / 'out', '--eval', report], capsys)
    assert status == 2 and message in err and not (tmp_path / 'out').exists()


def test_resume_with_changed_flags_is_refused_or_recorded(tmp_path, capsys):
    out = tmp_path / 'run'
    flags = TINY + ['--model', 'small_cnn_cifar', '--loss', 'sp_ls', '--output', str(out)]
    train(parse_train_args(flags))
    before = snapshot(out)
    changed = [f for f in flags if f not in ('--epochs', '1', '--lr', '0.05')] + ['--epochs', '2', '--lr', '0.5']
    status = cli_main(['train', *changed, '--resume', str(out)])
    err = capsys.readouterr().err
    assert status == 2 and '--epochs 1 -> 2; --lr 0.05 -> 0.5' in err and '--resume-override' in err
    assert snapshot(out) == before
    train(parse_train_args(changed + ['--resume', str(out), '--resume-override']))
    record = json.loads((out / 'last' / 'run.json').read_text())
    assert record['config']['lr'] == 0.5 and record['args_history'] == [{'until_epoch': 1, 'args': {'epochs': 1, 'lr': 0.05}}]
    # the new values are the ones trained with: epoch 2 of a 2-epoch cosine from lr 0.5 runs at 0.5 (1 + cos(pi/2)) / 2;
    # the 1-epoch schedule of the checkpoint would have run it at lr 0 (its end)
    rows = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2] and rows[1]['lr'] == pytest.approx(0.25)
    train(parse_train_args([f for f in changed if f not in ('--epochs', '2')] + ['--epochs', '3', '--weight-decay', '0.01',
                                                                                 '--resume', str(out), '--resume-override']))
    from sp_timm.checkpoint import load_training_state
    groups = load_training_state(out / 'last')[1]['optimizer']['param_groups']
    assert sorted({g['weight_decay'] for g in groups}) == [0.0, 0.01]  # timm: no decay on biases and norms


def test_checkpoint_hash_covers_run_json_and_needs_state_json(run, tmp_path):
    import shutil
    checkpoint = tmp_path / 'ckpt'
    shutil.copytree(run / 'last', checkpoint)
    record = json.loads((checkpoint / 'run.json').read_text())
    assert json.loads((checkpoint / 'state.json').read_text())['sha256']['run.json'] == sha256_file(checkpoint / 'run.json')
    (checkpoint / 'run.json').write_text(json.dumps(dict(record, loss_params={'pstar': 0.99})))
    with pytest.raises(CheckpointError, match='run.json.*SHA-256'):
        load_model(str(checkpoint))
    (checkpoint / 'state.json').unlink()
    with pytest.raises(CheckpointError, match='no state.json'):
        load_model(str(checkpoint))


# ---- 4. untrusted metadata stays data ---------------------------------------------------------------------------

class _Touch:
    """Unpickling this creates ``path``: the proof that a pickle was executed."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_local_dir_loads_exactly_the_verified_safetensors(run, tmp_path):
    export = export_model(str(run / 'last'), tmp_path / 'export')
    executed = tmp_path / 'pickle-was-executed'
    torch.save({'fc.weight': _Touch(executed)}, export / 'pytorch_model.bin')
    model, _ = load_model(f'local-dir:{export}')
    reference, _ = create_model_from_checkpoint(run / 'last')
    assert weights_sha256(model) == weights_sha256(reference)
    (export / 'model.safetensors').unlink()
    with pytest.raises(CheckpointError, match='never from a pickle'):
        load_model(f'local-dir:{export}')
    assert not executed.exists()


@pytest.mark.parametrize('model_args, message', [
    ({'checkpoint_path': 'PICKLE'}, 'may not name files'), ({'pretrained_cfg': {'file': 'PICKLE'}}, 'may not name files'),
    ({'bogus': 1}, 'does not accept'), ([1, 2], 'mapping|expected an object')])
def test_model_args_from_files_are_checked(run, tmp_path, model_args, message):
    executed = tmp_path / 'pickle-was-executed'
    pickle_file = tmp_path / 'evil.pth'
    torch.save({'w': _Touch(executed)}, pickle_file)
    model_args = json.loads(json.dumps(model_args).replace('PICKLE', str(pickle_file)))
    export = export_model(str(run / 'last'), tmp_path / 'export')
    config = json.loads((export / 'config.json').read_text())
    (export / 'config.json').write_text(json.dumps(dict(config, model_args=model_args)))
    with pytest.raises(CheckpointError, match=message):
        load_model(f'local-dir:{export}')
    # run.json edited with its hash recomputed (what an attacker would do): the arguments are still checked
    import shutil
    checkpoint = tmp_path / 'ckpt'
    shutil.copytree(run / 'last', checkpoint)
    record = json.loads((checkpoint / 'run.json').read_text())
    (checkpoint / 'run.json').write_text(json.dumps(dict(record, model_args=model_args)))
    state = json.loads((checkpoint / 'state.json').read_text())
    state['sha256']['run.json'] = sha256_file(checkpoint / 'run.json')
    (checkpoint / 'state.json').write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=message):
        load_model(str(checkpoint))
    assert not executed.exists()
    assert check_model_args('small_cnn_cifar', {'num_classes': 10, 'drop_rate': 0.1}, 'x')


# ---- 5. validate before working ---------------------------------------------------------------------------------

@pytest.mark.parametrize('flags, message', [
    (['--num-classes', '0'], '--num-classes must be >= 2'), (['--mixup', '-1'], '--mixup is an alpha >= 0'),
    (['--cutmix', '-0.5'], '--cutmix is an alpha >= 0'), (['--mixup-prob', '2'], 'probability in [0, 1]'),
    (['--adv', 'pgd', '--adv-norm', 'L2', '--adv-eps', '100'], 'exceeds the diameter'),
    (['--model-kwargs', 'foo'], 'takes key=value pairs'), (['--model-kwargs', 'bogus=1'], 'does not accept'),
    (['--model-kwargs', 'checkpoint_path=/tmp/x.pth'], 'may not name files')])
def test_train_flags_are_checked_at_parse_time(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(TINY + ['--model', 'small_cnn_cifar', *flags])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and 'Traceback' not in err


def test_train_output_that_is_a_file_is_refused_before_training(tmp_path):
    target = tmp_path / 'file'
    target.write_text('keep')
    for output in (target, target / 'sub'):
        result = subprocess.run(CLI + ['train', *TINY, '--model', 'small_cnn_cifar', '--output', str(output)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and 'Traceback' not in result.stderr and 'a file' in result.stderr
        assert 'epoch' not in result.stdout  # refused before any training
    assert target.read_text() == 'keep' and sorted(tmp_path.iterdir()) == [target]


def test_eval_settings_are_checked_before_its_work_folder(run, tmp_path, capsys):
    out = tmp_path / 'eval'
    for flags, message in ((['-b', '0'], '--batch-size must be >= 1'), (['--fab-iters', '0'], '--fab-iters'),
                           (['--eps', '8'], 'write 8/255'), (['--curve-eps', '100', '--threat-model', 'L2'], 'diameter')):
        status, err = run_cli(['eval', '--checkpoint', run / 'last', '--out', out, *flags], capsys)
        assert status == 2 and message in err
    assert not out.exists()


def test_evaluate_points_refuses_zero_points():
    from sp_timm.eval import evaluate_points
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(ValueError, match='no points'):
        evaluate_points(model, torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), progress=False)


def _png(size=(32, 32), mode='RGB') -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format='PNG')
    return buffer.getvalue()


def _parquet(folder: Path, images, labels) -> Path:
    """Parquet files as pandas writes them: an image column of {'bytes', 'path'} dicts, no Image feature metadata."""
    import pandas as pd
    folder.mkdir(parents=True, exist_ok=True)
    for split in ('train', 'test'):
        frame = pd.DataFrame({'img': [{'bytes': b, 'path': None} for b in images], 'label': labels})
        frame.to_parquet(folder / f'{split}-00000-of-00001.parquet')
    return folder


def test_pandas_parquet_without_image_metadata_loads(tmp_path):
    from sp_timm.data import create_dataset
    data = create_dataset('cifar10', 'train', str(_parquet(tmp_path / 'ok', [_png()] * 10, list(range(10)))))
    assert data.images.shape == (10, 3, 32, 32) and data.labels.tolist() == list(range(10))


@pytest.mark.parametrize('images, labels, message', [
    ([_png()] * 3 + [b'not an image'], [0, 1, 2, 3], 'image 3 cannot be decoded'),
    ([_png((28, 28), 'L')] * 4, [0, 1, 2, 3], 'is 28x28 L, but cifar10 images are 32x32 RGB'),
    ([_png()] * 4, [0, 1, 2, 12], 'labels span 0..12, but there are 10 classes')])
def test_bad_local_data_is_one_error_line(tmp_path, capsys, images, labels, message):
    data_dir = _parquet(tmp_path / 'data', images, labels)
    before = snapshot(data_dir)
    status, err = run_cli(['data', '--dataset', 'cifar10', '--data-dir', data_dir], capsys)
    assert status == 2 and message in err and len([ln for ln in err.splitlines() if 'error' in ln]) == 1
    assert snapshot(data_dir) == before


# ---- 6. one error path; Ctrl-C ----------------------------------------------------------------------------------

@pytest.mark.parametrize('error, status, message', [
    (PermissionError(13, 'Permission denied', '/ro/out'), 2, "prog: error: Permission denied: '/ro/out'"),
    (IsADirectoryError(21, 'Is a directory', '/x'), 2, 'prog: error: Is a directory'),
    (json.JSONDecodeError('Expecting value', '{', 1), 2, 'prog: error: Expecting value'),
    (KeyboardInterrupt(), 130, 'prog: interrupted.')])
def test_run_reporting_errors_one_line(error, status, message, capsys, monkeypatch):
    import argparse
    monkeypatch.delenv('SP_TIMM_DEBUG', raising=False)

    def fail(args):
        raise error
    assert run_reporting_errors('prog', fail, argparse.Namespace()) == status
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count('\n') == 1
    with pytest.raises(type(error)):
        run_reporting_errors('prog', fail, argparse.Namespace(debug=True))

    def bug(args):
        raise RuntimeError('a bug')
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        run_reporting_errors('prog', bug, argparse.Namespace())


def test_sigint_during_training_says_how_to_resume(tmp_path):
    out = tmp_path / 'run'
    flags = [f for f in TINY if f not in ('--epochs', '1')] + ['--epochs', '200', '--model', 'small_cnn_cifar']
    # a shell without job control starts background jobs with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal's foreground job has
    proc = subprocess.Popen(CLI + ['train', *flags, '--output', str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (out / 'last').exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert 'Traceback' not in err and 'KeyboardInterrupt' not in err
    line = [ln for ln in err.splitlines() if 'interrupted' in ln]
    assert len(line) == 1 and f'--resume {out}' in line[0] and 'saved after epoch' in line[0]


def test_saving_an_epoch_again_never_leaves_a_link_without_its_folder(tmp_path, monkeypatch):
    """A resumed run that saves an epoch folder ``last`` or ``best`` already names: at every rename, and after a
    crash at any of them, each link resolves to a complete checkpoint."""
    import sp_timm.checkpoint as ckpt

    def save(epoch, value, is_best):
        return ckpt.save_checkpoint(tmp_path, epoch, {'w': torch.full((2,), float(value))}, {'step': value},
                                    {'note': value}, {'args': {}}, is_best=is_best)

    def links_complete():
        for link in ckpt.LINKS:
            target = tmp_path / link
            assert target.is_symlink() and (target / ckpt.STATE_FILE).is_file(), f'{link} dangles'

    save(1, 1, True)
    save(2, 2, False)
    real_replace = os.replace
    renames = []

    def checked_replace(src, dst):
        links_complete()
        renames.append(Path(dst).name)
        real_replace(src, dst)
        links_complete()

    monkeypatch.setattr(ckpt.os, 'replace', checked_replace)
    save(2, 20, True)  # epoch 2 again, while last names it
    assert 'epoch-0002' in renames
    weights = ckpt.load_state_dict_safely(tmp_path / 'last' / ckpt.WEIGHTS_FILE)
    assert weights['w'].tolist() == [20.0, 20.0]
    assert os.readlink(tmp_path / 'best') == 'epoch-0002'
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.epoch')) == []


def test_a_kill_between_the_link_updates_never_leaves_best_behind_the_recorded_best(tmp_path, monkeypatch):
    """Killed after the first of the two link replacements of a new best epoch: ``best`` points at a checkpoint at
    least as good as the ``best_metric`` that ``last``'s state records, so the resumed run's next save cannot prune
    the real best epoch (with ``last`` replaced first it would: best_metric 3, best on epoch 1)."""
    import sp_timm.checkpoint as ckpt

    def save(epoch, metric, best_so_far):
        return ckpt.save_checkpoint(tmp_path, epoch, {'w': torch.full((2,), float(epoch))}, {'step': epoch},
                                    {'metric': metric, 'best_metric': best_so_far}, {'args': {}},
                                    is_best=metric >= best_so_far)

    save(1, 1.0, 1.0)
    save(2, 0.5, 1.0)
    real_replace_link, calls = ckpt._replace_link, []

    def killed_on_second(output, link, name):
        calls.append(link)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace_link(output, link, name)

    monkeypatch.setattr(ckpt, '_replace_link', killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        save(3, 3.0, 3.0)
    recorded = json.loads((tmp_path / 'last' / ckpt.STATE_FILE).read_text())['best_metric']
    best = json.loads((tmp_path / 'best' / ckpt.STATE_FILE).read_text())['metric']
    assert best >= recorded, (os.readlink(tmp_path / 'best'), os.readlink(tmp_path / 'last'))


def test_resume_into_another_runs_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    flags = TINY + ['--model', 'small_cnn_cifar', '--loss', 'ce']
    train(parse_train_args(flags + ['--output', str(tmp_path / 'a')]))
    train(parse_train_args(flags + ['--output', str(tmp_path / 'b'), '--seed', '1']))
    before = snapshot(tmp_path)
    status = cli_main(['train', *flags, '--epochs', '2', '--resume-override', '--resume', str(tmp_path / 'a'),
                       '--output', str(tmp_path / 'b')])
    err = capsys.readouterr().err
    assert status == 2 and 'already holds another run' in err and 'Traceback' not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('first, then, message', [
    (['--sched', 'plateau'], ['--epochs', '2', '--resume-override'], 'plateau schedule'),
    (['--sched-on-updates'], ['--batch-size', '16', '--resume-override'], 'changes the updates per epoch'),
    (['--class-weight', 'balanced'], [], 'earlier class-weighted loss'),
], ids=['plateau-rebuilt', 'per-update-schedule-resized', 'old-class-weight-reduction'])
def test_a_resume_that_cannot_continue_the_same_schedule_or_loss_is_refused(tmp_path, capsys, first, then, message):
    """Resumes whose next epochs would not train as the flags say: a plateau schedule rebuilt (its lr follows the
    metrics seen), a per-update schedule over another number of updates per epoch, a class-weighted run saved with
    the earlier plain-mean loss. Refused with one error line, the run untouched; the last one goes on under
    --resume-override and its record says until which epoch the earlier loss ran."""
    from sp_timm.checkpoint import STATE_FILE
    out = tmp_path / 'run'
    flags = TINY + ['--model', 'small_cnn_cifar', '--loss', 'ce', *first, '--output', str(out)]
    train(parse_train_args(flags))
    if '--class-weight' in first:  # as a run of the earlier release recorded it (and hashed that record)
        record_path, state_path = out / 'last' / 'run.json', out / 'last' / STATE_FILE
        record = json.loads(record_path.read_text())
        del record['class_weight']['reduction'], record['schema_version']  # version 1: flags as 'args'
        record['args'] = record.pop('config')
        record_path.write_text(json.dumps(record))
        state = json.loads(state_path.read_text())
        state['sha256']['run.json'] = sha256_file(record_path)
        state_path.write_text(json.dumps(state))
    before = snapshot(out)
    status = cli_main(['train', *flags, *then, '--resume', str(out)])  # a flag given again: its last value counts
    err = capsys.readouterr().err
    assert status == 2 and message in err and 'Traceback' not in err, err
    assert snapshot(out) == before
    if '--class-weight' in first:
        train(parse_train_args(flags + ['--epochs', '2', '--resume', str(out), '--resume-override']))
        record = json.loads((out / 'last' / 'run.json').read_text())
        assert record['class_weight']['reduction_history'] == [{'until_epoch': 1, 'reduction': 'mean_i w_i l_i'}]
