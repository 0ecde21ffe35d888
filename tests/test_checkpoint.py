""" Checkpoints (sp_timm.checkpoint): hashes cover every file, run.json included; saving an epoch again or a kill
between the link updates never leaves a link without its folder or best behind the recorded best. """
import json
import os
import shutil
from pathlib import Path
import pytest
import torch
import sp_timm  # noqa: F401  (registers the models)
from sp_timm.errors import CheckpointError
from sp_timm.model_source import load_model
from sp_timm.files import sha256_file


def test_checkpoint_hash_covers_run_json_and_needs_state_json(run, tmp_path):
    checkpoint = tmp_path / 'ckpt'
    shutil.copytree(run / 'last', checkpoint)
    record = json.loads((checkpoint / 'run.json').read_text())
    assert (json.loads((checkpoint / 'state.json').read_text())['sha256']['run.json']
            == sha256_file(checkpoint / 'run.json'))
    (checkpoint / 'run.json').write_text(json.dumps(dict(record, loss_params={'pstar': 0.99})))
    with pytest.raises(CheckpointError, match='run.json.*SHA-256'):
        load_model(str(checkpoint))
    (checkpoint / 'state.json').unlink()
    with pytest.raises(CheckpointError, match='no state.json'):
        load_model(str(checkpoint))


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


def test_pruning_removes_only_checkpoint_folders_never_a_users_files(tmp_path):
    """``save_checkpoint`` prunes the epoch folders no link names; a folder of that name holding anything else (a
    user's notes, a copied run's extra files) stays."""
    import sp_timm.checkpoint as ckpt
    (tmp_path / 'epoch-0001').mkdir()
    (tmp_path / 'epoch-0001' / 'notes.txt').write_text('mine')
    ckpt.save_checkpoint(tmp_path, 2, {'w': torch.zeros(2)}, {}, {}, {'args': {}}, is_best=True)
    ckpt.save_checkpoint(tmp_path, 3, {'w': torch.ones(2)}, {}, {}, {'args': {}}, is_best=True)
    assert (tmp_path / 'epoch-0001' / 'notes.txt').read_text() == 'mine'
    assert not (tmp_path / 'epoch-0002').exists() and os.readlink(tmp_path / 'last') == 'epoch-0003'
