""" PreActResNet-18 for CIFAR (He et al., 2016, identity mappings), as used by Wong et al. (fast adversarial
training) and Rice et al. (overfitting in adversarial training): a 3x3 stem with 64 channels, four stages of
two pre-activation blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), BN-ReLU, average pooling, linear.
11.2 M parameters.
"""
import torch
import torch.nn.functional as F
from torch import nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._base import CifarClassifier, cifar_cfg

__all__ = ['PreActResNet']


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the identity or a 1x1 projection of the pre-activated input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.shortcut = None if in_chs == out_chs and stride == 1 else nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        return self.conv2(F.relu(self.bn2(self.conv1(activated)))) + shortcut


class PreActResNet(CifarClassifier):
    """A pre-activation ResNet with ``layers[i]`` blocks in stage i. Other arguments: see ``CifarClassifier``."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 10, **kwargs):
        widths = (64, 128, 256, 512)
        super().__init__(num_features=widths[-1], num_classes=num_classes, **kwargs)
        self.conv_stem = nn.Conv2d(self.in_chans, widths[0], 3, 1, 1, bias=False)
        stages, in_chs = [], widths[0]
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stages.append(nn.Sequential(*[PreActBlock(in_chs if b == 0 else width, width,
                                                      (1 if i == 0 else 2) if b == 0 else 1)
                                          for b in range(blocks)]))
            in_chs = width
        self.stages = nn.Sequential(*stages)
        self.final_norm = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
        self.init_weights()


default_cfgs = generate_default_cfgs({'preact_resnet18_cifar': cifar_cfg()})


@register_model
def preact_resnet18_cifar(pretrained: bool = False, **kwargs) -> PreActResNet:
    """PreActResNet-18 (11.2 M parameters)."""
    return build_model_with_cfg(PreActResNet, 'preact_resnet18_cifar', pretrained, layers=(2, 2, 2, 2), **kwargs)
