""" The validation split: carved from the training split, stratified, deterministic, disjoint from training and
test images; `best` and the per-epoch metrics come from it; --val-split 0 keeps validating on test. """
import hashlib

import numpy as np
import pytest
import torch

from sp_timm.data import (DataError, carve_validation, create_dataset, parse_val_split, resolve_val_size,
                          stratified_split)
from sp_timm.cli.train import parse_train_args
from sp_timm.train import read_metrics, train


def _hashes(data):
    return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in data.images}


def test_stratified_split_is_disjoint_stratified_and_deterministic():
    labels = np.repeat(np.arange(4), [500, 300, 150, 50])
    train_idx, val_idx = stratified_split(labels, 100)
    assert len(val_idx) == 100 and len(np.intersect1d(train_idx, val_idx)) == 0
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[val_idx]).tolist() == [50, 30, 15, 5]  # proportional to the class counts
    again_train, again_val = stratified_split(labels, 100)
    assert np.array_equal(val_idx, again_val) and np.array_equal(train_idx, again_train)
    assert not np.array_equal(val_idx, stratified_split(labels, 100, seed=1)[1])


def test_every_class_keeps_a_training_image():
    labels = np.repeat(np.arange(3), [10, 2, 1])
    train_idx, val_idx = stratified_split(labels, 6)
    assert len(val_idx) == 6 and set(labels[train_idx]) == {0, 1, 2}


def test_digits_validation_is_carved_from_train_and_disjoint_from_test():
    full = create_dataset('digits', 'train')
    train, val, record = carve_validation(full, None)  # auto: min(1000, 10 %)
    assert len(val) == record['size'] == round(0.1 * len(full)) and len(train) + len(val) == len(full)
    assert not _hashes(val) & _hashes(create_dataset('digits', 'test'))
    assert not _hashes(val) & _hashes(train)
    counts, val_counts = np.array(full.class_counts()), np.array(record['class_counts'])
    assert np.all(np.abs(val_counts - 0.1 * counts) <= 1)  # stratified
    assert (record['indices_sha256']
            == hashlib.sha256(np.asarray(record['indices'], dtype=np.int64).tobytes()).hexdigest())
    assert carve_validation(full, None)[2]['indices'] == record['indices']  # fixed seed


def test_val_split_values():
    assert parse_val_split('auto') is None and parse_val_split('0') == 0
    assert parse_val_split('200') == 200 and parse_val_split('0.25') == 0.25
    assert resolve_val_size(0.25, 400) == 100 and resolve_val_size(None, 50_000) == 1000
    for bad in ('-1', 'abc', '2.5', 'nan'):
        with pytest.raises(DataError, match='--val-split'):
            parse_val_split(bad)
    with pytest.raises(DataError, match='--val-split 1.0: write a count as a whole number'):
        parse_val_split('1.0')  # all of the training split as a fraction, or one image? neither is read silently
    with pytest.raises(DataError, match='only 100'):
        resolve_val_size(100, 100)
    assert resolve_val_size(0.002, 1384) == 3
    with pytest.raises(DataError, match='rounds to none.*give 0 to validate on the test split'):
        resolve_val_size(0.0003, 1384)  # a fraction asked for a holdout: never the test split silently


def test_bad_val_split_flags_are_clear_errors(capsys):
    base = ['--dataset', 'digits', '--model', 'small_cnn_cifar']
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(base + ['--val-split', '-3'])
    assert exit_info.value.code == 2 and '--val-split must be >= 0' in capsys.readouterr().err


@pytest.fixture(scope='module')
def accuracy_on():
    from sp_timm.model_source import load_model

    def accuracy(checkpoint, data):
        model, _ = load_model(str(checkpoint))
        with torch.no_grad():
            return 100 * (model(data.images.float() / 255).argmax(1) == data.labels).double().mean().item()
    return accuracy


@pytest.mark.parametrize('val_split', ['auto', '0'])
def test_epoch_metrics_and_best_come_from_the_validation_split(tmp_path, accuracy_on, val_split):
    from sp_timm.checkpoint import read_run_record
    out = train(parse_train_args(['--dataset', 'digits', '--model', 'small_cnn_cifar', '--epochs', '2', '--batch-size',
                                  '64', '--lr', '0.05', '--no-aug', '--no-progress', '--val-split', val_split,
                                  '--output', str(tmp_path / 'run')]))
    record = read_run_record(out / 'last')
    full = create_dataset('digits', 'train')
    if val_split == 'auto':
        _, expected, split = carve_validation(full, None)
        assert record.validation.indices == split['indices'] and record.validation.used == len(expected)
        assert sum(record.train_class_counts) == len(full) - len(expected)
    else:
        expected = create_dataset('digits', 'test')
        assert record.validation.size == 0 and sum(record.train_class_counts) == len(full)
    rows = read_metrics(out / 'metrics.jsonl')
    assert rows[-1]['val_acc'] == pytest.approx(accuracy_on(out / 'last', expected), abs=1e-6)
    best_epoch = max(rows, key=lambda r: r['val_acc'])['epoch']  # first of the ties, as `best` keeps the first
    assert (out / 'best').resolve().name == f'epoch-{best_epoch:04d}'
