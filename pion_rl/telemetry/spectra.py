"""Spectral and norm measurements of weight matrices on plain tensors (no state, no communication).

A *unit* is what Pion rotates on its own (:mod:`pion_rl.optim.units`): an attention head of q/k/v, a half of a
fused gate/up weight, one expert's matrix, or a whole matrix. Every optimizer is measured per unit, so curves
compare.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pion_rl.optim.units import is_experts, to_units, unit_shape


def unit_singular_values(units: Tensor) -> Tensor:
    """``(B, min(r, c))`` singular values of each ``(r, c)`` unit of a ``(B, r, c)`` batch
    (:func:`pion_rl.optim.units.to_units`), descending, in float64.

    Computed as square roots of the eigenvalues of the smaller Gram matrix (``W W^T`` or ``W^T W``): a GEMM and a
    symmetric eigensolver cost several times less than an SVD of the 2048 x 6144 MLP matrices. In float64 their
    error relative to the largest singular value is ~1e-15 / (s_i / s_1), far below Pion's real drift (1e-8 and
    up), where an fp32 SVD's own error (about 1e-6 of s_1 even for a 16 x 96 block) would be all one saw.
    """
    units = units.double()
    gram = units @ units.mT if units.shape[-2] <= units.shape[-1] else units.mT @ units
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(-1)


def relative_sv_change(values: Tensor, reference: Tensor) -> Tensor:
    """``|s_i - s0_i| / max_j s0_j`` per unit: ``(B, k)`` for ``(B, k)`` singular values and their reference.

    Normalised by the unit's largest reference singular value, not by ``s0_i`` itself: the rounding error of
    an SVD is relative to the largest singular value, so an exact rotation reads at the rounding floor
    (about 1e-7 in fp32) however ill-conditioned the matrix is.
    """
    return (values - reference).abs() / reference.amax(-1, keepdim=True)


def unit_square_norms(local: Tensor, first: int, shape: tuple[int, ...], layout: str = "out_in",
                      halves: str | None = None, row_block: int | None = None) -> Tensor:
    """Per unit of a tensor of ``shape`` (:func:`pion_rl.optim.units.unit_shape`), the sum of squares of its
    elements held here: ``(B,)`` partial squared Frobenius norms, in float64 (Pion keeps norms to ~1e-8, below
    the rounding of an fp32 sum); summed over the ranks that split the tensor, they are the units' norms.

    Args:
        local: indices ``first .. first + n - 1`` of the tensor's dim 0 (an FSDP2 ``Shard(0)`` shard, or all of it).
    """
    num_units, unit_rows, _ = unit_shape(tuple(shape), layout, halves, row_block)
    out = torch.zeros(num_units, dtype=torch.float64, device=local.device)
    if not local.shape[0]:
        return out
    if layout == "out_in":  # dim 0 holds output rows: each local row lies in one unit
        rows = torch.arange(first, first + local.shape[0], device=local.device)
        half, row = {None: (torch.zeros_like(rows), rows), "stacked": (rows // (shape[0] // 2), rows % (shape[0] // 2)),
                     "interleaved": (rows % 2, rows // 2)}[halves]
        units = half * (num_units // (2 if halves else 1)) + row // unit_rows
        out.index_add_(0, units, torch.linalg.vector_norm(local, dim=1, dtype=torch.float64).square())
        return out
    # dim 0 holds whole experts, or (in, out) storage's input rows, which every unit spans: the local part is a
    # tensor of the same layout, whose units are the local experts' units or parts of every unit.
    norms = torch.linalg.vector_norm(to_units(local, layout, halves, row_block)[0], dim=(1, 2), dtype=torch.float64)
    if is_experts(layout):
        per_expert = num_units // shape[0]
        out[first * per_expert: first * per_expert + norms.numel()] = norms.square()
    else:
        out += norms.square()
    return out


def svd_cost(units: int, rows: int, cols: int) -> float:
    """Multiply-adds of the singular values of ``units`` units of ``(rows, cols)``, up to a constant."""
    return units * rows * cols * min(rows, cols)
