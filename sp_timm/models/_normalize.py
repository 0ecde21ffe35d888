""" Inputs in [0, 1], normalisation inside the network: the RobustBench convention, so an attack's epsilon
is measured in pixel space and no caller can forget (or double) the normalisation. """
from typing import Sequence, Tuple

import torch
from torch import nn

__all__ = ['InputNormalization', 'CIFAR10_MEAN', 'CIFAR10_STD', 'PIXEL_CFG']

CIFAR10_MEAN: Tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Tuple[float, float, float] = (0.2471, 0.2435, 0.2616)
# What timm's data pipeline should do before the model: nothing but scale to [0, 1].
PIXEL_CFG = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel. ``mean`` and ``std`` are buffers, so they travel with the weights."""

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f'input_mean has {len(mean)} channels but input_std has {len(std)}.')
        if min(std) <= 0:
            raise ValueError(f'input_std must be > 0 in every channel, got {tuple(std)}.')
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f'mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, ' \
               f'std={tuple(round(v, 4) for v in self.std.flatten().tolist())}'
