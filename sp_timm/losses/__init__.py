from ._base import SPLoss
from ._factory import create_classification_loss, create_loss, is_sp_loss, list_losses, timm_loss_types
from ._registry import register_loss
from .sp_ce import SPCrossEntropy
from .sp_focal import SPFocal
from .sp_logit import SPLogitPenalty
from .sp_ls import SPLabelSmoothing
from .sp_margin import SPMargin
