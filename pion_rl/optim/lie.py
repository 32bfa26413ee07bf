"""Skew-symmetric generators of Pion's rotations (the Lie algebra so(n)), and their RMS step size."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def right_generator(w: Tensor, m: Tensor, matmul_dtype: torch.dtype | None = None) -> Tensor:
    """``W^T M - M^T W``: the in-side generator, ``(..., c, c)`` for ``w``, ``m`` of ``(..., r, c)``.

    ``M^T W`` is the transpose of ``W^T M``, so one matmul suffices. With ``matmul_dtype`` (e.g. bf16) the
    product and the difference run in that dtype and the result comes back in it: still exactly skew, since
    rounded subtraction is sign-symmetric (fl(a - b) = -fl(b - a)).
    """
    if matmul_dtype is not None:
        w, m = w.to(matmul_dtype), m.to(matmul_dtype)
    x = w.mT @ m
    return x - x.mT


def left_generator(w: Tensor, m: Tensor, matmul_dtype: torch.dtype | None = None) -> Tensor:
    """``M W^T - W M^T``: the out-side generator, ``(..., r, r)``; ``matmul_dtype`` as for the in side."""
    if matmul_dtype is not None:
        w, m = w.to(matmul_dtype), m.to(matmul_dtype)
    y = m @ w.mT
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
