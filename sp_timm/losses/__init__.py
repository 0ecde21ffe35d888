""" The SP loss family in timm's style: a registry (``register_loss``), factories (``create_loss``,
``create_classification_loss``), the ``SPLoss`` base and one module per member; class weights and the per-sample
losses they need; logit adjustment (balanced softmax); the CUDA kernel's first-use self-check verdicts. """
from ._base import SPLoss
from ._class_weight import (CLASS_WEIGHT_REDUCTION, ClassWeightedLoss, PerSampleCrossEntropy, class_weights,
                            earlier_reduction,
                            per_sample_loss)
from ._factory import (check_recorded_loss, create_classification_loss, create_loss, is_sp_loss, list_losses,
                       timm_loss_types)
from ._logit_adjust import LogitAdjustedLoss, log_prior
from ._registry import register_loss
from .sp_ce import SPCrossEntropy
from .sp_focal import SPFocal
from .sp_logit import SPLogitPenalty
from .sp_ls import SPLabelSmoothing
from .sp_margin import SPMargin
from ._kernel_check import clear_kernel_verdicts, kernel_verdicts, verify_kernel

__all__ = ['SPLoss', 'ClassWeightedLoss', 'PerSampleCrossEntropy', 'class_weights', 'per_sample_loss',
           'CLASS_WEIGHT_REDUCTION', 'earlier_reduction', 'create_classification_loss', 'create_loss', 'is_sp_loss',
           'list_losses', 'timm_loss_types', 'check_recorded_loss',
           'LogitAdjustedLoss', 'log_prior', 'register_loss', 'SPCrossEntropy', 'SPFocal', 'SPLogitPenalty',
           'SPLabelSmoothing', 'SPMargin', 'clear_kernel_verdicts', 'kernel_verdicts', 'verify_kernel']
