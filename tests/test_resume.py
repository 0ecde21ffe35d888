""" What a resume may change (sp_timm.train.resume): changed flags refused or recorded under args_history, another
run's folder refused, schedules and losses that cannot continue refused, Ctrl-C says how to resume. """
import json
import os
import signal
import subprocess
import time
import pytest
import sp_timm  # noqa: F401  (registers the models)
from sp_timm.files import sha256_file
from sp_timm.cli import main as cli_main
from sp_timm.cli.train import parse_train_args
from sp_timm.train import train
from conftest import snapshot, TINY_FLAGS as TINY
from conftest import CLI, run_cli


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
    assert (record['config']['lr'] == 0.5
            and record['args_history'] == [{'until_epoch': 1, 'args': {'epochs': 1, 'lr': 0.05}}])
    # the new values are the ones trained with: epoch 2 of a 2-epoch cosine from lr 0.5 runs at 0.5 (1 + cos(pi/2)) / 2;
    # the 1-epoch schedule of the checkpoint would have run it at lr 0 (its end)
    rows = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2] and rows[1]['lr'] == pytest.approx(0.25)
    train(parse_train_args([f for f in changed if f not in ('--epochs', '2')]
                           + ['--epochs', '3', '--weight-decay', '0.01', '--resume', str(out), '--resume-override']))
    from sp_timm.checkpoint import load_training_state
    groups = load_training_state(out / 'last')[1]['optimizer']['param_groups']
    assert sorted({g['weight_decay'] for g in groups}) == [0.0, 0.01]  # timm: no decay on biases and norms


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


def _linkless_copy(run, folder):
    """A run folder as ``rsync -r --no-links`` or an object store leaves it: the epoch folders, no last / best."""
    import shutil
    shutil.copytree(run, folder, symlinks=True, ignore=lambda _, names: [n for n in names if n in ('last', 'best')])
    return folder


def test_a_new_run_into_a_run_copied_without_its_links_is_refused(run, tmp_path, capsys):
    copy = _linkless_copy(run, tmp_path / 'copy')
    before = snapshot(copy)
    assert any(name.startswith('epoch-') for name in before) and 'metrics.jsonl' in before
    status, err = run_cli(['train', *TINY, '--model', 'small_cnn_cifar', '--output', copy], capsys)
    assert status == 2 and "no 'last' link" in err and '--resume' in err and snapshot(copy) == before
    checkpoint = next(copy.glob('epoch-*'))  # the copy continues from its checkpoint folder, as the message says
    status, err = run_cli(['train', *TINY, '--model', 'small_cnn_cifar', '--loss', 'sp_ls', '--epochs', '2',
                           '--resume', checkpoint, '--resume-override'], capsys)
    assert status == 0 and (copy / 'last').is_symlink()


def test_a_new_run_into_a_users_folder_of_run_names_is_refused(tmp_path, capsys):
    out = tmp_path / 'mine'
    for name, text in (('epoch-0001/notes.txt', 'a'), ('epoch-0003/data.csv', 'b'), ('metrics.jsonl', 'c\n')):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = snapshot(out)
    status, err = run_cli(['train', *TINY, '--model', 'small_cnn_cifar', '--output', out], capsys)
    assert status == 2 and 'epoch-0001, epoch-0003, metrics.jsonl' in err and snapshot(out) == before
    (out / 'epoch-0001' / 'notes.txt').unlink(), (out / 'epoch-0001').rmdir()
    (out / 'epoch-0003' / 'data.csv').unlink(), (out / 'epoch-0003').rmdir()
    (out / 'metrics.jsonl').unlink()
    (out / 'README.md').write_text('unrelated files are left alone')
    status, _ = run_cli(['train', *TINY, '--model', 'small_cnn_cifar', '--output', out], capsys)
    assert status == 0 and (out / 'README.md').read_text() == 'unrelated files are left alone'


def test_a_full_disk_while_saving_is_one_line_naming_the_last_saved_epoch(tmp_path, capsys, monkeypatch):
    """safetensors reports ENOSPC as its own error type: the CLI still prints one line, says which checkpoint is
    intact and how to resume, and the earlier checkpoint is untouched."""
    import safetensors.torch
    from sp_timm.cli import main
    from conftest import TINY_FLAGS, snapshot
    out = tmp_path / 'run'
    assert main(['train', *TINY_FLAGS, '--output', str(out)]) == 0
    before = snapshot(out / 'epoch-0001')

    def full(*args, **kwargs):
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                           'on device" })')
    monkeypatch.setattr(safetensors.torch, 'save_file', full)
    status = main(['train', *[f if f != '1' else '2' for f in TINY_FLAGS], '--resume', str(out),
                   '--resume-override'])
    err = capsys.readouterr().err
    assert status == 2 and 'No space left on the device while writing checkpoint epoch-0002' in err
    assert f'{out}/epoch-0001, is untouched' in err and f'--resume {out}' in err and 'Traceback' not in err
    assert snapshot(out / 'epoch-0001') == before and os.readlink(out / 'last') == 'epoch-0001'
    assert not [p.name for p in out.iterdir() if p.name.startswith('.')]  # no half-written checkpoint left
