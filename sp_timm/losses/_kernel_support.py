""" When the SP losses' Triton kernel (``_triton.py``) applies, without importing Triton until it is needed. """
import functools
import os

import torch

__all__ = ['MAX_CLASSES', 'SUPPORTED_DTYPES', 'interpreted', 'kernel_fits', 'require_triton', 'triton_available']

MAX_CLASSES = 8192  # one row per block of at most this many columns
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, set before the first use)."""
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when Triton and its language module import (Linux builds of PyTorch ship it). Whether the kernel then
    builds, launches and computes the right numbers on a device is checked at its first use there
    (``_kernel_check``)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 -- no triton, or one that does not import: the torch path computes the same
        return False
    return True


def kernel_fits(logits: torch.Tensor) -> bool:
    """The kernel takes float32 / float16 / bfloat16 logits with at most ``MAX_CLASSES`` classes."""
    return logits.dtype in SUPPORTED_DTYPES and logits.shape[-1] <= MAX_CLASSES


def require_triton(logits: torch.Tensor, name: str) -> None:
    """Raise the ValueError that says why ``kernel='triton'`` cannot run on these logits, if it cannot."""
    if not triton_available():
        raise ValueError(f"'{name}': kernel='triton' needs the triton package (PyTorch's Linux builds ship it); "
                         f"use kernel=None or kernel='torch'.")
    if not logits.is_cuda and not interpreted():
        raise ValueError(f"'{name}': kernel='triton' runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1), got "
                         f"logits on {logits.device}; use kernel=None, which picks the torch code off CUDA.")
