""" sp-timm: stationary point (SP) losses for timm, Accelerate, AutoAttack / RobustBench and the Hub. """
from . import models  # registers the CIFAR architectures with timm
from .compat import install_robustbench_compat
from .losses import (
    SPLoss,
    create_classification_loss,
    create_loss,
    is_sp_loss,
    list_losses,
    register_loss,
)
from .version import __version__

install_robustbench_compat()
