"""One Muon step on plain tensors (the matched baseline), in two parts: the update direction, which needs the
whole gradient, and its application, which is elementwise and so can run on any rows of ``W``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .newton_schulz import msign


def muon_direction(
    g: Tensor,
    momentum_buffer: Tensor,
    *,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    ns_coefficients: tuple[float, float, float],
    ns_dtype: torch.dtype,
) -> Tensor:
    """Advance ``momentum_buffer`` ``(r, c)``, or a batch ``(B, r, c)`` of units each orthogonalized alone, by
    the gradient ``g`` (same shape) in place and return the orthogonalised direction (same shape) in
    ``ns_dtype``, the dtype Newton-Schulz ran in (so no rounding).

    The buffer is an EMA (``lerp``) rather than a plain sum: the two differ by the factor ``1 - momentum``,
    which the orthogonalisation removes, and the EMA matches ``torch.optim.Muon``.
    """
    momentum_buffer.lerp_(g, 1.0 - momentum)
    update = g.lerp(momentum_buffer, momentum) if nesterov else momentum_buffer
    return msign(update.to(ns_dtype), ns_steps, (ns_coefficients,), ns_dtype)  # one triple at every iteration


def muon_apply(
    w: Tensor,
    direction: Tensor,
    *,
    shape: tuple[int, int],
    lr: float,
    rms_scale: float,
    weight_decay: float,
) -> None:
    """Decay ``w`` and step it along ``-direction``, in place; elementwise, so ``w`` and ``direction`` may be
    any matching rows ``(k, c)`` of the matrix.

    Args:
        shape: ``(r, c)`` of one unit (the whole matrix, or one expert, half or head): the step is scaled by ``rms_scale * sqrt(max(r, c))`` so that
            its RMS matches AdamW's and one lr serves both.
    """
    w.mul_(1.0 - lr * weight_decay)
    w.add_(direction.to(w.dtype), alpha=-lr * rms_scale * math.sqrt(max(shape)))
