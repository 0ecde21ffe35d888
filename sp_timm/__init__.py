""" sp-timm: stationary point (SP) losses for timm, Accelerate, AutoAttack / RobustBench and the Hub.

``import sp_timm`` is light: the public names load their modules (and torch) on first use, so the ``sp-timm``
command answers ``--help`` and ``--version`` at once. The CIFAR architectures of ``sp_timm.models`` are registered
with timm as soon as both packages are imported, in either order (``import sp_timm, timm;
timm.create_model('wrn28_10_cifar')``): at once when timm is already imported, else right after ``import timm``.
"""
import importlib

from ._lazy import lazy_attributes, when_imported
from .compat import install_robustbench_compat
from .version import __version__

_NAMES = dict.fromkeys(('SPLoss', 'create_classification_loss', 'create_loss', 'is_sp_loss', 'list_losses',
                        'register_loss'), 'losses')
__all__ = sorted(_NAMES) + ['__version__']
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)


def _register_models() -> None:
    importlib.import_module(f'{__name__}.models')  # its modules call timm's register_model


when_imported('timm', _register_models)
install_robustbench_compat()
