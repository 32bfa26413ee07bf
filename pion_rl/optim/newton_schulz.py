"""Orthogonalisation by the quintic Newton-Schulz iteration (Muon's `zeropower`), batched."""

from __future__ import annotations

import torch
from torch import Tensor

#: Quintic coefficients (a, b, c) tuned for the slope at zero, as in Muon and the Pion spec.
NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)


def msign(
    x: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    dtype: torch.dtype = torch.bfloat16,
    eps: float = 1e-7,
) -> Tensor:
    """Approximate the polar factor U V^T of ``x = U S V^T``.

    Args:
        x: ``(..., m, n)``; leading dims are a batch.
        steps: Newton-Schulz iterations.
        dtype: the iteration's dtype (bf16 is Muon's choice; the singular values only land in ~[0.7, 1.2]
            with these coefficients anyway, so low precision costs nothing that matters).
    Returns:
        ``(..., m, n)`` in ``x.dtype``.
    """
    a, b, c = coefficients
    y = x.to(dtype)
    # Iterate on the wide orientation so the Gram matrix is the smaller one.
    wide = y.size(-2) <= y.size(-1)
    if not wide:
        y = y.mT
    y = y / y.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    batch_shape = y.shape[:-2]
    # One matrix stays 2-D: CPU's batched bf16 GEMM copies a transposed operand, 2-D BLAS takes it as a flag
    # (Newton-Schulz on 2048 x 6144: 0.72 s against 0.94 s as a batch of one).
    y = y.reshape(-1, *y.shape[-2:]) if batch_shape else y
    addmm = torch.baddbmm if batch_shape else torch.addmm
    for _ in range(steps):
        gram = y @ y.mT
        poly = addmm(gram, gram, gram, beta=b, alpha=c)
        y = addmm(y, poly, y, beta=a)
    y = y.reshape(*batch_shape, *y.shape[-2:])
    if not wide:
        y = y.mT
    return y.to(x.dtype)
