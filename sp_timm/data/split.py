""" The validation split: images carved from the training split, stratified by class, with a fixed seed, so
that model selection (``best``, the study's choices) never sees a test image. """
import hashlib
from typing import List, Optional, Tuple, Union

import numpy as np

from ..errors import DataError
from .image_data import ImageData

__all__ = ['parse_val_split', 'default_val_size', 'resolve_val_size', 'stratified_split', 'carve_validation',
           'VAL_SPLIT_SEED', 'DEFAULT_VAL_MAX', 'DEFAULT_VAL_FRACTION']

VAL_SPLIT_SEED = 0
DEFAULT_VAL_MAX = 1000
DEFAULT_VAL_FRACTION = 0.1

ValSplit = Union[int, float, None]


def parse_val_split(text: str) -> ValSplit:
    """``--val-split``: ``auto`` (None), ``0`` (no split: validate on the test split), a count ``N >= 1`` or a
    fraction ``0 < f < 1`` of the training split."""
    text = str(text).strip()
    if text == 'auto':
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"--val-split must be 'auto', 0, a count (e.g. 1000) or a fraction in (0, 1) (e.g. 0.1), "
                        f"got '{text}'.") from None
    if value < 0 or not np.isfinite(value):
        raise DataError(f'--val-split must be >= 0, got {text}.')
    if value >= 1 or value == 0:
        if value >= 1 and not text.isdigit():  # 1.0 or 2.5: neither a count nor a fraction, as written
            raise DataError(f'--val-split {text}: write a count as a whole number (e.g. 1000) and a fraction below 1 '
                            f'(e.g. 0.1).')
        return int(value)
    return value


def default_val_size(num_train: int) -> int:
    """``auto``: ``min(1000, round(0.1 * N))`` images (CIFAR-10/100 and their -lt variants: 1,000; digits: 138)."""
    return min(DEFAULT_VAL_MAX, int(round(DEFAULT_VAL_FRACTION * num_train)))


def resolve_val_size(val_split: ValSplit, num_train: int) -> int:
    """The number of validation images ``val_split`` asks for out of ``num_train``; a clear error if it leaves
    too little to train on."""
    if val_split is None:
        return default_val_size(num_train)
    size = int(round(val_split * num_train)) if isinstance(val_split, float) else int(val_split)
    if isinstance(val_split, float) and size == 0:  # never fall back to the test split unasked
        raise DataError(f'--val-split {val_split} holds out {val_split * num_train:.2g} of the {num_train} training '
                        f'images, which rounds to none; ask for a count (e.g. {max(1, default_val_size(num_train))}) '
                        f'or a larger fraction, or give 0 to validate on the test split.')
    if size >= num_train:
        raise DataError(f'--val-split {val_split} asks for {size} validation images but the training split has only '
                        f'{num_train}; use a smaller count or a fraction such as 0.1.')
    return size


def stratified_split(labels: np.ndarray, size: int, seed: int = VAL_SPLIT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` with ``len(val) == size``, stratified by class: class ``c`` with ``n_c`` images
    gives ``round(size * n_c / N)`` of them (largest remainders settle the total; a class keeps at least one
    training image), chosen by a shuffle under numpy seed ``seed``. Deterministic; sorted indices."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    quota = size * counts / counts.sum()
    take = np.floor(quota).astype(int)
    for c in np.argsort(-(quota - take), kind='stable')[:size - take.sum()]:
        take[c] += 1
    take = np.minimum(take, counts - 1)
    short = size - take.sum()  # classes capped at n_c - 1: move their share to the largest classes
    for c in np.argsort(-counts, kind='stable'):
        if short <= 0:
            break
        extra = min(short, counts[c] - 1 - take[c])
        take[c] += extra
        short -= extra
    rng = np.random.RandomState(seed)
    val = []
    for cls, k in zip(classes, take):
        idx = np.where(labels == cls)[0]
        rng.shuffle(idx)
        val.append(idx[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=int)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def carve_validation(train: ImageData, val_split: ValSplit) -> Tuple[ImageData, Optional[ImageData], dict]:
    """Split ``train`` into (training, validation) images as ``--val-split`` says; ``None`` validation for 0.
    Returns the record of the split: size, per-class counts, seed, the indices (into the training split as
    loaded, after any long-tailed subsampling; in the seeded order the validation images are used in) and their
    SHA-256."""
    size = resolve_val_size(val_split, len(train))
    if size == 0:
        return train, None, {'size': 0, 'source': 'test split (--val-split 0)'}
    train_idx, val_idx = stratified_split(train.labels.numpy(), size)
    if len(val_idx) < size:
        raise DataError(f'--val-split {val_split}: only {len(val_idx)} validation images can be held out while every '
                        f'one of the {train.num_classes} classes keeps a training image; ask for fewer.')
    # a seeded order, not class by class: --val-examples / --adv-val-examples take the first N of them
    val_idx = val_idx[np.random.RandomState(VAL_SPLIT_SEED + 1).permutation(len(val_idx))]
    indices: List[int] = val_idx.tolist()
    record = {'size': len(indices), 'seed': VAL_SPLIT_SEED, 'requested': 'auto' if val_split is None else val_split,
              'source': 'training split, stratified by class',
              'class_counts': np.bincount(train.labels.numpy()[val_idx], minlength=train.num_classes).tolist(),
              'indices_sha256': hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest(),
              'indices': indices}
    return (train.subset(train_idx, f'minus {len(indices)} validation images'),
            train.subset(val_idx, f'validation split: {len(indices)} images, seed {VAL_SPLIT_SEED}'), record)
