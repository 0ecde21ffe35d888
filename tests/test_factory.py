import inspect

import pytest
import timm.loss
import torch.nn as nn
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

import sp_timm
from sp_timm import create_classification_loss, create_loss, list_losses, register_loss
from sp_timm.losses import SPLabelSmoothing, SPLogitPenalty, SPLoss, _factory, _registry

requires_timm_factory = pytest.mark.skipif(not hasattr(timm.loss, 'create_classification_loss'),
                                           reason="timm < 1.0.31 has no loss factory")

# The arguments each timm loss type needs to be constructible.
TIMM_ARGS = {
    'ce': {}, 'bce': {}, 'asl': {}, 'poly': {}, 'jsd': {'jsd_splits': 2},
    'twoway': {'multi_label': True}, 'zlpr': {'multi_label': True},
    'db': {'multi_label': True, 'class_counts': [5.0, 3.0, 1.0], 'num_samples': 6},
}


@requires_timm_factory
def test_signature_is_a_superset_of_timms():
    ours = inspect.signature(create_classification_loss).parameters
    for name, param in inspect.signature(timm.loss.create_classification_loss).parameters.items():
        assert name in ours, f'timm argument {name} missing'
        assert ours[name].default == param.default, name
        assert ours[name].kind == param.kind, name


@requires_timm_factory
@pytest.mark.parametrize('loss_type', list(timm.loss.LOSS_TYPES) if hasattr(timm.loss, 'LOSS_TYPES') else [])
def test_every_timm_loss_type_is_reachable(loss_type):
    kwargs = TIMM_ARGS[loss_type]
    ours = create_classification_loss(loss_type, **kwargs)
    assert type(ours) is type(timm.loss.create_classification_loss(loss_type, **kwargs))
    assert loss_type in list_losses()


@requires_timm_factory
def test_timm_flags_pass_through():
    assert isinstance(create_classification_loss(), nn.CrossEntropyLoss)
    assert isinstance(create_classification_loss('ce', smoothing=0.1), LabelSmoothingCrossEntropy)
    assert isinstance(create_classification_loss('ce', smoothing=0.1, soft_targets=True), SoftTargetCrossEntropy)
    assert isinstance(create_classification_loss(multi_label=True), BinaryCrossEntropy)
    assert isinstance(create_loss('ce', smoothing=0.2), LabelSmoothingCrossEntropy)
    with pytest.raises(ValueError, match='requires multi-label'):
        create_classification_loss('zlpr')  # timm's own validation still applies


def test_sp_losses_through_the_factory():
    loss = create_classification_loss('sp_ls', sp_pstar=0.8)
    assert isinstance(loss, SPLabelSmoothing) and loss.pstar == 0.8 and loss.smoothing == 0.0
    assert create_classification_loss('sp_ls', sp_pstar=None).pstar == 0.9  # None = the member's default
    assert create_classification_loss('sp_logit', smoothing=0.1).smoothing == 0.1
    # Mixup / CutMix already smoothed the soft targets: timm ignores smoothing then, and so do we.
    assert create_classification_loss('sp_logit', smoothing=0.1, soft_targets=True).smoothing == 0.0
    assert isinstance(create_classification_loss('sp_logit', sp_lam=0.2, sp_pstar=None), SPLogitPenalty)
    assert sp_timm.is_sp_loss('sp_margin') and not sp_timm.is_sp_loss('ce')


@pytest.mark.parametrize('call,match', [
    (lambda: create_classification_loss('sp_lss'),
     "Unknown loss 'sp_lss'. Did you mean 'sp_ls'?.*Valid names: .*sp_ce"),
    (lambda: create_loss('cross_entropy'), "Unknown loss 'cross_entropy'.*Valid names"),
    (lambda: create_classification_loss('ce', sp_pstar=0.9), r"\['sp_pstar'\] apply to SP losses only"),
    (lambda: create_classification_loss('sp_ls', class_weight=[1.0, 2.0]), r"\['class_weight'\] only apply to timm"),
    (lambda: create_classification_loss('sp_ls', multi_label=True), 'single-label'),
    (lambda: create_classification_loss('sp_logit', sp_pstar=0.9), r"unknown parameter\(s\) \['pstar'\].*lam"),
    (lambda: create_classification_loss('sp_ls', pstar=0.9), "take the 'sp_' prefix"),
    (lambda: create_classification_loss('sp_ls', sp_pstar=0.4), 'pstar must lie'),
])
def test_factory_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_legacy_timm_path(monkeypatch):
    """With a timm that has no factory (< 1.0.31), timm names get the choices timm's train.py made."""
    monkeypatch.setattr(_factory, '_timm_factory', lambda: None)
    assert list_losses('[!s]*') == ['bce', 'ce', 'jsd']
    assert type(create_classification_loss()) is nn.CrossEntropyLoss
    assert isinstance(create_classification_loss('ce', smoothing=0.1), LabelSmoothingCrossEntropy)
    assert isinstance(create_classification_loss('ce', smoothing=0.1, soft_targets=True), SoftTargetCrossEntropy)
    bce = create_classification_loss('bce', smoothing=0.1, bce_target_thresh=0.2)
    assert isinstance(bce, BinaryCrossEntropy) and bce.smoothing == 0.1 and bce.target_threshold == 0.2
    assert isinstance(create_classification_loss('jsd', jsd_splits=3), JsdCrossEntropy)
    with pytest.raises(ValueError, match="Unknown loss 'asl'"):
        create_classification_loss('asl')
    assert isinstance(create_classification_loss('sp_ls'), SPLabelSmoothing)


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(_registry, '_LOSS_REGISTRY', dict(_registry._LOSS_REGISTRY))


def test_register_loss(scratch_registry):
    @register_loss('sp_test_shift')
    class ShiftedCE(SPLoss):
        def __init__(self, pstar: float = 0.75, reduction: str = 'mean', smoothing: float = 0.0):
            super().__init__(reduction, smoothing)
            self.pstar = pstar

        def class_losses(self, logits, index):
            return create_loss('sp_ce', pstar=self.pstar).class_losses(logits, index)

    assert 'sp_test_shift' in list_losses('sp_*')
    loss = create_classification_loss('sp_test_shift', sp_pstar=0.6)
    assert isinstance(loss, ShiftedCE) and loss.pstar == 0.6 and loss.name == 'sp_test_shift'
    with pytest.raises(ValueError, match='already registered'):
        register_loss('sp_ls')(ShiftedCE)
