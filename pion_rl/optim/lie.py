"""Skew-symmetric generators of Pion's rotations (the Lie algebra so(n)), and their RMS step size."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .precision import steering_product


def skew(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``X - X^T`` of ``x`` ``(..., n, n)``, rounded once into ``dtype`` (default ``x.dtype``).

    Exactly skew in any dtype: rounding is sign-symmetric, so ``fl(a - b) = -fl(b - a)``.
    """
    out = torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device)
    if x.is_cuda:
        return torch.sub(x, x.mT, out=out)
    # On CPU, reading x^T elementwise misses cache on every element of a large matrix; torch's transposing
    # copy of one 2-D matrix is blocked (benchmarks/README.md, "Figures behind design choices").
    n = x.shape[-1]
    for xs, os in zip(x.reshape(-1, n, n), out.view(-1, n, n)):
        torch.sub(xs, xs.mT.contiguous(), out=os)
    return out


def right_product(w: Tensor, m: Tensor, precision: str = "fp32") -> Tensor:
    """``W^T M``, ``(..., c, c)`` for ``w``, ``m`` of ``(..., r, c)``: the in-side generator is its skew part
    (``W^T M - M^T W``, as ``M^T W`` is its transpose). Rounded as :func:`steering_product` says."""
    return steering_product(w.mT, m, precision)


def left_product(w: Tensor, m: Tensor, precision: str = "fp32") -> Tensor:
    """``M W^T``, ``(..., r, r)``: the out-side generator ``M W^T - W M^T`` is its skew part."""
    return steering_product(m, w.mT, precision)


def right_generator(w: Tensor, m: Tensor, precision: str = "fp32", dtype: torch.dtype | None = None) -> Tensor:
    """``W^T M - M^T W`` ``(..., c, c)``, rounded once into ``dtype`` (default: the product's dtype)."""
    return skew(right_product(w, m, precision), dtype)


def left_generator(w: Tensor, m: Tensor, precision: str = "fp32", dtype: torch.dtype | None = None) -> Tensor:
    """``M W^T - W M^T`` ``(..., r, r)``, rounded once into ``dtype`` (default: the product's dtype)."""
    return skew(left_product(w, m, precision), dtype)


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
