"""Param groups for Pion and Muon from the routing of a model's parameters (:mod:`pion_rl.optim.routing`).

Matrix algorithms take the hidden linear maps (dense matrices, attention heads, packed experts), each in its
units; AdamW takes embeddings, readouts, norms, biases, routers (by default) and what no rule knows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .routing import WholeMatrixAttentionWarning, attention_head_size, route_pairs, route_parameters, routing_table

#: Logs the routing table at INFO whenever a matrix optimizer's groups are built (verl's workers: see the engine).
logger = logging.getLogger("pion_rl.optim.routing")

MATRIX_OPTIMIZERS = ("pion", "muon")
OPTIMIZERS = MATRIX_OPTIMIZERS + ("adamw",)

__all__ = ["MATRIX_OPTIMIZERS", "OPTIMIZERS", "WholeMatrixAttentionWarning", "attention_head_size", "param_groups"]


def param_groups(
    model_or_named_params: nn.Module | Iterable[tuple[str, torch.Tensor]],
    optimizer: str = "pion",
    lr: float | None = None,
    head_dim: int | None = None,
    *,
    router: str = "adamw",
    routes: dict[str, str] | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Param groups for ``Pion``/``Muon`` (``algorithm`` "pion"/"muon" or "adamw"), or one group for AdamW.

    Args:
        model_or_named_params: a module (routed by what each tensor is: its module's class, the config), or
            ``(name, tensor)`` pairs (by name and shape). Frozen tensors are left out.
        optimizer: "pion", "muon" or "adamw".
        lr: written into every group when given.
        head_dim: rows per attention head; q/k/v (and fused qkv) get ``row_block=head_dim`` under Pion. None:
            read from a module's ``config``; named pairs carry no config, so Pion then updates q/k/v as whole
            matrices and a :class:`WholeMatrixAttentionWarning` names them.
        router: ``"adamw"`` (default) or ``"matrix"``: where MoE routers go.
        routes: ``{glob pattern: route}`` for tensors no rule knows (:func:`pion_rl.optim.routing.route_parameters`).
        overrides: further group options, copied into every group (e.g. ``variant="msign"``).
    Returns:
        A list of dicts with ``params``, ``param_names``, ``algorithm`` (matrix optimizers), the unit keys
        ``row_block`` (Pion's heads), ``layout`` and ``halves`` (:mod:`pion_rl.optim.units`; present only when
        not a plain ``out x in`` matrix) and the options.
    Raises:
        ValueError: for Pion given LoRA adapters (a rotation cannot grow ``lora_B`` from zero).
    """
    optimizer = optimizer.lower()
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    options = dict(overrides, **({} if lr is None else {"lr": lr}))
    if isinstance(model_or_named_params, nn.Module):
        named = list(model_or_named_params.named_parameters())
    else:
        named = list(model_or_named_params)
    if optimizer == "adamw":  # one group of everything trainable: nothing to route
        named = [(n, p) for n, p in route_pairs(named) if p.requires_grad]
        return [{"params": [p for _, p in named], "param_names": [n for n, _ in named], **options}]
    source = model_or_named_params if isinstance(model_or_named_params, nn.Module) else named
    routes_ = route_parameters(source, head_dim=head_dim, router=router, routes=routes)
    params = dict(named)
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s routing (%d tensors):\n%s", optimizer, len(routes_), routing_table(routes_, optimizer))
    lora = [r.name for r in routes_ if r.kind == "lora"]
    if optimizer == "pion" and lora:
        raise ValueError(
            f"Pion cannot train LoRA adapters ({len(lora)} tensors, e.g. {lora[0]}): lora_B starts at zero and "
            f"a rotation of zero stays zero, so nothing would train; use Muon or AdamW for adapters "
            f"(optimizer=Muon / AdamW), or Pion on the full model without LoRA")

    groups: dict[tuple, dict[str, Any]] = {}
    for r in routes_:
        algorithm = optimizer if r.matrix else "adamw"
        row_block = r.head_rows if algorithm == "pion" else None
        layout, halves = (r.layout, r.halves) if r.matrix else ("out_in", None)
        group = groups.setdefault((algorithm, row_block, layout, halves), {
            "params": [], "param_names": [], "algorithm": algorithm, **options,
            **({"row_block": row_block} if row_block is not None else {}),
            **({"layout": layout} if layout != "out_in" else {}),
            **({"halves": halves} if halves is not None else {}),
        })
        group["params"].append(params[r.name])
        group["param_names"].append(r.name)
    whole = [r.name for r in routes_ if optimizer == "pion" and r.kind == "attention" and r.head_rows is None]
    if whole:
        warnings.warn(
            f"Pion updates {len(whole)} attention projection(s) as whole matrices, not per head, because no "
            f"head_dim was given: {', '.join(whole)}. Pass the model itself (Pion(model, ...) reads the head size "
            f"from model.config) or head_dim=<rows per head>", WholeMatrixAttentionWarning, stacklevel=2)
    return list(groups.values())
