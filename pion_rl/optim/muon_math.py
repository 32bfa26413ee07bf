"""One Muon step on plain tensors (the matched baseline)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .newton_schulz import msign


def muon_step(
    w: Tensor,
    g: Tensor,
    momentum_buffer: Tensor,
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    ns_coefficients: tuple[float, float, float],
    ns_dtype: torch.dtype,
    rms_scale: float,
    weight_decay: float,
) -> None:
    """Update ``w`` ``(r, c)``, or a batch ``(B, r, c)`` of units each orthogonalized alone, and
    ``momentum_buffer`` (same shape) in place.

    The buffer is an EMA (``lerp``) rather than a plain sum: the two differ by the factor ``1 - momentum``,
    which the orthogonalisation removes, and the EMA matches ``torch.optim.Muon``. The step is scaled by
    ``rms_scale * sqrt(max(r, c))`` so that its RMS matches AdamW's and one lr serves both.
    """
    momentum_buffer.lerp_(g, 1.0 - momentum)
    update = g.lerp(momentum_buffer, momentum) if nesterov else momentum_buffer
    ortho = msign(update, ns_steps, (ns_coefficients,), ns_dtype)  # one triple at every iteration
    w.mul_(1.0 - lr * weight_decay)
    w.add_(ortho, alpha=-lr * rms_scale * math.sqrt(max(w.shape[-2:])))
