"""Orthogonalisation by the quintic Newton-Schulz iteration (Muon's `zeropower`), batched.

Each iteration maps every singular value ``s`` of the normalised input to ``a s + b s^3 + c s^5``; a schedule
gives the ``(a, b, c)`` of each iteration in turn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Coefficients = tuple[float, float, float]

#: Muon's quintic coefficients (a, b, c), tuned for the slope at zero and used at every iteration.
NS_COEFFICIENTS: Coefficients = (3.4445, -4.7750, 2.0315)

#: Named schedules, one triple per iteration (cycled for more iterations), as the official release's
#: ``coefficient_type`` names them (NVIDIA Emerging-Optimizers' ``newton_schulz``, called by its
#: ``pion_msign.py``): ``simple`` is Muon's triple; ``quintic`` is the five-triple schedule of modded-nanogpt,
#: steeper at first, then settling near 1.
NS_SCHEDULES: dict[str, tuple[Coefficients, ...]] = {
    "simple": (NS_COEFFICIENTS,),
    "quintic": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}


def coefficient_schedule(schedule: Sequence[Coefficients], steps: int) -> list[Coefficients]:
    """The ``(a, b, c)`` of each of ``steps`` iterations: ``schedule`` repeated; a schedule of more than one
    triple needs ``steps`` to be a multiple of its length (as the official's), so no iteration is cut off."""
    try:
        triples = [tuple(float(v) for v in triple) for triple in schedule]
    except TypeError:  # a bare triple, or numbers where triples belong
        triples = []
    if not triples or any(len(triple) != 3 for triple in triples):
        raise ValueError(f"a Newton-Schulz schedule is a non-empty sequence of (a, b, c) triples, got {schedule!r}")
    if steps < 1 or steps % len(triples):
        raise ValueError(f"Newton-Schulz steps={steps} must be a positive multiple of the schedule's "
                         f"{len(triples)} triples")
    return triples * (steps // len(triples))


def msign(
    x: Tensor,
    steps: int = 5,
    schedule: Sequence[Coefficients] = NS_SCHEDULES["quintic"],
    dtype: torch.dtype = torch.bfloat16,
    eps: float = 1e-7,
) -> Tensor:
    """Approximate the polar factor U V^T of ``x = U S V^T``.

    Args:
        x: ``(..., m, n)``; leading dims are a batch.
        steps: Newton-Schulz iterations.
        schedule: their coefficients (:func:`coefficient_schedule`); Muon passes ``(NS_COEFFICIENTS,)``.
        dtype: the iteration's dtype (bf16 is Muon's choice; singular values above 1% of the Frobenius norm
            only land in ~[0.68, 1.13] with Muon's triple, [0.98, 1.03] with ``quintic``, so low precision
            costs nothing that matters).
    Returns:
        ``(..., m, n)`` in ``x.dtype``.
    """
    coefficients = coefficient_schedule(schedule, steps)
    y = x.to(dtype)
    # Iterate on the wide orientation so the Gram matrix is the smaller one.
    wide = y.size(-2) <= y.size(-1)
    if not wide:
        y = y.mT
    y = y / y.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    batch_shape = y.shape[:-2]
    # One matrix stays 2-D: CPU's batched bf16 GEMM copies a transposed operand, 2-D BLAS takes it as a flag
    # (measured: benchmarks/README.md, "Figures behind design choices").
    y = y.reshape(-1, *y.shape[-2:]) if batch_shape else y
    addmm = torch.baddbmm if batch_shape else torch.addmm
    for a, b, c in coefficients:
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
    schedule: Sequence[Coefficients] = NS_SCHEDULES["quintic"],
    eps: float = 1e-7,
) -> Tensor:
    """:func:`msign` of ``S = P^T J P``, ``J = [[0, I], [-I, 0]]``, iterated on ``2k x 2k`` matrices.

    Every Newton-Schulz iterate on ``S`` is ``P^T Z P``, and ``(Y Y^T)^j Y = P^T (Z G Z^T G)^j Z P`` with the
    Gram matrix ``G = P P^T``, so ``Z`` carries the whole iteration: ``(2k)^3`` work per step instead of
    ``n^3``. Pion's generators have this form (``W^T M - M^T W`` with ``P = [W; M]``), so a per-head block's
    ``2048 x 2048`` in-side generator is orthogonalised through ``256 x 256`` matrices.

    Each iteration's polynomial acts on ``Z`` as it would on ``S``, so a schedule's triples apply in the same
    order on either side.

    Args:
        p: ``(..., 2k, n)``; the iteration runs in its dtype.
        steps, schedule: as for :func:`msign`.
    Returns:
        ``(..., n, n)``, equal to ``msign(P^T J P)`` in exact arithmetic.
    """
    coefficients = coefficient_schedule(schedule, steps)
    k = p.shape[-2] // 2

    def j_times(x: Tensor) -> Tensor:  # J @ x
        return torch.cat([x[..., k:, :], -x[..., :k, :]], dim=-2)

    gram = p @ p.mT
    jg = j_times(gram)
    # ||S||_F^2 = tr(J^T G J G) = -tr((J G)^2)
    norm = (-(jg * jg.mT).sum(dim=(-2, -1), keepdim=True)).clamp(min=0).sqrt()
    eye = torch.eye(2 * k, dtype=p.dtype, device=p.device).expand(gram.shape)
    z = j_times(eye) / norm.clamp(min=eps)
    for a, b, c in coefficients:
        zg_zg = (z @ gram) @ (z.mT @ gram)  # Z G Z^T G
        z = a * z + (b * zg_zg + c * zg_zg @ zg_zg) @ z
    return p.mT @ z @ p
