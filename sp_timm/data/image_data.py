""" The one dataset object every loader returns: uint8 images and int64 labels held as tensors. """
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Sequence

from ..errors import DataError

if TYPE_CHECKING:  # imported where used: DataError is raised by code that must stay light (sp-timm --help)
    import torch

__all__ = ['ImageData', 'DataError']


@dataclass
class ImageData:
    """``images``: uint8 (N, C, H, W); ``labels``: int64 (N,); ``classes``: class names; ``source``: where
    the data came from (a Hub id, a local path, or a package), plus any subsampling applied."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]
    source: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        import torch
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f'images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}.')
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f'{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}.')
        self.labels = self.labels.long()
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f'{self.source}: labels span {self.labels.min().item()}..{self.labels.max().item()}, but '
                            f'there are {len(self.classes)} classes (labels 0..{len(self.classes) - 1}): the label '
                            'column does not match the class names. Fix the labels or the ClassLabel names.')

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> List[int]:
        import torch
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, indices: Sequence[int], note: str) -> 'ImageData':
        import torch
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageData(self.images[index], self.labels[index], list(self.classes), f'{self.source} [{note}]',
                         dict(self.meta))
