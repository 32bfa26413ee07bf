"""Muon, the matched baseline: orthogonalised Nesterov momentum for 2-D matrices, AdamW for the rest."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .matrix_optimizer import MatrixOptimizer
from .options import Number
from .muon_math import muon_apply, muon_direction
from .newton_schulz import NS_COEFFICIENTS
from .units import from_units, to_units

_NS_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


def _ns_dtype(value) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in _NS_DTYPES:
        raise ValueError(f"Muon: unknown ns_dtype {value!r}; expected one of {sorted(_NS_DTYPES)}")
    return _NS_DTYPES[value]


class Muon(MatrixOptimizer):
    """Muon with the paper's settings (``pion_rl/optim/ALGORITHM.md``): momentum 0.95, Nesterov, 5 quintic
    Newton-Schulz steps (in bf16), step ``lr * rms_scale * sqrt(max(d_out, d_in))``, decoupled weight decay 0.01.

    ``params``, the ``adamw_*`` options, ``head_dim``, ``router``, ``routes`` and ``process_group`` are as for
    :class:`pion_rl.optim.Pion`
    (the official Muon's fallback is ``adamw_eps_form="before_bias_correction"``, which the recipe uses);
    groups use ``algorithm`` ``"muon"`` or ``"adamw"``. ``ns_dtype`` may be a dtype or a name (``"bfloat16"``,
    ``"float32"``) so Hydra configs can set it. State per matrix: ``step`` and ``momentum_buffer`` like ``W``
    (for split layouts, packed experts and halves, shaped as its units ``(B, r, c)``: each is orthogonalized on
    its own; heads are not split, as in the official Muon).
    """

    algorithm = "muon"
    numeric_options = {
        "momentum": Number(low=0.0, high=1.0, high_open=True), "ns_steps": Number(low=1, integer=True),
        "ns_coefficients": Number(length=3), "rms_scale": Number(low=0.0, low_open=True),
        "weight_decay": Number(low=0.0),
    }

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        *,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_dtype: torch.dtype | str = torch.bfloat16,
        rms_scale: float = 0.2,
        weight_decay: float = 0.01,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.01,
        adamw_eps_form: str = "after_bias_correction",
        head_dim: int | None = None,
        process_group=None,
        router: str = "adamw",
        routes: dict[str, str] | None = None,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, ns_coefficients=tuple(ns_coefficients),
            ns_dtype=ns_dtype, rms_scale=rms_scale, weight_decay=weight_decay,
            adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
            adamw_eps_form=adamw_eps_form,
        )
        # Muon updates whole matrices; head_dim only matters to Pion's per-head blocks.
        super().__init__(params, defaults, head_dim=None, process_group=process_group, router=router, routes=routes)

    def _check_matrix_group(self, group: dict[str, Any]) -> None:
        _ns_dtype(group["ns_dtype"])

    def _matrix_state_shapes(self, p: Tensor, group: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        if "layout" not in group and "halves" not in group:
            return {"momentum_buffer": tuple(p.shape)}
        return {"momentum_buffer": self._unit_shape(p, group)}

    def _direction(self, p: Tensor, grad: Tensor, group: dict[str, Any]) -> Tensor:
        """Advance ``p``'s momentum by ``grad`` (``p``'s stored layout: the whole matrix, or this rank's experts)
        and return the orthogonalised direction of every unit, in that same layout, in ``ns_dtype``."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["momentum_buffer"] = torch.zeros(self._matrix_state_shapes(p, group)["momentum_buffer"],
                                                   dtype=grad.dtype, device=grad.device)
        state["step"] += 1
        units = (group.get("layout", "out_in"), group.get("halves"))
        g = to_units(grad, *units)[0]
        buffer = state["momentum_buffer"]
        direction = muon_direction(
            g.view_as(buffer), buffer, momentum=group["momentum"], nesterov=group["nesterov"],
            ns_steps=group["ns_steps"], ns_coefficients=tuple(group["ns_coefficients"]),
            ns_dtype=_ns_dtype(group["ns_dtype"]))
        return from_units(direction.view_as(g), tuple(grad.shape), *units)

    def _apply(self, p: Tensor, weight: Tensor, direction: Tensor, group: dict[str, Any]) -> None:
        """Decay ``weight`` and step it along ``direction`` (any matching rows of ``p``'s stored layout)."""
        muon_apply(weight, direction, shape=self._unit_shape(p, group)[1:], lr=group["lr"], rms_scale=group["rms_scale"],
                   weight_decay=group["weight_decay"])

    def _matrix_group(self, group: dict[str, Any], params: list[Tensor], owners: list[int]) -> None:
        # The direction needs only the whole gradient, and applying it is elementwise: the owner gets G and
        # sends back the direction (exact in ns_dtype), about half the bytes of gathering W and G and
        # sending W back.
        self._exchange.step_owned(
            params, owners, lambda i, grad: self._direction(params[i], grad, group),
            lambda i, weight, rows: self._apply(params[i], weight, rows, group),
            direction_dtype=_ns_dtype(group["ns_dtype"]))

    def _matrix_update(self, p: Tensor, weight: Tensor, grad: Tensor, group: dict[str, Any]) -> None:
        # Packed experts, updated where they lie (see MatrixOptimizer.step).
        self._apply(p, weight, self._direction(p, grad, group), group)
