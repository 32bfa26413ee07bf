"""Maps from a skew-symmetric generator X to an (approximately) orthogonal factor, applied to a matrix.

Each function returns ``W @ E(X)`` without forming ``E(X)`` where it can avoid it:

- ``taylor``: ``E = sum_{j<=k} X^j / j!``; orthogonal only to ``O(||X||^(k+1))``
  (for k = 2, ``E^T E = I + X^4/4``).
- ``cayley``: ``E = (I - X/2)^-1 (I + X/2)``, exactly orthogonal, equal to the degree-2 Taylor map to 2nd order.
- ``exp``: ``E = matrix_exp(X)``, exactly orthogonal.

For skew X all three maps satisfy ``E(X)^T = E(-X)``, so the left-side product is the right-side product
of the transpose: ``E(X) W = (W^T E(-X))^T``. One implementation serves both sides.
"""

from __future__ import annotations

import torch
from torch import Tensor

EXP_MAPS = ("taylor", "cayley", "exp")


def rotate_right(w: Tensor, x: Tensor, method: str = "taylor", degree: int = 2, wx: Tensor | None = None) -> Tensor:
    """``W E(X)``.

    Args:
        w: ``(..., r, c)``.
        x: ``(..., c, c)``, skew-symmetric.
        method: one of :data:`EXP_MAPS`.
        degree: Taylor degree (``taylor`` only).
        wx: ``W @ X`` if the caller already has it (saves one matmul).
    Returns:
        ``(..., r, c)``, a new tensor.
    """
    if method == "exp":
        return w @ torch.linalg.matrix_exp(x)
    if wx is None:
        wx = w @ x
    if method == "taylor":
        out = w + wx
        term = wx
        for j in range(2, degree + 1):
            term = (term @ x) / j
            out = out + term
        return out
    if method == "cayley":
        eye = torch.eye(x.size(-1), dtype=x.dtype, device=x.device)
        # W (I + X/2) (I - X/2)^-1: the two factors commute, so solve Z (I - X/2) = W + WX/2.
        return torch.linalg.solve(eye - x / 2, w + wx / 2, left=False)
    raise ValueError(f"unknown exp_map {method!r}; expected one of {EXP_MAPS}")


def rotate_left(w: Tensor, x: Tensor, method: str = "taylor", degree: int = 2, xw: Tensor | None = None) -> Tensor:
    """``E(X) W`` for ``w`` ``(..., r, c)`` and skew ``x`` ``(..., r, r)``; ``xw`` is ``X @ W`` if known."""
    wx = None if xw is None else xw.mT  # W^T (-X) = (X W)^T because X^T = -X
    return rotate_right(w.mT, -x, method, degree, wx).mT
