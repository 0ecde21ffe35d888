import os
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sp_timm import create_loss, list_losses
from sp_timm.cli import main
from sp_timm.data import (
    GROUP_RULES, DataError, TensorLoader, class_groups, create_dataset, create_mixup, group_rule, longtail_counts,
    longtail_indices, random_crop_flip,
)
from sp_timm.data.class_names import CLASS_NAMES, class_names
from conftest import run_cli
from conftest import snapshot


def test_longtail_counts_reproduce_cifar_lt():
    assert longtail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(longtail_counts(5000, 10, 100)) == 12406
    assert sum(longtail_counts(500, 100, 100)) == 10847
    assert sum(longtail_counts(5000, 10, 10)) == 20431
    assert longtail_counts(5000, 10, 100, 'step') == [5000] * 5 + [50] * 5
    assert longtail_counts(100, 4, 1) == [100] * 4
    with pytest.raises(ValueError, match='profile must be one of'):
        longtail_counts(5000, 10, 100, 'linear')
    for bad in (0.5, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='ratio must be a number >= 1'):
            longtail_counts(5000, 10, bad)
    assert min(longtail_counts(134, 10, 134)) == 1
    for profile in ('exp', 'step'):  # no class left without images
        with pytest.raises(ValueError, match=r'smallest class no training image .* a ratio below 134'):
            longtail_counts(134, 10, 200, profile)


def test_longtail_indices_follow_ldam_drw():
    """Reference: LDAM-DRW seeds numpy's global RNG with 0, then shuffles each class's indices in turn."""
    labels = np.repeat(np.arange(5), 40)
    np.random.default_rng(3).shuffle(labels)
    counts = longtail_counts(40, 5, 10)
    np.random.seed(0)
    reference = []
    for cls, count in zip(np.unique(labels), counts):
        idx = np.where(labels == cls)[0]
        np.random.shuffle(idx)
        reference.append(idx[:count])
    kept = longtail_indices(labels, counts)
    np.testing.assert_array_equal(kept, np.concatenate(reference))
    np.testing.assert_array_equal(kept, longtail_indices(labels, counts))  # deterministic
    assert np.bincount(labels[kept]).tolist() == counts
    with pytest.raises(ValueError, match='fewer than'):
        longtail_indices(labels, [41] * 5)


def test_class_groups_boundaries():
    assert class_groups([500, 101, 100, 20, 19, 0]) == {'many': [0, 1], 'medium': [2, 3], 'few': [4, 5]}
    assert group_rule([500, 101, 100, 20, 19, 0]) == 'shots'


def test_cifar100_lt_keeps_the_literatures_shot_groups():
    counts = longtail_counts(500, 100, 100)
    assert group_rule(counts) == 'shots'
    assert {g: len(m) for g, m in class_groups(counts).items()} == {'many': 35, 'medium': 35, 'few': 30}


@pytest.mark.parametrize('ratio, profile', [(100, 'exp'), (50, 'exp'), (10, 'exp'), (100, 'step')])
def test_cifar10_lt_groups_are_thirds_and_none_is_empty(ratio, profile):
    counts = longtail_counts(5000, 10, ratio, profile)
    shots = class_groups(counts, 'shots')
    assert not all(shots.values())  # the thresholds leave a group empty (ratio 100: 8 / 2 / 0)
    assert group_rule(counts) == 'thirds'
    groups = class_groups(counts)
    assert list(groups) == ['head', 'middle', 'tail'] and [len(m) for m in groups.values()] == [3, 4, 3]
    assert sorted(c for m in groups.values() for c in m) == list(range(10))
    assert min(counts[c] for c in groups['head']) >= max(counts[c] for c in groups['middle'])
    assert min(counts[c] for c in groups['middle']) >= max(counts[c] for c in groups['tail'])
    if profile == 'exp':
        assert groups == {'head': [0, 1, 2], 'middle': [3, 4, 5, 6], 'tail': [7, 8, 9]}


def test_thirds_sort_by_count_not_by_index_and_balanced_data_keep_one_group():
    groups = class_groups([50, 5000, 60, 4000, 70, 3000], 'thirds')
    assert groups == {'head': [1, 3], 'middle': [4, 5], 'tail': [0, 2]}
    assert group_rule([5000] * 10) == "shots" and class_groups([5000] * 10)["many"] == list(range(10))
    assert group_rule([141, 134, 139, 137, 138, 140, 135, 136, 139, 134]) == "shots"  # digits: nearly balanced
    with pytest.raises(ValueError, match='group rule'):
        class_groups([1, 2, 3], 'quartiles')


def test_cifar_class_names():
    assert class_names('cifar10', 10)[:3] == ['airplane', 'automobile', 'bird'] and len(CLASS_NAMES['cifar100']) == 100
    assert len(set(CLASS_NAMES['cifar100'])) == 100 and class_names('cifar100', 100)[-1] == 'worm'
    assert class_names('digits', 10) == [str(d) for d in range(10)]


def test_digits_split_and_pixels():
    train, test = create_dataset('digits', 'train'), create_dataset('digits', 'test')
    assert (len(train), len(test)) == (1384, 413)
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    assert train.num_classes == 10 and train.classes[3] == '3'
    from sklearn.datasets import load_digits
    full = np.bincount(load_digits().target)
    assert np.all(np.abs(np.array(test.class_counts()) - full * 413 / 1797) <= 1)  # stratified
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey in 3 channels
    assert train.images.max() == 255 and train.images.min() == 0
    again = create_dataset('digits', 'train')
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_digits_lt_keeps_test_balanced():
    train = create_dataset('digits-lt', 'train', imbalance_ratio=10)
    assert train.class_counts() == longtail_counts(134, 10, 10)
    assert 'long-tailed' in train.source and train.meta['imbalance_ratio'] == 10
    assert create_dataset('digits-lt', 'test').class_counts() == create_dataset('digits', 'test').class_counts()


def make_cifar_like(num_per_split=(20, 10), fine=False):
    """A tiny dataset in the Hub schema of uoft-cs/cifar10 (img, label) or cifar100 (img, fine_label)."""
    import datasets
    from PIL import Image
    rng = np.random.default_rng(0)
    label_name = 'fine_label' if fine else 'label'
    num_classes = 100 if fine else 10
    splits = {}
    for split, n in zip(('train', 'test'), num_per_split):
        pixels = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        features = datasets.Features({'img': datasets.Image(),
                                      label_name: datasets.ClassLabel(names=[f'c{i}' for i in range(num_classes)])})
        splits[split] = datasets.Dataset.from_dict(
            {'img': [Image.fromarray(p) for p in pixels], label_name: [i % num_classes for i in range(n)]},
            features=features)
    return datasets.DatasetDict(splits)


@pytest.mark.parametrize('fmt', ['save_to_disk', 'save_to_disk_per_split', 'parquet', 'imagefolder'])
def test_local_cifar_formats(tmp_path, fmt):
    dataset = make_cifar_like()
    if fmt == 'save_to_disk':
        dataset.save_to_disk(str(tmp_path))
    elif fmt == 'save_to_disk_per_split':
        for split, ds in dataset.items():
            ds.save_to_disk(str(tmp_path / split))
    elif fmt == 'parquet':
        for split, ds in dataset.items():
            ds.to_parquet(str(tmp_path / f'{split}-00000-of-00001.parquet'))
    else:
        for split, ds in dataset.items():
            for i, row in enumerate(ds):
                folder = tmp_path / split / f"c{row['label']}"
                folder.mkdir(parents=True, exist_ok=True)
                row['img'].save(folder / f'{i:03d}.png')
    train = create_dataset('cifar10', 'train', data_dir=str(tmp_path))
    test = create_dataset('cifar10', 'test', data_dir=str(tmp_path))
    assert (len(train), len(test)) == (20, 10)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    expected = {tuple(np.asarray(im).reshape(-1)[:16]) for im in dataset['train']['img']}
    assert {tuple(im.permute(1, 2, 0).reshape(-1)[:16].tolist()) for im in train.images} == expected
    assert sorted(train.labels.tolist()) == sorted(dataset['train']['label'])
    assert train.classes[:2] == ['c0', 'c1']


def test_local_cifar100_schema(tmp_path):
    make_cifar_like((30, 10), fine=True).save_to_disk(str(tmp_path))
    data = create_dataset('cifar100', 'train', data_dir=str(tmp_path))
    assert data.num_classes == 100 and data.labels.tolist() == list(range(30))


def test_local_data_errors(tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        create_dataset('cifar10', 'train', data_dir=str(tmp_path / 'missing'))
    with pytest.raises(DataError, match='holds no dataset'):
        create_dataset('cifar10', 'train', data_dir=str(tmp_path))
    wrong = make_cifar_like().rename_column('label', 'target')
    wrong.save_to_disk(str(tmp_path / 'wrong'))
    with pytest.raises(DataError, match="label column 'label'"):
        create_dataset('cifar10', 'train', data_dir=str(tmp_path / 'wrong'))
    import datasets
    train = make_cifar_like()['train']
    train.save_to_disk(str(tmp_path / 'one' / 'train'))  # one split, saved alone: its name is its folder's
    assert len(create_dataset('cifar10', 'train', data_dir=str(tmp_path / 'one' / 'train'))) == 20
    recorded = datasets.Dataset(train.data, info=train.info, split=datasets.Split.TEST)
    recorded.save_to_disk(str(tmp_path / 'cifar10_test'))  # as load_dataset(..., split='test') saves it
    assert len(create_dataset('cifar10', 'test', data_dir=str(tmp_path / 'cifar10_test'))) == 20
    datasets.Dataset(train.data, info=train.info, split=datasets.Split.TRAIN).save_to_disk(
        str(tmp_path / 'mixed' / 'test'))
    for folder, message in (('one/train', "holds one split of unknown name .* not the 'test' split"),
                            ('one', 'holds no dataset'), ('mixed', "holds the 'train' split .* not the 'test' split"),
                            ('mixed/test', "holds the 'train' split")):
        with pytest.raises(DataError, match=message):  # never the training images as the test split
            create_dataset('cifar10', 'test', data_dir=str(tmp_path / folder))
    with pytest.raises(DataError, match='Unknown dataset'):
        create_dataset('mnist')
    with pytest.raises(DataError, match='split must be'):
        create_dataset('digits', 'val')
    with pytest.raises(DataError, match='ships with scikit-learn.*leave --data-dir out'):
        create_dataset('digits-lt', 'train', data_dir=str(tmp_path))


def test_offline_without_cache_says_how_to_provide_data(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', HF_HOME=str(tmp_path))
    code = ('from sp_timm.data import create_dataset, DataError\n'
            'try:\n    create_dataset("cifar10")\nexcept DataError as e:\n    print("DATAERROR", e)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300)
    assert 'DATAERROR' in result.stdout, result.stderr[-2000:]
    assert '--data-dir' in result.stdout and 'uoft-cs/cifar10' in result.stdout


def test_augmentation_is_a_padded_crop_and_flip():
    images = torch.rand(6, 3, 32, 32)
    out = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    padded = F.pad(images, (4,) * 4)
    for i in range(len(images)):
        candidates = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    assert not torch.equal(out, images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_augmentation_on_cuda_draws_the_crops_of_the_cpu():
    """The offsets reach the GPU by a non-blocking copy from pinned memory: same crops as on the CPU."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    cpu = random_crop_flip(images, 4, torch.Generator().manual_seed(3))
    cuda = random_crop_flip(images.cuda(), 4, torch.Generator().manual_seed(3))
    assert torch.equal(cuda.cpu(), cpu)


def test_loader_batches_epochs_and_shards():
    data = create_dataset('digits', 'test')  # 413 images
    loader = TensorLoader(data, batch_size=64, shuffle=True, augment=True, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 7
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (64, 3, 32, 32)
    assert 0 <= batches[0][0].min() and batches[0][0].max() <= 1
    first = loader.shard_indices()
    loader.set_epoch(1)
    assert not torch.equal(first, loader.shard_indices())
    loader.set_epoch(0)
    assert torch.equal(first, loader.shard_indices())
    # evaluation shards: disjoint, covering every image once
    shards = [TensorLoader(data, 50, num_shards=2, shard_index=r, even_shards=False).shard_indices() for r in range(2)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(413))
    # training shards: equal length (wrapped), together covering everything
    train_shards = [TensorLoader(data, 50, shuffle=True, num_shards=2, shard_index=r).shard_indices() for r in range(2)]
    assert len(train_shards[0]) == len(train_shards[1]) == 207
    assert set(torch.cat(train_shards).tolist()) == set(range(413))
    with pytest.raises(ValueError, match='shard_index'):
        TensorLoader(data, 50, num_shards=2, shard_index=2)


def test_mixup_targets_feed_every_sp_loss():
    assert create_mixup(10) is None
    mixup = create_mixup(10, mixup=0.8, cutmix=1.0, smoothing=0.1)
    images, labels = next(iter(TensorLoader(create_dataset('digits', 'test'), batch_size=32)))
    mixed, target = mixup(images, labels)
    assert target.shape == (32, 10) and torch.allclose(target.sum(-1), torch.ones(32))
    logits = torch.randn(32, 10)
    for name in list_losses('sp_*'):
        assert torch.isfinite(create_loss(name)(logits, target))


def test_data_command(capsys):
    assert main(['data', '--dataset', 'cifar10-lt']) == 0
    out = capsys.readouterr().out
    assert '12406 train / 10000 test' in out and 'count formula' in out
    rows = {line.split('|')[2].strip(): line for line in out.splitlines()
            if line.startswith('| ') and 'train' not in line}
    assert list(rows) == list(CLASS_NAMES['cifar10'])
    assert rows['airplane'].split('|')[5].strip() == 'head' and rows['truck'].split('|')[5].strip() == 'tail'
    assert GROUP_RULES['thirds'] in out and 'head: 3 classes, middle: 4 classes, tail: 3 classes' in out
    assert main(['data', '--dataset', 'digits-lt', '--imbalance-ratio', '10']) == 0
    out = capsys.readouterr().out
    assert f"{sum(longtail_counts(134, 10, 10))} train / 413 test" in out and 'counted in the loaded data' in out
    assert main(['data', '--dataset', 'cifar10', '--data-dir', '/nonexistent']) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_eval_report_names_the_group_rule():
    from sp_timm.eval import STANDARD_ATTACKS, PointsResult
    from sp_timm.eval.report import LongTail
    from sp_timm.records import GroupRule
    from conftest import toy_report
    counts = longtail_counts(5000, 10, 100)
    labels = torch.arange(10).repeat(2)
    flags = torch.ones(20, dtype=torch.bool)
    aa = {'clean': flags, **{a: flags for a in STANDARD_ATTACKS}, 'robust': flags, 'perturbation': torch.zeros(20)}
    report = toy_report(PointsResult(eps=8 / 255, aa=aa), labels, eps=8 / 255,
                        long_tail=LongTail(True, counts, class_groups(counts), group_rule(counts)))
    assert report.group_rule == GroupRule(name='thirds', description=GROUP_RULES['thirds'])
    assert {row.group for row in report.per_class} == {'head', 'middle', 'tail'}
    assert all(g.clean_acc == 100.0 for g in report.groups.values())


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
