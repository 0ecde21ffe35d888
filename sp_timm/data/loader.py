""" The training pipeline: the whole dataset held as uint8 tensors on the training device, batches drawn by
index, augmentation (random crop with zero padding, horizontal flip) done batch-wise on that device. """
import math
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F

from .image_data import ImageData

__all__ = ['TensorLoader', 'random_crop_flip']


def _to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (CPU) on ``device`` without a host sync: a copy from pageable memory to a CUDA device waits for
    the stream, one from pinned memory does not (the caching host allocator keeps the buffer until it is done).
    The random numbers stay those of the CPU generator, so runs on every device draw the same crops."""
    if device.type == 'cuda':
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per image: a random ``H x W`` crop of the zero-padded image (torchvision's ``RandomCrop(padding=p)``)
    and a horizontal flip with probability 1/2, for a whole batch (B, C, H, W) of any dtype at once.

    A crop is a translation, so it is one gather from the flattened padded image: the index pattern of a
    (C, H, W) crop at offset 0 (or its mirror), plus ``dy * W_padded + dx`` per image.
    """
    batch, channels, height, width = images.shape
    padded_height, padded_width = height + 2 * padding, width + 2 * padding
    offsets = _to_device_async(torch.randint(0, 2 * padding + 1, (2, batch), generator=generator), images.device)
    flips = _to_device_async(torch.rand(batch, generator=generator) < 0.5, images.device)
    def arange(n):
        return torch.arange(n, device=images.device)
    rows = arange(channels)[:, None, None] * padded_height * padded_width + arange(height)[None, :, None] * padded_width
    pattern, mirrored = (rows + arange(width)).reshape(-1), (rows + arange(width).flip(0)).reshape(-1)
    index = torch.where(flips[:, None], mirrored, pattern) + (offsets[0] * padded_width + offsets[1])[:, None]
    padded = F.pad(images, (padding,) * 4).reshape(batch, -1)
    return padded.gather(1, index).view(batch, channels, height, width)


class TensorLoader:
    """Iterate ``(images, labels)`` batches of ``data``: images float in [0, 1] on ``device``.

    Args:
        data: the dataset; its uint8 tensors are moved to ``device`` once.
        batch_size: images per batch in this process.
        shuffle: a new permutation every epoch, from ``seed + epoch`` (call ``set_epoch``).
        augment: random crop (``padding``) and horizontal flip, batch-wise on ``device``.
        drop_last: drop the last incomplete batch.
        num_shards, shard_index: this process's share, as Accelerate's ``num_processes`` / ``process_index``.
            ``even_shards=True`` (training) pads the permutation by wrapping around, as DistributedSampler
            does, so every process gets the same number of batches; ``False`` (evaluation) gives disjoint
            shards that cover the data exactly once.
    """

    def __init__(
            self,
            data: ImageData,
            batch_size: int,
            shuffle: bool = False,
            augment: bool = False,
            drop_last: bool = False,
            device: torch.device | str = 'cpu',
            seed: int = 0,
            padding: int = 4,
            num_shards: int = 1,
            shard_index: int = 0,
            even_shards: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        if not 0 <= shard_index < num_shards:
            raise ValueError(f'shard_index {shard_index} is not in [0, {num_shards}).')
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.seed, self.padding, self.epoch = seed, padding, 0
        self.num_shards, self.shard_index, self.even_shards = num_shards, shard_index, even_shards

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_indices(self) -> torch.Tensor:
        """This process's sample indices for the current epoch, in iteration order."""
        total = self.labels.shape[0]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(total, generator=generator) if self.shuffle else torch.arange(total)
        if self.even_shards and total % self.num_shards:
            padded_total = math.ceil(total / self.num_shards) * self.num_shards
            order = torch.cat([order, order[:padded_total - total]])
        return order[self.shard_index::self.num_shards]

    def __len__(self) -> int:
        count = len(self.shard_indices()) if not self.even_shards else math.ceil(self.labels.shape[0] / self.num_shards)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        indices = self.shard_indices().to(self.images.device)
        generator = torch.Generator().manual_seed(10_000_019 * (self.seed + 1) + 7919 * self.epoch + self.shard_index)
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                break
            images = self.images[batch]
            if self.augment:  # on uint8: a quarter of the memory traffic of float
                images = random_crop_flip(images, self.padding, generator)
            yield images.float().div_(255), self.labels[batch]
