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


def msign_of_skew_product(
    p: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
) -> Tensor:
    """:func:`msign` of ``S = P^T J P``, ``J = [[0, I], [-I, 0]]``, iterated on ``2k x 2k`` matrices.

    Every Newton-Schulz iterate on ``S`` is ``P^T Z P``, and ``(Y Y^T)^j Y = P^T (Z G Z^T G)^j Z P`` with the
    Gram matrix ``G = P P^T``, so ``Z`` carries the whole iteration: ``(2k)^3`` work per step instead of
    ``n^3``. Pion's generators have this form (``W^T M - M^T W`` with ``P = [W; M]``), so a per-head block's
    ``2048 x 2048`` in-side generator is orthogonalised through ``256 x 256`` matrices.

    Args:
        p: ``(..., 2k, n)``; the iteration runs in its dtype.
    Returns:
        ``(..., n, n)``, equal to ``msign(P^T J P)`` in exact arithmetic.
    """
    a, b, c = coefficients
    k = p.shape[-2] // 2

    def j_times(x: Tensor) -> Tensor:  # J @ x
        return torch.cat([x[..., k:, :], -x[..., :k, :]], dim=-2)

    gram = p @ p.mT
    jg = j_times(gram)
    # ||S||_F^2 = tr(J^T G J G) = -tr((J G)^2)
    norm = (-(jg * jg.mT).sum(dim=(-2, -1), keepdim=True)).clamp(min=0).sqrt()
    eye = torch.eye(2 * k, dtype=p.dtype, device=p.device).expand(gram.shape)
    z = j_times(eye) / norm.clamp(min=eps)
    for _ in range(steps):
        zg_zg = (z @ gram) @ (z.mT @ gram)  # Z G Z^T G
        z = a * z + (b * zg_zg + c * zg_zg @ zg_zg) @ z
    return p.mT @ z @ p
