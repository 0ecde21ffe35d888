""" --logit-adjust (sp_timm.losses LogitAdjustedLoss): balanced softmax equals cross-entropy on z + tau log(prior),
SP + logit adjustment keeps a stationary point (moved by the shift) that gradient descent reaches, PGD-AT and TRADES
train with it as their outer loss, and the trained model is the plain network. """
import json

import pytest
import torch
import torch.nn.functional as F

from sp_timm.losses import LogitAdjustedLoss, create_classification_loss, create_loss, log_prior

COUNTS = [500, 120, 30, 7]


def test_balanced_softmax_is_cross_entropy_of_the_prior_shifted_logits():
    torch.manual_seed(0)
    z, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 4, (16,))
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    for tau in (1.0, 0.5, 2.0):
        loss = create_classification_loss('ce', logit_adjust_tau=tau, class_counts=COUNTS)
        expected = F.cross_entropy(z + tau * prior.log(), y)
        torch.testing.assert_close(loss(z, y), expected, rtol=1e-6, atol=1e-7)
    # balanced softmax's own form: -log(n_y e^{z_y} / sum_j n_j e^{z_j})
    n = torch.tensor(COUNTS, dtype=torch.float64)
    direct = -(n[y] * z.gather(1, y[:, None]).squeeze(1).exp() / (n * z.exp()).sum(1)).log().mean()
    torch.testing.assert_close(create_classification_loss('ce', logit_adjust_tau=1.0, class_counts=COUNTS)(z, y),
                               direct, rtol=1e-6, atol=1e-7)
    # tau = 0 is the plain loss; soft targets and smoothing keep timm's forms on the shifted logits
    torch.testing.assert_close(create_classification_loss('ce', logit_adjust_tau=0.0, class_counts=COUNTS)(z, y),
                               F.cross_entropy(z, y))
    smoothed = create_classification_loss('ce', smoothing=0.1, logit_adjust_tau=1.0, class_counts=COUNTS)
    torch.testing.assert_close(smoothed(z, y), F.cross_entropy(z + prior.log(), y, label_smoothing=0.1), rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize('name,kwargs', [('sp_margin', {'margin': 2.0}), ('sp_ls', {'pstar': 0.9}),
                                         ('sp_ce', {}), ('sp_logit', {'lam': 0.1}), ('sp_focal', {})])
def test_sp_with_logit_adjustment_is_the_member_on_the_shifted_logits(name, kwargs):
    torch.manual_seed(1)
    z, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 4, (8,))
    adjusted = create_classification_loss(name, logit_adjust_tau=1.0, class_counts=COUNTS,
                                          **{f'sp_{k}': v for k, v in kwargs.items()})
    member = create_loss(name, **kwargs)
    torch.testing.assert_close(adjusted(z, y), member(z + log_prior(COUNTS).double(), y))


@pytest.mark.parametrize('name,kwargs', [('sp_margin', {'margin': 1.0}), ('sp_margin', {'margin': 4.0}),
                                         ('sp_ls', {'pstar': 0.9}), ('sp_logit', {'lam': 0.1})])
@pytest.mark.parametrize('tau', [0.5, 1.0])
def test_sp_with_logit_adjustment_has_a_stationary_point_that_gradient_descent_reaches(name, kwargs, tau):
    loss_fn = LogitAdjustedLoss(create_loss(name, reduction='sum', **kwargs), COUNTS, tau)
    labels = torch.arange(4)
    # the documented point: the member's stationary point minus the shift, gradient zero there
    for label in labels.tolist():
        point = loss_fn.stationary_point(4, label).requires_grad_(True)
        loss_fn(point[None], torch.tensor([label])).backward()
        assert point.grad.norm() < 1e-6
    z = torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)
    for _ in range(20000):
        (grad,) = torch.autograd.grad(loss_fn(z, labels), z)
        if grad.norm() < 1e-10:
            break
        with torch.no_grad():
            z -= 0.5 * grad
    assert grad.norm() < 1e-8
    # it is a stationary point of the member in the adjusted logits: the member's gradient vanishes there
    adjusted = (z.detach() + tau * log_prior(COUNTS).double()).requires_grad_(True)
    create_loss(name, reduction='sum', **kwargs)(adjusted, labels).backward()
    assert adjusted.grad.norm() < 1e-8
    # and the rare classes settle at larger raw margins than the frequent ones (the shift's purpose)
    raw = z.detach()
    margins = [float(raw[i, i] - torch.cat([raw[i, :i], raw[i, i + 1:]]).max()) for i in range(4)]
    assert margins[-1] > margins[0]


def test_cross_entropy_with_logit_adjustment_has_no_stationary_point():
    assert LogitAdjustedLoss(torch.nn.CrossEntropyLoss(), COUNTS).stationary_point(4) is None


@pytest.mark.parametrize('kwargs,message', [
    (dict(logit_adjust_tau=1.0), 'needs class_counts'),
    (dict(logit_adjust_tau=-1.0, class_counts=COUNTS), 'tau must be a finite number >= 0'),
    (dict(logit_adjust_tau=float('nan'), class_counts=COUNTS), 'tau must be a finite number'),
    (dict(logit_adjust_tau=1.0, class_counts=[3]), '>= 2 classes'),
    (dict(logit_adjust_tau=1.0, class_counts=[3, -1]), 'finite, >= 0'),
])
def test_bad_logit_adjustment_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_classification_loss('ce', **kwargs)


def test_logit_adjustment_refuses_other_losses_and_mismatched_logits():
    with pytest.raises(ValueError, match="single-label 'ce' and the SP losses"):
        create_classification_loss('bce', logit_adjust_tau=1.0, class_counts=COUNTS)
    loss = create_classification_loss('ce', logit_adjust_tau=1.0, class_counts=COUNTS)
    with pytest.raises(ValueError, match='the logits have 3 classes, the class counts 4'):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_a_class_without_training_images_gets_a_finite_shift():
    shift = log_prior([10, 0, 5])
    assert torch.isfinite(shift).all() and shift[1] < shift[2] < shift[0]


@pytest.mark.parametrize('argv,message', [
    (['--logit-adjust', '-1'], '--logit-adjust is a scale tau >= 0'),
    (['--logit-adjust', '1', '--class-weight', 'balanced'], 'both re-balance the classes'),
    (['--logit-adjust', '1', '--loss', 'bce'], "not with 'bce'"),
    (['--logit-adjust', 'nan'], 'finite'),
])
def test_bad_logit_adjust_flags_are_clear_errors(argv, message, capsys):
    from sp_timm.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(['train', '--dataset', 'digits-lt', *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


@pytest.mark.parametrize('adv', ['none', 'pgd', 'trades'])
def test_training_with_logit_adjustment_records_it_and_exports_the_plain_network(tmp_path, adv, capsys):
    from sp_timm.cli.train import parse_train_args
    from sp_timm.eval.audit import training_loss_from_run
    from sp_timm.checkpoint import read_run_record
    from sp_timm.model_source import load_model
    from sp_timm.train import train
    from conftest import TINY_FLAGS
    flags = [f if f != 'digits' else 'digits-lt' for f in TINY_FLAGS]
    adv_flags = [] if adv == 'none' else ['--adv', adv, '--adv-steps', '1', '--adv-eps', '2/255',
                                          '--adv-step-size', '2/255', '--adv-val-examples', '0']
    run = train(parse_train_args(flags + ['--loss', 'sp_margin', '--sp-margin', '2', '--logit-adjust', '1',
                                          '--output', str(tmp_path / 'run')] + adv_flags))
    assert '--logit-adjust 1: the loss sees the logits shifted by' in capsys.readouterr().out
    data = json.loads((run / 'last' / 'run.json').read_text())
    adjustment = data['logit_adjustment']
    counts = adjustment['class_counts']
    assert len(set(counts)) > 1 and sum(counts) == 64  # digits-lt: the 64 imbalanced training images used
    assert adjustment['shift'] == pytest.approx((log_prior(counts)).tolist(), abs=1e-6)
    assert data['loss'] == 'sp_margin' and data['loss_params'] == {'margin': 2.0}
    # the checkpoint holds the plain network: no prior buffer, and its logits are the architecture's own
    model, _ = load_model(str(run / 'last'))
    keys = set(model.state_dict())
    assert not any('shift' in k for k in keys)
    import timm
    record = read_run_record(run / 'last')
    plain = timm.create_model(record.model, **record.model_args)
    plain.load_state_dict(model.state_dict())
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), plain.eval()(x))
    # the audit attacks the training loss as trained: on the adjusted logits
    loss, _ = training_loss_from_run(record)
    assert isinstance(loss, LogitAdjustedLoss) and loss.shift.tolist() == pytest.approx(adjustment['shift'], abs=1e-6)


def test_the_audit_attacks_the_balanced_softmax_not_plain_cross_entropy():
    from sp_timm.eval.audit import training_loss_from_run
    from sp_timm.records import LogitAdjustment, TrainConfig, RunRecord
    common = dict(model='m', model_args={}, num_classes=4, classes=list('abcd'), dataset='digits-lt', data_source='x',
                  train_class_counts=COUNTS, split_class_counts=COUNTS, class_groups={}, group_rule='',
                  input_range=[0.0, 1.0], input_mean=None, input_std=None, loss='ce', loss_params={},
                  config=TrainConfig(dataset='digits-lt', loss='ce'), num_processes=1, global_batch_size=1,
                  sp_timm_version='0', timm_version='0', torch_version='0')
    assert training_loss_from_run(RunRecord(**common))[0] is None  # plain CE: APGD-CE already
    adjusted = RunRecord(**common, logit_adjustment=LogitAdjustment(tau=1.0, class_counts=COUNTS, shift=[],
                                                                    meaning=''))
    loss, _ = training_loss_from_run(adjusted)
    z, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 3])
    torch.testing.assert_close(loss(z, y), F.cross_entropy(z + log_prior(COUNTS), y, reduction='none'))
