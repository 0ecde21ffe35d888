""" A small CNN for quick experiments on 32x32 inputs (the digits demo and robustness study): three strided
3x3 conv-BN-ReLU layers (16, 32, 64 channels; 32 -> 16 -> 8 -> 4), average pooling, linear; 24 k parameters and
about 0.7 M multiply-adds per image, some 60x fewer than ResNet-20, so AutoAttack's 5000 Square queries stay
cheap on a CPU.
"""
from typing import Sequence

from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import CifarClassifier, cifar_cfg

__all__ = ['SmallCNN']


def _conv_bn_relu(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, 2, 1, bias=False), nn.BatchNorm2d(out_chs),
                         nn.ReLU(inplace=True))


class SmallCNN(CifarClassifier):
    """``widths[0]``-channel strided stem, then one strided conv-BN-ReLU stage per further width. Other arguments:
    see ``CifarClassifier``."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64), num_classes: int = 10, **kwargs):
        super().__init__(num_features=widths[-1], num_classes=num_classes, **kwargs)
        self.conv_stem = _conv_bn_relu(self.in_chans, widths[0])
        self.stages = nn.Sequential(*[_conv_bn_relu(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.final_norm = nn.Identity()
        self.init_weights()


default_cfgs = generate_default_cfgs({'small_cnn_cifar': cifar_cfg()})


@register_model
def small_cnn_cifar(pretrained: bool = False, **kwargs) -> SmallCNN:
    """Small CNN (24 k parameters) for the digits demo and quick studies."""
    return build_model_with_cfg(SmallCNN, 'small_cnn_cifar', pretrained, **kwargs)
