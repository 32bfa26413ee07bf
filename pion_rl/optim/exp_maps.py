"""Maps from a skew-symmetric generator to an (approximately) orthogonal factor, applied to a matrix.

Each function returns ``W E(s A)`` for a skew ``A`` and a step ``s`` without forming ``E`` where it can avoid it,
and without scaling the (large) generator: ``s`` multiplies the ``r x c`` products instead.

- ``taylor``: ``E(X) = sum_{j<=k} X^j / j!``; orthogonal only to ``O(||X||^(k+1))``
  (for k = 2, ``E^T E = I + X^4/4``).
- ``cayley``: ``E(X) = (I - X/2)^-1 (I + X/2)``, exactly orthogonal, equal to the degree-2 Taylor map to 2nd order.
- ``exp``: ``E(X) = matrix_exp(X)``, exactly orthogonal.

Both sides compute in ``W``'s own layout (``W A`` on the right, ``A W`` on the left), so a result written back
into ``W`` (``out=w``) is a contiguous pass, not a transposing copy.

A bf16 generator (``precision="bf16"``, see :mod:`pion_rl.optim.precision`) is still exactly skew: the Taylor
terms are then computed precise in W with fp32 output; ``cayley`` and ``exp`` use the rounded
generator in the compute dtype, so they stay exactly orthogonal.
The Cayley solve runs in fp64: in fp32, at d ~ 6000, its rounding moved singular values ~1e-5, more than
Taylor-2's truncation does, while fp64 leaves only the rounding of the fp32 result.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .precision import times_generator

EXP_MAPS = ("taylor", "cayley", "exp")


def _rotate(
    w: Tensor, a: Tensor, scale: float | Tensor, method: str, degree: int, first: Tensor | None,
    out: Tensor | None, left: bool,
) -> Tensor:
    if method not in EXP_MAPS:
        raise ValueError(f"unknown exp_map {method!r}; expected one of {EXP_MAPS}")
    if method == "exp":
        e = torch.linalg.matrix_exp(scale * a.to(w.dtype))
        result = e @ w if left else w @ e
    elif method == "cayley":
        # (I - X/2)^-1 (I + X/2) commute, so solve (I - X/2) Z = W + XW/2 (right: Z (I - X/2) = W + WX/2).
        first = times_generator(w, a, left=left) if first is None else first
        eye = torch.eye(a.size(-1), dtype=torch.float64, device=a.device)
        lhs, rhs = eye - (scale / 2) * a.double(), (w + first * (scale / 2)).double()
        result = torch.linalg.solve(lhs, rhs, left=left).to(w.dtype)
    else:
        # W + sum_j s^j/j! P_j with P_1 = W A, P_j = P_{j-1} A (left: A-side products). Each P_j is formed
        # before W changes, so the sum may accumulate into W itself.
        term = times_generator(w, a, left=left) if first is None else first
        result = w if out is w else w.clone() if out is None else out.copy_(w)
        for j in range(1, degree + 1):
            if j > 1:
                term = times_generator(term, a, parts=2, left=left)
            coefficient = scale**j / math.factorial(j)
            if isinstance(coefficient, Tensor):
                result.addcmul_(term, coefficient)  # one step per matrix of the batch
            else:
                result.add_(term, alpha=coefficient)
        return result
    return result if out is None else out.copy_(result)


def rotate_right(
    w: Tensor, a: Tensor, scale: float | Tensor = 1.0, method: str = "taylor", degree: int = 2,
    wa: Tensor | None = None, out: Tensor | None = None,
) -> Tensor:
    """``W E(scale * A)``.

    Args:
        w: ``(..., r, c)``.
        a: ``(..., c, c)``, skew-symmetric, in ``w``'s dtype or bf16.
        scale: a number, or a tensor ``(..., 1, 1)`` with one step per matrix of the batch.
        method: one of :data:`EXP_MAPS`.
        degree: Taylor degree (``taylor`` only).
        wa: ``W @ A`` if the caller already has it (saves one matmul).
        out: where to write the result (``w`` itself to update in place); a new tensor if None.
    Returns:
        ``(..., r, c)``.
    """
    return _rotate(w, a, scale, method, degree, wa, out, left=False)


def rotate_left(
    w: Tensor, a: Tensor, scale: float | Tensor = 1.0, method: str = "taylor", degree: int = 2,
    aw: Tensor | None = None, out: Tensor | None = None,
) -> Tensor:
    """``E(scale * A) W`` for ``w`` ``(..., r, c)`` and skew ``a`` ``(..., r, r)``; ``aw`` is ``A @ W`` if known;
    ``out`` as for :func:`rotate_right`."""
    return _rotate(w, a, scale, method, degree, aw, out, left=True)
