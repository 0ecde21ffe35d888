""" What the CIFAR networks share: the timm model interface around normalise -> body -> pool -> linear. """
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.models._manipulate import checkpoint_seq

from ._normalize import CIFAR10_MEAN, CIFAR10_STD, PIXEL_CFG, InputNormalization

__all__ = ['CifarClassifier', 'cifar_cfg']


def cifar_cfg(**kwargs) -> dict:
    """Default pretrained cfg of a CIFAR network: 3x32x32 inputs in [0, 1] (the model normalises itself, so
    timm's data pipeline must only scale: mean 0, std 1), 10 classes, no published weights."""
    return dict(url='', num_classes=10, input_size=(3, 32, 32), pool_size=None, crop_pct=1.0,
                interpolation='bilinear', fixed_input_size=False, first_conv='conv_stem', classifier='fc',
                license='apache-2.0', **PIXEL_CFG, **kwargs)


class CifarClassifier(nn.Module):
    """Base of the CIFAR networks: ``normalize`` (inputs in [0, 1]), ``conv_stem``, the body of each subclass
    (``forward_body``), global average pooling, dropout and the linear classifier ``fc``.

    Args:
        num_classes: outputs of ``fc``; 0 leaves the pooled features (``nn.Identity``), as in timm.
        in_chans: input channels.
        input_mean, input_std: per-channel statistics of the training data, applied inside the model.
        drop_rate: dropout before ``fc``.
        global_pool: only ``'avg'`` (the CIFAR architectures pool by averaging).
    """

    def __init__(self, num_features: int, num_classes: int = 10, in_chans: int = 3,
                 input_mean: Sequence[float] = CIFAR10_MEAN, input_std: Sequence[float] = CIFAR10_STD,
                 drop_rate: float = 0.0, global_pool: str = 'avg'):
        super().__init__()
        if global_pool != 'avg':
            raise ValueError(f"global_pool must be 'avg' for the CIFAR networks, got {global_pool!r}.")
        if len(input_mean) != in_chans:
            raise ValueError(f'input_mean has {len(input_mean)} values for in_chans={in_chans}; give one per channel.')
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, num_features
        self.head_hidden_size = num_features
        self.global_pool, self.drop_rate = global_pool, drop_rate
        self.grad_checkpointing = False
        self.normalize = InputNormalization(input_mean, input_std)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self) -> None:
        """He (fan-out) init for convolutions, unit BatchNorm, zero biases: the reference implementations' init."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output -> the final feature map; subclasses define ``stages`` (and ``final_norm``)."""
        x = checkpoint_seq(self.stages,
                           x) if self.grad_checkpointing and not torch.jit.is_scripting() else self.stages(x)
        return self.final_norm(x)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        if global_pool != 'avg':
            raise ValueError(f"global_pool must be 'avg' for the CIFAR networks, got {global_pool!r}.")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, C, H, W) -> the final feature map (B, num_features, h, w)."""
        return self.forward_body(self.conv_stem(self.normalize(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
