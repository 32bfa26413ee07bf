"""Which parameters a matrix optimizer (Pion, Muon) takes, and which go to its AdamW fallback.

Matrix algorithms take 2-D hidden matrices. AdamW takes every tensor that is not 2-D, embeddings and output
heads (they are lookup tables / readouts, not linear maps between hidden states), and norms and biases.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

#: Name fragments of embedding and output-head parameters across common architectures.
EMBEDDING_NAMES = (
    "embed_tokens", "embed_positions", "lm_head", "wte", "wpe", "word_embeddings", "position_embeddings",
    "embed_out", "output_layer", "tok_embeddings",
)
NORM_NAMES = ("norm", "ln_", "layernorm")
#: Separate attention projections: updated per head when ``head_dim`` is given.
PER_HEAD_NAMES = ("q_proj", "k_proj", "v_proj")
#: Fused projections: q/k/v stacked (every part is whole heads), or gate/up stacked (two halves).
FUSED_QKV_NAMES = ("qkv_proj", "query_key_value", "c_attn", "Wqkv")
FUSED_GATE_UP_NAMES = ("gate_up_proj",)
MATRIX_OPTIMIZERS = ("pion", "muon")
OPTIMIZERS = MATRIX_OPTIMIZERS + ("adamw",)


class WholeMatrixAttentionWarning(UserWarning):
    """Pion got q/k/v projections but no head size, so it rotates each as one whole matrix, not per head."""


def attention_head_size(config: Any) -> int | None:
    """Rows per attention head of a Hugging Face model config: ``head_dim`` (Qwen3 declares it), else
    ``hidden_size // num_attention_heads``; None when the config has neither."""
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    return hidden // heads if hidden and heads else None


def _module_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def is_matrix(name: str, tensor: torch.Tensor, embedding_modules: frozenset[str] = frozenset()) -> bool:
    """True if ``tensor`` (named ``name``) is a hidden 2-D matrix a matrix optimizer should take."""
    if tensor.ndim != 2:
        return False
    lowered = name.lower()
    if _module_of(name) in embedding_modules or any(part in lowered for part in EMBEDDING_NAMES):
        return False
    return not any(part in lowered for part in NORM_NAMES) and not lowered.endswith("bias")


def row_block_for(name: str, tensor: torch.Tensor, head_dim: int | None) -> int | None:
    """Rows per independent block of a matrix (Pion's per-head and split-fused updates), or None."""
    module = _module_of(name).rsplit(".", 1)[-1]
    if any(module == part for part in FUSED_GATE_UP_NAMES):
        return tensor.shape[0] // 2
    if head_dim is not None and module in PER_HEAD_NAMES + FUSED_QKV_NAMES:
        if tensor.shape[0] % head_dim:
            raise ValueError(
                f"{name}: its {tensor.shape[0]} rows do not split into heads of head_dim={head_dim}. head_dim must be "
                f"the model's attention head size: read it from the model's config, model.config.head_dim, or "
                f"model.config.hidden_size // model.config.num_attention_heads when the config has no head_dim"
            )
        return head_dim
    return None


def _named(params_or_model: nn.Module | Iterable[tuple[str, torch.Tensor]]):
    if isinstance(params_or_model, nn.Module):
        embedding_modules = frozenset(n for n, m in params_or_model.named_modules() if isinstance(m, nn.Embedding))
        # named_parameters() yields a tied weight once, under its first (embedding) name.
        return list(params_or_model.named_parameters()), embedding_modules
    named = list(params_or_model)
    for item in named:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"expected a module or (name, tensor) pairs such as model.named_parameters(); got {item!r}")
    return named, frozenset()


def param_groups(
    model_or_named_params: nn.Module | Iterable[tuple[str, torch.Tensor]],
    optimizer: str = "pion",
    lr: float | None = None,
    head_dim: int | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Param groups for ``Pion``/``Muon`` (``algorithm`` "pion"/"muon" or "adamw"), or one group for AdamW.

    Args:
        model_or_named_params: a module, or ``(name, tensor)`` pairs. Frozen tensors are left out.
        optimizer: "pion", "muon" or "adamw".
        lr: written into every group when given.
        head_dim: rows per attention head; q/k/v (and fused qkv) get ``row_block=head_dim`` under Pion. None:
            read from a module's ``config`` (:func:`attention_head_size`); named pairs carry no config, so
            Pion then updates q/k/v as whole matrices and a :class:`WholeMatrixAttentionWarning` names them.
        overrides: further group options, copied into every group (e.g. ``variant="msign"``).
    Returns:
        A list of dicts with ``params``, ``param_names``, ``algorithm`` (matrix optimizers) and the options.
    """
    optimizer = optimizer.lower()
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if head_dim is None and isinstance(model_or_named_params, nn.Module):
        head_dim = attention_head_size(getattr(model_or_named_params, "config", None))
    named, embedding_modules = _named(model_or_named_params)
    named = [(n, p) for n, p in named if p.requires_grad]
    options = dict(overrides, **({} if lr is None else {"lr": lr}))
    if optimizer == "adamw":
        return [{"params": [p for _, p in named], "param_names": [n for n, _ in named], **options}]

    groups: dict[tuple[str, int | None], dict[str, Any]] = {}
    for name, tensor in named:
        algorithm = optimizer if is_matrix(name, tensor, embedding_modules) else "adamw"
        row_block = row_block_for(name, tensor, head_dim) if algorithm == "pion" else None
        group = groups.setdefault((algorithm, row_block), {
            "params": [], "param_names": [], "algorithm": algorithm, **options,
            **({"row_block": row_block} if row_block is not None else {}),
        })
        group["params"].append(tensor)
        group["param_names"].append(name)
    whole = [n for (algorithm, block), g in groups.items() if algorithm == "pion" and block is None
             for n in g["param_names"] if _module_of(n).rsplit(".", 1)[-1] in PER_HEAD_NAMES + FUSED_QKV_NAMES]
    if whole:
        warnings.warn(
            f"Pion updates {len(whole)} attention projection(s) as whole matrices, not per head, because no "
            f"head_dim was given: {', '.join(whole)}. Pass the model itself (Pion(model, ...) reads the head size "
            f"from model.config) or head_dim=<rows per head>", WholeMatrixAttentionWarning, stacklevel=2)
    return list(groups.values())
