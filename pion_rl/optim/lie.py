"""Skew-symmetric generators of Pion's rotations (the Lie algebra so(n)), and their RMS step size."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _product(a: Tensor, b: Tensor, dtype: torch.dtype | None) -> Tensor:
    if dtype is None or dtype == a.dtype:
        return a @ b
    return (a.to(dtype) @ b.to(dtype)).to(a.dtype)


def right_generator(w: Tensor, m: Tensor, matmul_dtype: torch.dtype | None = None) -> Tensor:
    """``W^T M - M^T W``: the in-side generator, ``(..., c, c)`` for ``w``, ``m`` of ``(..., r, c)``.

    ``M^T W`` is the transpose of ``W^T M``, so one matmul suffices. ``matmul_dtype`` (e.g. bf16) runs that
    matmul at lower precision; the difference is taken in ``w.dtype``, so the result is exactly skew.
    """
    x = _product(w.mT, m, matmul_dtype)
    return x - x.mT


def left_generator(w: Tensor, m: Tensor, matmul_dtype: torch.dtype | None = None) -> Tensor:
    """``M W^T - W M^T``: the out-side generator, ``(..., r, r)``; ``matmul_dtype`` as for the in side."""
    y = _product(m, w.mT, matmul_dtype)
    return y - y.mT


def rms_step_size(base: Tensor, lr: float, rms_scale: float) -> Tensor:
    """Scale that gives the first-order change ``alpha * base`` an RMS of ``lr * rms_scale``.

    Args:
        base: ``(..., r, c)``, the first-order change of W per unit step (``W A``, ``A W`` or their sum).
    Returns:
        ``(..., 1, 1)`` step sizes, one per matrix in the batch.
    """
    r, c = base.shape[-2:]
    norm = torch.linalg.matrix_norm(base)[..., None, None]
    return lr * rms_scale * math.sqrt(r * c) / (norm + 1e-12)
