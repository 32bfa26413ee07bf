"""Spectral and norm measurements of weight matrices on plain tensors (no state, no communication).

A *unit* is what Pion rotates on its own: a row block of ``row_block`` rows (an attention head of q/k/v, a
half of a fused gate/up weight) or a whole matrix. Every optimizer is measured per unit, so curves compare.
"""

from __future__ import annotations

import torch
from torch import Tensor


def unit_view(weight: Tensor, row_block: int | None) -> Tensor:
    """``(B, r, c)`` view of a ``(B * r, c)`` matrix as its ``B`` units of ``r = row_block`` rows (B = 1 for None)."""
    rows, cols = weight.shape
    block = row_block or rows
    return weight.view(rows // block, block, cols)


def unit_singular_values(weight: Tensor, row_block: int | None) -> Tensor:
    """``(B, min(r, c))`` singular values of each unit of ``weight``, descending, in float64.

    Computed as square roots of the eigenvalues of the smaller Gram matrix (``W W^T`` or ``W^T W``): a GEMM and a
    symmetric eigensolver cost several times less than an SVD of the 2048 x 6144 MLP matrices. In float64 their
    error relative to the largest singular value is ~1e-15 / (s_i / s_1), far below Pion's real drift (1e-8 and
    up), where an fp32 SVD's own error (about 1e-6 of s_1 even for a 16 x 96 block) would be all one saw.
    """
    units = unit_view(weight, row_block).double()
    gram = units @ units.mT if units.shape[-2] <= units.shape[-1] else units.mT @ units
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(-1)


def relative_sv_change(values: Tensor, reference: Tensor) -> Tensor:
    """``|s_i - s0_i| / max_j s0_j`` per unit: ``(B, k)`` for ``(B, k)`` singular values and their reference.

    Normalised by the unit's largest reference singular value, not by ``s0_i`` itself: the rounding error of
    an SVD is relative to the largest singular value, so an exact rotation reads at the rounding floor
    (about 1e-7 in fp32) however ill-conditioned the matrix is.
    """
    return (values - reference).abs() / reference.amax(-1, keepdim=True)


def unit_square_norms(local_rows: Tensor, first_row: int, row_block: int, num_units: int) -> Tensor:
    """Per unit, the sum of squares of the rows held here: ``(num_units,)`` partial squared Frobenius norms,
    in float64 (Pion keeps norms to ~1e-8, below the rounding of an fp32 sum).

    Args:
        local_rows: ``(n, c)`` rows ``first_row .. first_row + n - 1`` of a matrix (a shard, or all of it).
        row_block: rows per unit.
        num_units: units in the whole matrix.
    """
    out = torch.zeros(num_units, dtype=torch.float64, device=local_rows.device)
    if local_rows.shape[0]:
        units = torch.arange(first_row, first_row + local_rows.shape[0], device=local_rows.device) // row_block
        out.index_add_(0, units, torch.linalg.vector_norm(local_rows, dim=1, dtype=torch.float64).square())
    return out


def svd_cost(rows: int, cols: int, row_block: int | None) -> float:
    """Multiply-adds of the singular values of every unit, up to a constant: ``B * r * c * min(r, c)``."""
    block = row_block or rows
    return (rows // block) * block * cols * min(block, cols)
