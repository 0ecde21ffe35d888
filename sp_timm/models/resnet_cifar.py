""" ResNet-20 / ResNet-32 for CIFAR (He et al., 2016, section 4.2), the network of the long-tailed CIFAR
literature (LDAM-DRW, Cao et al., 2019): a 3x3 stem with 16 channels, three stages of n = (depth - 2) / 6
post-activation basic blocks (16, 32, 64 channels; strides 1, 2, 2) with parameter-free "option A" shortcuts
(subsample, zero-pad the new channels), average pooling, linear. ResNet-20 0.27 M, ResNet-32 0.46 M parameters.
"""
import torch
import torch.nn.functional as F
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import CifarClassifier, cifar_cfg

__all__ = ['CifarResNet']


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the option-A shortcut, then ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.stride, self.pad_chs = stride, out_chs - in_chs

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad_chs == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_chs // 2, self.pad_chs - self.pad_chs // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class CifarResNet(CifarClassifier):
    """ResNet-``depth`` for CIFAR (depth = 6n + 2). Other arguments: see ``CifarClassifier``."""

    def __init__(self, depth: int = 32, num_classes: int = 10, **kwargs):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f'CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), '
                             f'got {depth}.')
        widths = (16, 32, 64)
        super().__init__(num_features=widths[-1], num_classes=num_classes, **kwargs)
        blocks_per_stage = (depth - 2) // 6
        self.conv_stem = nn.Conv2d(self.in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn_stem = nn.BatchNorm2d(widths[0])
        in_chs = widths[0]
        stages = []
        for i, width in enumerate(widths):
            stages.append(nn.Sequential(*[BasicBlock(in_chs if b == 0 else width, width,
                                                     (1 if i == 0 else 2) if b == 0 else 1)
                                          for b in range(blocks_per_stage)]))
            in_chs = width
        self.stages = nn.Sequential(*stages)
        self.final_norm = nn.Identity()
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_body(F.relu(self.bn_stem(self.conv_stem(self.normalize(x)))))


def _create_resnet(variant: str, pretrained: bool = False, **kwargs) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs({'resnet20_cifar': cifar_cfg(), 'resnet32_cifar': cifar_cfg()})


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 (0.27 M parameters)."""
    return _create_resnet('resnet20_cifar', pretrained, depth=20, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 (0.46 M parameters), the long-tailed CIFAR literature's network."""
    return _create_resnet('resnet32_cifar', pretrained, depth=32, **kwargs)
