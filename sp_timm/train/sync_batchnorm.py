""" ``--sync-bn``: BatchNorm statistics over the global batch of all processes, through PyTorch's ``SyncBatchNorm``,
and the same layer on CPU processes (gloo), where torch's statistics kernels are CUDA-only. """
from typing import Tuple

import torch
from torch import nn

__all__ = ['convert_sync_batchnorm', 'CpuSyncBatchNorm']


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes of ``group``; the gradient of each input is the sum of the output's gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        import torch.distributed as dist
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllReduceSum.apply(grad.contiguous(), ctx.group), None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """The layers of PyTorch's ``SyncBatchNorm`` on CPU processes (gloo), where torch's statistics kernels are
    CUDA-only and DDP refuses ``SyncBatchNorm`` instances: the per-channel mean and then the variance of the global
    batch from two all-reduces that carry gradients (the backward is the full batch's, as with torch's), and the
    running statistics updated as torch does (unbiased variance, ``momentum``). Eval mode and one process: plain
    BatchNorm. Same parameters, buffers and state-dict keys."""

    process_group = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist
        group = self.process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        if not self.training or group is None or dist.get_world_size(group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        x = input.to(torch.promote_types(input.dtype, torch.float32))  # statistics in float32 at least, as torch's
        dims, channels = [0, *range(2, x.dim())], x.size(1)
        shape = [1, channels] + [1] * (x.dim() - 2)
        count = torch.full((1,), x.numel() // channels, dtype=x.dtype, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), count]), group)
        n = sums[-1]
        mean = sums[:channels] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims), group) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / (n - 1)) * factor)
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, num_processes: int, device: torch.device) -> Tuple[nn.Module, int]:
    """``--sync-bn``: timm's meaning, through ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (same parameters,
    buffers and state-dict keys, so checkpoints, export and eval are unchanged). Returns the model and the number of
    layers converted: 0 with one process (nothing to synchronise) or without BatchNorm layers."""
    if num_processes < 2 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model, 0
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    layers = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    if torch.device(device).type == 'cpu':
        for layer in layers:
            layer.__class__ = CpuSyncBatchNorm
    return model, len(layers)
