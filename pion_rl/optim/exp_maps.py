"""Maps from a skew-symmetric generator to an (approximately) orthogonal factor, applied to a matrix.

Each function returns ``W E(s A)`` for a skew ``A`` and a step ``s`` without forming ``E`` where it can avoid it,
and without scaling the (large) generator: ``s`` multiplies the ``r x c`` products instead.

- ``taylor``: ``E(X) = sum_{j<=k} X^j / j!``; orthogonal only to ``O(||X||^(k+1))``
  (for k = 2, ``E^T E = I + X^4/4``).
- ``cayley``: ``E(X) = (I - X/2)^-1 (I + X/2)``, exactly orthogonal, equal to the degree-2 Taylor map to 2nd order.
- ``exp``: ``E(X) = matrix_exp(X)``, exactly orthogonal.

For skew X all three satisfy ``E(X)^T = E(-X)``, so the left-side product is the right-side product of the
transpose: ``E(sA) W = (W^T E(-sA))^T``. One implementation serves both sides.

A bf16 generator (``precision="bf16"``, see :mod:`pion_rl.optim.precision`) is still exactly skew: the Taylor
terms are then computed precise in their left factor with fp32 output; ``cayley`` and ``exp`` use the rounded
generator in the compute dtype, so they stay exactly orthogonal.
The Cayley solve runs in fp64: in fp32, at d ~ 6000, its rounding moved singular values ~1e-5, more than
Taylor-2's truncation does, while fp64 leaves only the rounding of the fp32 result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precision import times_generator

EXP_MAPS = ("taylor", "cayley", "exp")


def rotate_right(
    w: Tensor, a: Tensor, scale: float | Tensor = 1.0, method: str = "taylor", degree: int = 2,
    wa: Tensor | None = None,
) -> Tensor:
    """``W E(scale * A)``.

    Args:
        w: ``(..., r, c)``.
        a: ``(..., c, c)``, skew-symmetric, in ``w``'s dtype or bf16.
        scale: a number, or a tensor ``(..., 1, 1)`` with one step per matrix of the batch.
        method: one of :data:`EXP_MAPS`.
        degree: Taylor degree (``taylor`` only).
        wa: ``W @ A`` if the caller already has it (saves one matmul).
    Returns:
        ``(..., r, c)``, a new tensor.
    """
    if method not in EXP_MAPS:
        raise ValueError(f"unknown exp_map {method!r}; expected one of {EXP_MAPS}")
    if method == "exp":
        return w @ torch.linalg.matrix_exp(scale * a.to(w.dtype))
    term = (times_generator(w, a) if wa is None else wa) * scale  # W X
    if method == "cayley":
        eye = torch.eye(a.size(-1), dtype=torch.float64, device=a.device)
        # W (I + X/2) (I - X/2)^-1: the two factors commute, so solve Z (I - X/2) = W + WX/2.
        lhs, rhs = eye - (scale / 2) * a.double(), (w + term / 2).double()
        return torch.linalg.solve(lhs, rhs, left=False).to(w.dtype)
    out = w + term
    for j in range(2, degree + 1):
        term = times_generator(term, a, parts=2).mul_(scale / j)  # W X^j / j!
        out.add_(term)
    return out


def rotate_left(
    w: Tensor, a: Tensor, scale: float | Tensor = 1.0, method: str = "taylor", degree: int = 2,
    aw: Tensor | None = None,
) -> Tensor:
    """``E(scale * A) W`` for ``w`` ``(..., r, c)`` and skew ``a`` ``(..., r, r)``; ``aw`` is ``A @ W`` if known."""
    wa = None if aw is None else -aw.mT  # W^T A = (A^T W)^T = -(A W)^T because A^T = -A
    return rotate_right(w.mT, a, -scale, method, degree, wa).mT
