""" Where a model comes from (sp_timm.model_source): local-dir: loads exactly the verified safetensors, model
arguments read from files name no file and are checked, pickles never run. """
import json
import re
import shutil
from pathlib import Path
import pytest
import torch
import sp_timm  # noqa: F401  (registers the models)
from sp_timm.errors import CheckpointError
from sp_timm.model_source import check_model_args, create_model_from_checkpoint, load_model
from sp_timm.files import sha256_file
from sp_timm.checkpoint import weights_sha256
from sp_timm.export.hub import export_model



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


class _Touch:
    """Unpickling this creates ``path``: the proof that a pickle was executed."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


@pytest.mark.parametrize('model_args, message', [
    ({'checkpoint_path': 'PICKLE'}, 'may not name files'),
    ({'pretrained_cfg': {'file': 'PICKLE'}}, 'may not name files'),
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


@pytest.mark.parametrize('architecture, message', [
    ('hf-hub:timm/resnet18.a1_in1k', 'points at a Hub repository'),
    ('local-dir:/tmp', 'points at a folder'),
    ('no_such_architecture_v9', 'is not a registered timm architecture')])
def test_an_untrusted_config_names_only_registered_architectures(run, tmp_path, architecture, message, monkeypatch):
    """A config.json naming another model to load (a Hub repo: timm would look it up online) is refused before
    timm.create_model is called (a plain timm folder: in an sp-timm export, sp_timm.json would disagree first)."""
    import timm
    export = export_model(str(run / 'last'), tmp_path / 'export')
    (export / 'sp_timm.json').unlink()
    config = json.loads((export / 'config.json').read_text())
    (export / 'config.json').write_text(json.dumps(dict(config, architecture=architecture)))
    created = []
    monkeypatch.setattr(timm, 'create_model', lambda *a, **k: created.append(a))
    with pytest.raises(CheckpointError, match=message):
        load_model(f'local-dir:{export}')
    assert created == []


def test_names_are_limited_in_bytes_not_only_characters():
    from sp_timm.files import safe_path_component
    assert safe_path_component('é' * 100, 'name') == 'é' * 100  # 200 bytes
    with pytest.raises(ValueError, match='201 bytes long in UTF-8'):
        safe_path_component('é' * 100 + 'x', 'name')


@pytest.mark.parametrize('tampered', ['model.safetensors', 'sp_timm.json'])
def test_an_export_changed_after_it_was_written_is_refused(run, tmp_path, tampered, capsys):
    """A local-dir: folder whose weights (or export record) no longer match the SHA-256 its export marker recorded
    would be evaluated and re-exported under the old record's loss and name: refused, naming the file and the fix."""
    from safetensors.torch import load_file, save_file
    from sp_timm.cli import main
    export = export_model(str(run / 'last'), tmp_path / 'export')
    if tampered == 'model.safetensors':
        weights = load_file(str(export / 'model.safetensors'))
        name = next(iter(weights))
        weights[name] = weights[name] + 1.0  # other weights of the same shapes: they would load
        save_file(weights, str(export / 'model.safetensors'))
    else:
        record = json.loads((export / 'sp_timm.json').read_text())
        record['run']['loss_params'] = {'pstar': 0.5}
        (export / 'sp_timm.json').write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=f"{tampered}' was changed after sp-timm export wrote this folder"):
        load_model(f'local-dir:{export}')
    status = main(['export', '--checkpoint', f'local-dir:{export}', '--out', str(tmp_path / 'again')])
    assert status == 2 and 'was changed after sp-timm export' in capsys.readouterr().err
    assert not (tmp_path / 'again').exists()
    (export / '.sp-timm-export.json').unlink()
    (export / 'sp_timm.json').unlink()  # the documented way to load it as a plain timm folder
    assert load_model(f'local-dir:{export}')[1].run is None


def _edit_record_with_its_hash(checkpoint: Path, **fields) -> None:
    """What an attacker or a careless script does: edit run.json and recompute its SHA-256 in state.json."""
    record = json.loads((checkpoint / 'run.json').read_text())
    (checkpoint / 'run.json').write_text(json.dumps(dict(record, **fields)))
    state = json.loads((checkpoint / 'state.json').read_text())
    state['sha256']['run.json'] = sha256_file(checkpoint / 'run.json')
    (checkpoint / 'state.json').write_text(json.dumps(state))


@pytest.mark.parametrize('fields, message', [
    ({'loss': 'nope'}, "names a loss sp-timm cannot rebuild \\(Unknown loss 'nope'"),
    ({'loss_params': {'zzz': 1}}, "'sp_ls' got unknown parameter"),
    ({'loss': 'ce', 'loss_params': {'pstar': 0.9}}, "timm's loss 'ce' takes no recorded parameters"),
    ({'classes': ['a', 'b']}, 'classes names 2 classes, num_classes is 10'),
    ({'num_classes': '10'}, "num_classes: expected a whole number, got str '10'"),
])
def test_an_edited_run_record_fails_on_the_command_line_before_any_work(run, tmp_path, fields, message, capsys):
    """sp-timm eval of a checkpoint whose run.json breaks its rules (hash recomputed, so only the content can tell):
    one line naming the field, exit status 2, no evaluation folder started."""
    from sp_timm.cli import main
    checkpoint = tmp_path / 'ckpt'
    shutil.copytree(run / 'last', checkpoint)
    _edit_record_with_its_hash(checkpoint, **fields)
    capsys.readouterr()
    status = main(['eval', '--checkpoint', str(checkpoint), '--n-examples', '8', '--out', str(tmp_path / 'ev'),
                   '--no-progress'])
    err = capsys.readouterr().err
    assert status == 2 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / 'ev').exists()


def test_an_export_folder_whose_files_disagree_is_refused(run, tmp_path):
    """config.json builds the model, sp_timm.json describes it: when they disagree (or a plain folder's label names
    do not match its class count) the folder is refused before the model is built."""
    export = export_model(str(run / 'last'), tmp_path / 'export')
    (export / '.sp-timm-export.json').unlink()  # without the marker only the contents can tell
    record = json.loads((export / 'sp_timm.json').read_text())
    record['run']['model'] = 'resnet18'
    (export / 'sp_timm.json').write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="config.json builds 'small_cnn_cifar' with 10 classes, but sp_timm.json"):
        load_model(f'local-dir:{export}')
    (export / 'sp_timm.json').unlink()
    config = json.loads((export / 'config.json').read_text())
    (export / 'config.json').write_text(json.dumps(dict(config, label_names=['only', 'three', 'names'])))
    with pytest.raises(CheckpointError, match='label_names must be a list of 10 strings'):
        load_model(f'local-dir:{export}')
