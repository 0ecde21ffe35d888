""" --class-weight and --drw-epoch (sp_timm.losses ClassWeightedLoss): the weights' formulas, the normalised weighted
mean, an SP member's stationary point kept, deferred re-weighting. """
import pytest
import torch
from torch import nn
from sp_timm.cli.train import parse_train_args
from sp_timm.train import train



SP_NAMES = ['sp_ce', 'sp_focal', 'sp_logit', 'sp_ls', 'sp_margin']


def test_balanced_and_effective_weights_match_their_formulas():
    from sp_timm.losses._class_weight import class_weights
    counts = [100, 10, 1, 0]  # a class without images gets weight 0
    n, k = 111, 4
    assert torch.allclose(class_weights(counts, 'balanced'), torch.tensor([n / (k * 100), n / (k * 10), n / k, 0.]))
    beta = 0.99
    raw = torch.tensor([(1 - beta) / (1 - beta ** c) for c in counts[:3]] + [0.], dtype=torch.float64)
    assert torch.allclose(class_weights(counts, 'effective', beta).double(), raw * k / raw.sum(), atol=1e-6)
    assert torch.allclose(class_weights([5, 5, 5], 'balanced'), torch.ones(3))
    assert torch.allclose(class_weights([5, 5, 5], 'effective', 0.9), torch.ones(3))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            class_weights(counts, 'effective', bad)


@pytest.mark.parametrize('mode, method, beta', [('balanced', 'inv_freq', 0.9999),
                                                ('effective', 'effective_num', 0.9999),
                                                ('effective', 'effective_num', 0.99),
                                                ('effective', 'effective_num', 0.5)])
def test_weights_equal_timms_compute_class_weights_rescaled(mode, method, beta):
    """timm's weights have a class mean of 1 and count an empty class as one image: taken over the present classes
    and rescaled to sp-timm's normalisation (balanced: N / (K n_k); effective: sum K over all K classes)."""
    import timm.loss
    from sp_timm.losses._class_weight import class_weights
    if not hasattr(timm.loss, 'compute_class_weights'):
        pytest.skip('timm < 1.0.31 has no compute_class_weights')
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50, 0, 1]
    present = [c for c in counts if c]
    kind, theirs = timm.loss.compute_class_weights(present, sum(counts), method=method, beta=beta)
    assert kind == 'class_weight'
    theirs = theirs.double()
    n = torch.tensor(present, dtype=torch.float64)
    if mode == 'balanced':  # w_k n_k = N / K
        theirs = theirs * (sum(counts) / len(counts)) / (theirs * n).mean()
    else:
        theirs = theirs * len(counts) / theirs.sum()
    expected = torch.zeros(len(counts), dtype=torch.float64)
    expected[torch.tensor(counts) > 0] = theirs
    torch.testing.assert_close(class_weights(counts, mode, beta), expected.float(), rtol=3e-7, atol=0)


@pytest.mark.parametrize('name', ['ce', *SP_NAMES])
@pytest.mark.parametrize('soft', [False, True])
def test_weighted_loss_is_the_normalised_weighted_mean_and_off_is_the_plain_loss(name, soft):
    from sp_timm.losses import create_classification_loss
    from sp_timm.losses._class_weight import ClassWeightedLoss
    torch.manual_seed(0)
    z, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1, 1])
    t = (0.7 * nn.functional.one_hot(y, 4) + 0.3 * nn.functional.one_hot(y.roll(1), 4)).double() if soft else y
    def make():
        return create_classification_loss(name, soft_targets=soft)
    w = torch.tensor([0.5, 2.0, 1.0, 4.0])
    plain, weighted = make(), ClassWeightedLoss(make(), w, enabled=False)
    assert torch.allclose(weighted(z, t), plain(z, t), atol=1e-10)  # before --drw-epoch: the unweighted loss
    weighted.enabled = True
    per = torch.stack([plain(z[i:i + 1], t[i:i + 1]) for i in range(6)])  # one sample at a time: l(z_i, t_i)
    wi = t @ w.double() if soft else w.double()[y]
    assert torch.allclose(weighted(z, t), (wi * per).sum() / wi.sum(), atol=1e-10)
    assert not torch.allclose(weighted(z, t), plain(z, t), atol=1e-3)  # the weights matter here
    scaled = ClassWeightedLoss(make(), 10 * w)  # only the ratios of the weights count, as in cross_entropy(weight=)
    assert torch.allclose(scaled(z, t), weighted(z, t), atol=1e-10)
    if name == 'ce' and not soft:
        reference = nn.functional.cross_entropy(z, y, weight=w.double())
        assert torch.allclose(weighted(z, t), reference, atol=1e-10)


@pytest.mark.parametrize('name', SP_NAMES)
def test_weights_keep_an_sp_members_stationary_point_and_scale_its_gradient(name):
    from sp_timm.losses import create_classification_loss
    from sp_timm.losses._class_weight import ClassWeightedLoss
    k, label, w = 5, 2, torch.tensor([1.0, 1.0, 3.0, 1.0, 1.0])
    plain = create_classification_loss(name)
    weighted = ClassWeightedLoss(create_classification_loss(name), w)
    labels = torch.tensor([label, 0])  # weights 3 and 1: the first sample's gradient scales by 3 / (3 + 1)

    def grad(loss, z, z_other):
        z = z.clone().requires_grad_(True)
        loss(torch.stack([z, z_other]), labels).backward()
        return z.grad

    star, elsewhere = plain.stationary_point(k, label=label), torch.tensor([0.2, -0.1, 0.4, 0.0, 0.3])
    assert grad(weighted, star, elsewhere).abs().max() < 1e-6  # zero at the same point
    other = star + torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=star.dtype)
    g_plain, g_weighted = grad(plain, other, elsewhere), grad(weighted, other, elsewhere)  # plain: 1 / 2
    assert g_plain.abs().max() > 1e-4 and torch.allclose(g_weighted, 1.5 * g_plain, atol=1e-10)


@pytest.mark.parametrize('argv, message', [
    (['--class-weight-beta', '1.0'], r'--class-weight-beta must be in \[0, 1\)'),
    (['--class-weight', 'effective', '--class-weight-beta', '-0.5'], r'--class-weight-beta must be in \[0, 1\)'),
    (['--class-weight', 'balanced', '--epochs', '5', '--drw-epoch', '5'],
     r'--drw-epoch must be in \[1, --epochs - 1\]'),
    (['--class-weight', 'balanced', '--epochs', '5', '--drw-epoch', '0'], r'--drw-epoch must be in'),
    (['--drw-epoch', '2'], r'--drw-epoch defers class weights'),
    (['--class-weight', 'inverse'], r"invalid choice: 'inverse'"),
    (['--class-weight-beta', '0.99'], r'--class-weight-beta 0.99 applies to --class-weight effective only'),
    (['--class-weight', 'balanced', '--class-weight-beta', '0.99'], r'applies to --class-weight effective only'),
    (['--adv', 'pgd', '--adv-val-examples', '-1'], r'--adv-val-examples must be >= 0'),
])
def test_bad_class_weight_flags_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_train_args(['--dataset', 'digits', *argv])
    import re
    assert re.search(message, capsys.readouterr().err)


def test_class_weight_on_a_balanced_training_set_is_allowed_and_logged(capsys):
    from types import SimpleNamespace
    from sp_timm.data import ImageData
    from sp_timm.losses import create_classification_loss
    from sp_timm.train.trainer import Trainer
    data = ImageData(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2]), ['a', 'b', 'c'],
                     'toy')
    fake = SimpleNamespace(config=parse_train_args(['--dataset', 'digits', '--class-weight', 'balanced']),
                           loss_fn=create_classification_loss('sp_ls'), accelerator=SimpleNamespace(device='cpu'),
                           main=True)
    loss, record = Trainer._class_weighting(fake, data, 3)
    assert torch.equal(loss.weight, torch.ones(3)) and loss.enabled
    assert 'on a balanced training set (2 images per class)' in capsys.readouterr().out
    assert record.weights == [1.0, 1.0, 1.0] and record.mode == 'balanced'


def test_drw_trains_unweighted_before_its_epoch_and_weighted_after(tmp_path, capsys):
    flags = ['--dataset', 'digits-lt', '--model', 'resnet20_cifar', '--batch-size', '32', '--train-examples', '192',
             '--val-examples', '32', '--no-aug', '--no-progress', '--lr', '0.05', '--loss', 'sp_ls', '--epochs', '2',
             '--deterministic']
    plain = train(parse_train_args(flags + ['--output', str(tmp_path / 'plain')]))
    drw = train(parse_train_args(flags + ['--class-weight', 'balanced', '--drw-epoch', '1',
                                          '--output', str(tmp_path / 'drw')]))
    assert 'class weights (balanced) on from epoch 2' in capsys.readouterr().out
    from sp_timm.train import read_metrics
    p, d = read_metrics(plain / 'metrics.jsonl'), read_metrics(drw / 'metrics.jsonl')
    assert d[0]['train_loss'] == pytest.approx(p[0]['train_loss'], rel=1e-5)  # epoch 1: the unweighted loss
    assert d[1]['train_loss'] != pytest.approx(p[1]['train_loss'], rel=1e-3)  # epoch 2: weighted
    import json
    record = json.loads((drw / 'last' / 'run.json').read_text())
    counts = record['class_weight']['class_counts']
    assert record['class_weight']['drw_epoch'] == 1 and len(set(counts)) > 1  # digits-lt: imbalanced
    n, k = sum(counts), len(counts)
    assert record['class_weight']['weights'] == pytest.approx([n / (k * c) if c else 0 for c in counts], rel=1e-5)


def test_more_validation_images_than_the_split_holds_is_refused_not_clamped(tmp_path, capsys):
    from sp_timm.cli import main
    from conftest import TINY_FLAGS
    flags = [f for f in TINY_FLAGS]
    flags[flags.index('--val-examples') + 1] = '100000'
    assert main(['train', *flags, '--output', str(tmp_path / 'run')]) != 0
    err = capsys.readouterr().err
    assert '--val-examples 100000 exceeds the 138 validation images' in err and 'Traceback' not in err
