import math

import pytest
import torch
import torch.nn.functional as F
from timm.data.mixup import mixup_target
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from sp_timm import create_loss, list_losses

MEMBERS = ['sp_ce', 'sp_focal', 'sp_logit', 'sp_ls', 'sp_margin']
# Defaults plus parameters near the edges of each member's range.
CONFIGS = [(name, {}) for name in MEMBERS] + [
    ('sp_ls', {'pstar': 0.6}), ('sp_ls', {'pstar': 0.99}),
    ('sp_logit', {'lam': 0.01}), ('sp_logit', {'lam': 1.0}),
    ('sp_ce', {'pstar': 0.55}), ('sp_margin', {'margin': 0.5}), ('sp_margin', {'margin': 6.0}),
    ('sp_focal', {'gamma': 0.0, 'pstar': 0.7}), ('sp_focal', {'gamma': 0.5, 'pstar': 0.95}),
]
CONFIG_IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in kw.items()) or 'default'}" for n, kw in CONFIGS]
NUM_CLASSES = [2, 10, 100]


def labels_for(num_classes):
    return sorted({0, num_classes // 2, num_classes - 1})


def margin(z, y):
    others = z.clone()
    others[..., y] = -math.inf
    return float(z[..., y] - others.max(-1).values)


def test_list_losses_has_the_five_members():
    assert list_losses('sp_*') == MEMBERS


@pytest.mark.parametrize('name,kwargs', CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize('num_classes', NUM_CLASSES)
def test_gradient_vanishes_at_documented_stationary_point(name, kwargs, num_classes):
    loss_fn = create_loss(name, **kwargs)
    for label in labels_for(num_classes):
        z = loss_fn.stationary_point(num_classes, label).requires_grad_(True)
        loss_fn(z.unsqueeze(0), torch.tensor([label])).backward()
        assert z.grad.norm() < 1e-5, f'{name}: |grad| = {z.grad.norm():.2e} at the stationary point'
        assert margin(z.detach(), label) > 0
        assert margin(z.detach(), label) == pytest.approx(loss_fn.stationary_margin(num_classes), rel=1e-9)


@pytest.mark.parametrize('name,kwargs', CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize('num_classes', NUM_CLASSES)
def test_gradient_descent_from_zero_converges_to_stationary_point(name, kwargs, num_classes):
    loss_fn = create_loss(name, reduction='sum', **kwargs)
    labels = torch.tensor(labels_for(num_classes))
    z = torch.zeros(len(labels), num_classes, dtype=torch.float64, requires_grad=True)
    for _ in range(20000):
        (grad,) = torch.autograd.grad(loss_fn(z, labels), z)
        if grad.norm() < 1e-9:
            break
        with torch.no_grad():
            z -= 0.5 * grad
    expected = torch.stack([loss_fn.stationary_point(num_classes, int(y)) for y in labels])
    torch.testing.assert_close(z.detach(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('num_classes', NUM_CLASSES)
def test_cross_entropy_has_no_stationary_point(num_classes):
    """Along CE's gradient descent path the logits keep growing and the gradient never vanishes."""
    labels = torch.tensor(labels_for(num_classes))
    z = torch.zeros(len(labels), num_classes, dtype=torch.float64, requires_grad=True)
    norms, grad_norms = [], []
    for _ in range(3000):
        (grad,) = torch.autograd.grad(F.cross_entropy(z, labels, reduction='sum'), z)
        with torch.no_grad():
            z -= 0.5 * grad
        norms.append(float(z.detach().norm()))
        grad_norms.append(float(grad.norm()))
    assert all(b > a for a, b in zip(norms, norms[1:]))
    assert min(grad_norms) > 1e-4  # SP members reach < 1e-9 on the same budget (test above)
    for name in MEMBERS:  # and CE is far from stationary at every SP member's stationary point
        z_star = create_loss(name).stationary_point(num_classes, 0).requires_grad_(True)
        F.cross_entropy(z_star.unsqueeze(0), torch.tensor([0])).backward()
        assert z_star.grad.norm() > 1e-3


@pytest.mark.parametrize('name', MEMBERS)
def test_class_indices_equal_one_hot_soft_targets(name):
    torch.manual_seed(0)
    loss_fn = create_loss(name, reduction='none')
    logits = (3 * torch.randn(16, 7, dtype=torch.float64)).requires_grad_(True)
    labels = torch.randint(0, 7, (16,))
    hard = loss_fn(logits, labels)
    (grad_hard,) = torch.autograd.grad(hard.sum(), logits)
    soft = loss_fn(logits, F.one_hot(labels, 7).double())
    (grad_soft,) = torch.autograd.grad(soft.sum(), logits)
    torch.testing.assert_close(hard, soft)
    torch.testing.assert_close(grad_hard, grad_soft)


@pytest.mark.parametrize('name,kwargs', CONFIGS, ids=CONFIG_IDS)
def test_closed_form_gradient_matches_autograd_definition(name, kwargs):
    """The fused class-index path (closed-form gradient) equals autograd through ``class_losses``."""
    torch.manual_seed(9)
    logits = 4 * torch.randn(32, 10, dtype=torch.float64)
    logits[0, 3], logits[1, 5] = 40.0, -40.0  # very confident rows, right and wrong
    labels = torch.randint(0, 10, (32,))
    labels[0], labels[1] = 3, 5
    values, grads = [], []
    for fused in (True, False):
        z = logits.clone().requires_grad_(True)
        loss = create_loss(name, fused=fused, reduction='none', **kwargs)(z, labels)
        (loss * torch.arange(1, 33, dtype=torch.float64)).sum().backward()  # non-uniform upstream gradient
        values.append(loss.detach())
        grads.append(z.grad)
    torch.testing.assert_close(values[0], values[1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize('name', MEMBERS)
def test_double_backward_needs_fused_false(name):  # fused=False supports it
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    assert torch.autograd.gradgradcheck(lambda z: create_loss(name, fused=False)(z, labels), (logits,))


@pytest.mark.parametrize('name', MEMBERS)
def test_mixup_soft_targets_mix_the_losses(name):
    """timm's Mixup target lam*e_a + (1-lam)*e_b gives lam*l(z, a) + (1-lam)*l(z, b)."""
    torch.manual_seed(1)
    loss_fn = create_loss(name, reduction='none')
    logits = 2 * torch.randn(8, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (8,))
    lam = 0.3
    target = mixup_target(labels, 10, lam=lam, smoothing=0.0).double()
    expected = lam * loss_fn(logits, labels) + (1 - lam) * loss_fn(logits, labels.flip(0))
    torch.testing.assert_close(loss_fn(logits, target), expected)


def test_sp_ls_soft_target_form_and_label_smoothing_equivalence():
    torch.manual_seed(2)
    num_classes, pstar = 10, 0.85
    logits = torch.randn(6, num_classes, dtype=torch.float64)
    target = torch.softmax(torch.randn(6, num_classes, dtype=torch.float64), -1)
    q = pstar * target + (1 - pstar) * (1 - target) / (num_classes - 1)
    torch.testing.assert_close(create_loss('sp_ls', pstar=pstar)(logits, target), SoftTargetCrossEntropy()(logits, q))
    smoothing = 0.2  # timm's label smoothing is sp_ls at p* = 1 - s + s/K
    labels = torch.randint(0, num_classes, (6,))
    sp = create_loss('sp_ls', pstar=1 - smoothing + smoothing / num_classes)
    torch.testing.assert_close(sp(logits, labels), LabelSmoothingCrossEntropy(smoothing)(logits, labels))


def test_sp_logit_soft_target_form():
    torch.manual_seed(3)
    logits = torch.randn(5, 4, dtype=torch.float64)
    target = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)
    expected = SoftTargetCrossEntropy()(logits, target) + 0.5 * 0.1 * logits.square().sum(-1).mean()
    torch.testing.assert_close(create_loss('sp_logit', lam=0.1)(logits, target), expected)


@pytest.mark.parametrize('name', MEMBERS)
def test_smoothing_equals_timm_smoothed_targets(name):
    torch.manual_seed(4)
    logits = torch.randn(8, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (8,))
    smoothed = mixup_target(labels, 10, lam=1.0, smoothing=0.1).double()
    torch.testing.assert_close(create_loss(name, smoothing=0.1)(logits, labels), create_loss(name)(logits, smoothed))
    assert not torch.allclose(create_loss(name, smoothing=0.1)(logits, labels), create_loss(name)(logits, labels))


@pytest.mark.parametrize('name', MEMBERS)
def test_gradcheck(name):
    torch.manual_seed(5)
    loss_fn = create_loss(name)
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 4, 1])
    soft = torch.softmax(torch.randn(4, 5, dtype=torch.float64), -1)
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, labels), (logits,))
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, soft), (logits,))
    assert torch.autograd.gradcheck(lambda z: create_loss(name, fused=False)(z, labels), (logits,))


@pytest.mark.parametrize('name', MEMBERS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_logits_are_finite(name, dtype):
    torch.manual_seed(6)
    loss_fn = create_loss(name)
    weight = torch.randn(16, 10, requires_grad=True)
    features = 4 * torch.randn(32, 16)
    labels = torch.randint(0, 10, (32,))
    with torch.autocast('cpu', dtype=dtype):
        logits = features @ weight
        assert logits.dtype == dtype
        loss = loss_fn(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(weight.grad).all()
    reference = loss_fn(logits.float(), labels)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)


@pytest.mark.parametrize('name', MEMBERS)
def test_confident_logits_stay_finite(name):
    """p_y -> 1 in float32 (1 - p_y rounds to 0): loss and gradient stay finite."""
    logits = torch.zeros(2, 10)
    logits[0, 3], logits[1, 7] = 60.0, 120.0
    logits.requires_grad_(True)
    for target in (torch.tensor([3, 7]), torch.tensor([2, 7])):
        loss = create_loss(name)(logits, target)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_sp_margin_value_far_past_the_stationary_point():
    logits = torch.zeros(1, 10)
    logits[0, 0] = 60.0  # m_s = 60 - log(9) exactly
    expected = 0.5 * (60.0 - math.log(9) - 2.0) ** 2
    assert float(create_loss('sp_margin', margin=2.0)(logits, torch.tensor([0]))) == pytest.approx(expected, rel=1e-6)


def test_sp_focal_with_gamma_zero_is_sp_ce():
    torch.manual_seed(7)
    logits, labels = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 6, (8,))
    torch.testing.assert_close(create_loss('sp_focal', gamma=0.0, pstar=0.8)(logits, labels),
                               create_loss('sp_ce', pstar=0.8)(logits, labels))


@pytest.mark.parametrize('name', MEMBERS)
def test_reductions(name):
    torch.manual_seed(8)
    logits, labels = torch.randn(8, 6), torch.randint(0, 6, (8,))
    per_sample = create_loss(name, reduction='none')(logits, labels)
    assert per_sample.shape == (8,)
    torch.testing.assert_close(create_loss(name, reduction='sum')(logits, labels), per_sample.sum())
    torch.testing.assert_close(create_loss(name)(logits, labels), per_sample.mean())


@pytest.mark.parametrize('name,kwargs,match', [
    ('sp_ls', {'pstar': 0.5}, r'pstar must lie in \(0.5, 1\)'),
    ('sp_ls', {'pstar': 1.0}, 'pstar must lie'),
    ('sp_ce', {'pstar': 0.3}, 'pstar must lie'),
    ('sp_focal', {'pstar': 1.2}, 'pstar must lie'),
    ('sp_focal', {'gamma': -1.0}, 'gamma must be'),
    ('sp_logit', {'lam': 0.0}, 'lam must be'),
    ('sp_logit', {'lam': -0.1}, 'lam must be'),
    ('sp_margin', {'margin': 0.0}, 'margin must be'),
    ('sp_margin', {'margin': float('inf')}, 'margin must be'),
    ('sp_ls', {'smoothing': 1.0}, 'smoothing must lie'),
    ('sp_ls', {'reduction': 'avg'}, 'reduction must be one of'),
])
def test_parameters_out_of_range(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_loss(name, **kwargs)


@pytest.mark.parametrize('name', MEMBERS)
def test_bad_inputs(name):
    loss_fn = create_loss(name)
    logits = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 4\].*from 0 to 5'):
        loss_fn(logits, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match='labels must lie'):
        loss_fn(logits, torch.tensor([0, -1, 2, 3]))
    for bad in (float('nan'), float('inf')):
        broken = logits.clone()
        broken[2, 1] = bad
        with pytest.raises(ValueError, match='NaN or Inf in 1 of 4 rows'):
            loss_fn(broken, torch.tensor([0, 1, 2, 3]))
    for target in (torch.zeros(4, 6), torch.zeros(4, 5, 2), torch.zeros(4), torch.zeros(3, dtype=torch.long),
                   torch.zeros(4, dtype=torch.bool), torch.zeros(4, 5, dtype=torch.long)):
        with pytest.raises(ValueError, match='fits neither form'):
            loss_fn(logits, target)
    with pytest.raises(ValueError, match='rows sum to 1'):
        loss_fn(logits, torch.full((4, 5), 0.5))
    with pytest.raises(ValueError, match=r'non-negative; 4 of 4 rows have negative entries \(smallest -0.5\)'):
        loss_fn(logits, torch.tensor([[1.5, -0.5, 0, 0, 0]] * 4))
    nan_targets = torch.full((4, 5), 0.2)
    nan_targets[1, 3] = float('nan')  # a NaN soft target: an error, never a NaN loss
    with pytest.raises(ValueError, match='soft targets contain NaN or Inf in 1 of 4 rows'):
        loss_fn(logits, nan_targets)
    with pytest.raises(ValueError, match=r'shape \(B, K\)'):
        loss_fn(torch.randn(5), torch.tensor([0]))
    with pytest.raises(ValueError, match='K >= 2'):
        loss_fn(torch.randn(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match='K >= 2'):
        loss_fn.stationary_point(1)


# --- issue 16 item 7 (inputs PyTorch users pass) and issue 17 (validation modes, compiled path) ----------------

@pytest.mark.parametrize('name', MEMBERS)
def test_empty_batch_returns_what_cross_entropy_returns(name):
    for reduction in ('mean', 'sum', 'none'):
        logits = torch.randn(0, 5, requires_grad=True)
        target = torch.zeros(0, dtype=torch.long)
        loss = create_loss(name, reduction=reduction)(logits, target)
        expected = F.cross_entropy(logits, target, reduction=reduction)
        assert loss.shape == expected.shape
        torch.testing.assert_close(loss, expected, equal_nan=True)
        if reduction != 'none':
            loss.backward()
            assert logits.grad.shape == (0, 5)


@pytest.mark.parametrize('dtype', [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_labels_of_any_integer_dtype(dtype):
    torch.manual_seed(10)
    logits, labels = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 4, 2, 1, 3, 4])
    for name in MEMBERS:
        torch.testing.assert_close(create_loss(name)(logits, labels.to(dtype)), create_loss(name)(logits, labels))


@pytest.mark.parametrize('name', MEMBERS)
def test_numpy_and_list_labels_get_a_type_error(name):
    import numpy as np
    logits = torch.randn(3, 4)
    for target in ([0, 1, 2], np.array([0, 1, 2])):
        with pytest.raises(TypeError, match='target must be a torch.Tensor.*torch.as_tensor'):
            create_loss(name)(logits, target)
    with pytest.raises(TypeError, match='logits must be a torch.Tensor'):
        create_loss(name)(logits.numpy(), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize('name', MEMBERS)
def test_stationary_margin_needs_two_classes(name):
    for num_classes in (1, 0):
        with pytest.raises(ValueError, match='K >= 2'):
            create_loss(name).stationary_margin(num_classes)
        with pytest.raises(ValueError, match='K >= 2'):
            create_loss(name).stationary_prob(num_classes)


def test_validate_option_is_checked():
    with pytest.raises(ValueError, match="validate must be one of"):
        create_loss('sp_ls', validate='lazy')
    with pytest.raises(ValueError, match="compile must be"):
        create_loss('sp_ls', compile=3)


BAD_INPUTS = [  # (logits, target, message) that the value checks refuse
    (torch.randn(4, 5), torch.tensor([0, 1, 2, 5]), r'labels must lie in \[0, 4\].*from 0 to 5'),
    (torch.randn(4, 5), torch.tensor([0, -1, 2, 3]), 'labels must lie'),
    (torch.randn(4, 5).index_put_((torch.tensor([2]), torch.tensor([1])), torch.tensor(float('nan'))),
     torch.tensor([0, 1, 2, 3]), 'NaN or Inf in 1 of 4 rows'),
    (torch.randn(4, 5), torch.full((4, 5), 0.5), 'rows sum to 1'),
]


@pytest.mark.parametrize('name', MEMBERS)
@pytest.mark.parametrize('case', range(len(BAD_INPUTS)))
def test_async_validation_on_cpu_raises_at_the_next_call_or_check(name, case):
    """'async' mode: no error in the bad call itself; the same ValueError at the next call, or at check_inputs()."""
    logits, target, message = BAD_INPUTS[case]
    good_logits, good_target = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=message):  # 'full' (the CPU default): at once
        create_loss(name)(logits, target)
    for requires_grad in (False, True):
        loss_fn = create_loss(name, validate='async')
        loss_fn(logits.clone().requires_grad_(requires_grad), target)  # deferred, and no crash on the bad labels
        with pytest.raises(ValueError, match=message):
            loss_fn(good_logits, good_target)
        loss_fn(good_logits, good_target)  # reported once; good inputs pass
        loss_fn.check_inputs()
        loss_fn(logits.clone().requires_grad_(requires_grad), target)
        with pytest.raises(ValueError, match=message):
            loss_fn.check_inputs()
    off = create_loss(name, validate='off')
    if target.is_floating_point() or (target.min() >= 0 and target.max() < 5):
        off(logits, target)  # no check: a loss comes back
        off.check_inputs()


@pytest.mark.parametrize('name', MEMBERS)
def test_double_backward_error_says_use_fused_false(name):
    logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    with pytest.raises(RuntimeError, match=rf"first-order only.*fused=False.*create_loss\('{name}', fused=False\)"):
        torch.autograd.grad(create_loss(name)(logits, labels), logits, create_graph=True)


@pytest.mark.parametrize('name,kwargs', CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize('validate', ['full', 'async'])
@pytest.mark.filterwarnings('error::RuntimeWarning')
def test_compiled_loss_equals_reference_in_float64(name, kwargs, validate):
    """The torch.compile'd body (backend aot_eager here: the traced graphs; inductor on CUDA below) equals the
    eager differentiable reference (fused=False) in value and gradient, for class indices, smoothed class indices
    and soft targets, with every reduction."""
    torch._dynamo.reset()  # a failed compile (e.g. the recompile limit) falls back with a RuntimeWarning: an error here
    torch.manual_seed(11)
    logits = 4 * torch.randn(16, 10, dtype=torch.float64)
    logits[0, 3], logits[1, 5] = 40.0, -40.0
    labels = torch.randint(0, 10, (16,))
    labels[0], labels[1] = 3, 5
    soft = torch.softmax(torch.randn(16, 10, dtype=torch.float64), -1)
    weights = torch.arange(1, 17, dtype=torch.float64)
    for target, smoothing in ((labels, 0.0), (labels, 0.1), (soft, 0.0)):
        for reduction in ('mean', 'sum', 'none'):
            results = []
            for options in (dict(fused=False, compile=False), dict(compile='aot_eager', validate=validate)):
                z = logits.clone().requires_grad_(True)
                loss = create_loss(name, reduction=reduction, smoothing=smoothing, **options, **kwargs)(z, target)
                (loss * weights if reduction == 'none' else loss).sum().backward()
                results.append((loss.detach(), z.grad))
            torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('name', MEMBERS)
def test_cuda_default_compiled_async_path(name):
    """On CUDA the default is the inductor-compiled body with 'async' validation: equal to the CPU float64
    reference, and a bad label is reported (same message) at check_inputs() without a device-side assert."""
    torch.manual_seed(12)
    logits = 3 * torch.randn(64, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (64,))
    soft = torch.softmax(torch.randn(64, 10, dtype=torch.float64), -1)
    for target in (labels, soft):
        z_cpu, z_gpu = logits.clone().requires_grad_(True), logits.cuda().requires_grad_(True)
        reference = create_loss(name, fused=False)(z_cpu, target)
        reference.backward()
        loss_fn = create_loss(name)
        loss = loss_fn(z_gpu, target.cuda())
        loss.backward()
        torch.testing.assert_close(loss.cpu(), reference.detach())
        torch.testing.assert_close(z_gpu.grad.cpu(), z_cpu.grad)
    loss_fn(logits.cuda().float(), torch.full((64,), 10, device='cuda'))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 9\].*from 10 to 10'):
        loss_fn.check_inputs()
    assert torch.isfinite(loss_fn(logits.cuda(), labels.cuda()))  # the CUDA context is still usable
