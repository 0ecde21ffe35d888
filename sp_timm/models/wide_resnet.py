""" Wide residual networks for CIFAR (Zagoruyko & Komodakis, 2016), in the form the adversarial-training
literature and RobustBench use (pre-activation blocks; Madry et al., TRADES, Rice et al., Gowal et al.).

WRN-d-k: a 3x3 stem with 16 channels, then three stages of n = (d - 4) / 6 blocks with 16k, 32k and 64k
channels (strides 1, 2, 2), BN-ReLU, global average pooling and a linear classifier. Parameters:
WRN-28-10 36.5 M, WRN-34-10 46.2 M, WRN-34-20 184.5 M, WRN-70-16 266.8 M.
"""
import torch
from torch import nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import CifarClassifier, cifar_cfg

__all__ = ['WideResNet']


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3, plus the identity or a 1x1 projection of the
    pre-activated input when the shape changes."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None if in_chs == out_chs and stride == 1 else nn.Conv2d(in_chs, out_chs, 1, stride, 0,
                                                                                 bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        out = F.relu(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(CifarClassifier):
    """WRN-``depth``-``widen_factor``; ``block_drop_rate`` is the dropout inside each block (WRN's own dropout),
    ``drop_rate`` the dropout before the classifier. Other arguments: see ``CifarClassifier``."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, block_drop_rate: float = 0.0,
                 **kwargs):
        if depth < 10 or (depth - 4) % 6:
            raise ValueError('WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, 70, ...), got '
                             f'{depth}.')
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        super().__init__(num_features=widths[3], num_classes=num_classes, **kwargs)
        blocks_per_stage = (depth - 4) // 6
        self.conv_stem = nn.Conv2d(self.in_chans, widths[0], 3, 1, 1, bias=False)
        self.stages = nn.Sequential(*[
            nn.Sequential(*[WideBasicBlock(widths[i] if b == 0 else widths[i + 1], widths[i + 1],
                                           (1 if i == 0 else 2) if b == 0 else 1, block_drop_rate)
                            for b in range(blocks_per_stage)])
            for i in range(3)])
        self.final_norm = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True))
        self.init_weights()


def _create_wide_resnet(variant: str, pretrained: bool = False, **kwargs) -> WideResNet:
    return build_model_with_cfg(WideResNet, variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs({
    'wrn28_10_cifar': cifar_cfg(),
    'wrn34_10_cifar': cifar_cfg(),
    'wrn34_20_cifar': cifar_cfg(),
    'wrn70_16_cifar': cifar_cfg(),
})


@register_model
def wrn28_10_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-10 (36.5 M parameters): the standard CIFAR adversarial-training network."""
    return _create_wide_resnet('wrn28_10_cifar', pretrained, depth=28, widen_factor=10, **kwargs)


@register_model
def wrn34_10_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-34-10 (46.2 M): Madry et al.'s and TRADES's network."""
    return _create_wide_resnet('wrn34_10_cifar', pretrained, depth=34, widen_factor=10, **kwargs)


@register_model
def wrn34_20_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-34-20 (184.5 M): Rice et al.'s and Gowal et al.'s larger network."""
    return _create_wide_resnet('wrn34_20_cifar', pretrained, depth=34, widen_factor=20, **kwargs)


@register_model
def wrn70_16_cifar(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-70-16 (266.8 M): the network of the top RobustBench CIFAR entries."""
    return _create_wide_resnet('wrn70_16_cifar', pretrained, depth=70, widen_factor=16, **kwargs)
