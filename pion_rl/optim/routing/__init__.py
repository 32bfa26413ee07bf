"""Which optimizer takes each parameter, and in which units: decided by what the tensor is.

Given a model, a parameter is judged by the module that holds it (its class: ``nn.Embedding``, a norm,
``nn.Linear``, transformers' ``Conv1D`` with its ``(in, out)`` weight, a packed-experts module, a router, a
peft LoRA layer), by where that module sits (a task head outside the base model is a readout) and by the
model's config (attention heads, MLA dims, experts). Attribute names decide only what nothing else tells:
which projections of an attention module are per-head, and which fused weight holds gate and up. Given bare
``(name, tensor)`` pairs, names and shapes are all there is.

Every trainable tensor gets a :class:`Route`: the matrix optimizer (Pion / Muon) or AdamW, the units the
matrix optimizer updates it in (:mod:`pion_rl.optim.units`), and a reason. A tensor no rule knows (more than
two dims outside an experts module) goes to AdamW with an :class:`UnroutedTensorWarning` naming it and the
``routes`` option that routes it.

``python -m pion_rl.optim.routing MODEL`` prints the routing table of a model (a Hugging Face id in the local
cache, a local directory, or a ``config.json``), built on the meta device: no weights are read or allocated.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..units import HALVES, LAYOUTS, is_experts, unit_shape

#: Values of the ``router`` option: routers ``[E, H]`` to AdamW (the default) or to the matrix optimizer.
ROUTER_CHOICES = ("adamw", "matrix")
#: Values of the ``routes`` option (a dict from parameter-name glob patterns to these): AdamW, or the matrix
#: optimizer with this ``(layout, halves)`` (see :mod:`pion_rl.optim.units`).
ROUTE_CHOICES: dict[str, tuple[str, str | None] | None] = {
    "adamw": None,
    "matrix": ("out_in", None),
    "matrix_in_out": ("in_out", None),
    "matrix_halves": ("out_in", "stacked"),
    "experts": ("experts_out_in", None),
    "experts_halves": ("experts_out_in", "stacked"),
    "experts_in_out": ("experts_in_out", None),
    "experts_in_out_halves": ("experts_in_out", "stacked"),
    "experts_in_out_interleaved_halves": ("experts_in_out", "interleaved"),
}

#: Attention projections that hold whole heads: per-head units (``head_dim`` rows each).
PER_HEAD_NAMES = ("q_proj", "k_proj", "v_proj")
FUSED_QKV_NAMES = ("qkv_proj", "query_key_value", "c_attn", "Wqkv")
#: MLA (DeepSeek-V2/V3): the query up-projection (``q_proj`` without a query LoRA) and the key/value
#: up-projection, whose rows are ``heads x qk_head_dim`` and ``heads x (qk_nope_head_dim + v_head_dim)``.
MLA_QUERY_NAMES = ("q_b_proj", "q_proj")
MLA_KV_NAMES = ("kv_b_proj",)
#: A 2-D fused ``[gate; up]`` projection (Phi-3): two halves.
FUSED_GATE_UP_NAMES = ("gate_up_proj",)
#: Packed-experts weights holding gate and up together.
EXPERT_GATE_UP_NAMES = ("gate_up_proj",)
#: Last resort for bare named parameters (no module to look at): module names of embeddings and readouts.
EMBEDDING_NAMES = ("embed_tokens", "embed_positions", "wte", "wpe", "word_embeddings", "position_embeddings",
                   "tok_embeddings", "token_embedding", "embeddings", "embedding")
READOUT_NAMES = ("lm_head", "embed_out", "output_layer", "score", "v_head", "value_head", "classifier")
#: A top-level module of this name is a readout (torchtitan's ``output``); deeper, ``output`` is a hidden map.
TOP_LEVEL_READOUT_NAMES = ("output",)


class WholeMatrixAttentionWarning(UserWarning):
    """Pion got q/k/v projections but no head size, so it rotates each as one whole matrix, not per head."""


class UnroutedTensorWarning(UserWarning):
    """A trainable tensor no routing rule knows went to AdamW; the ``routes`` option routes it."""


@dataclass(frozen=True)
class Route:
    """Where one trainable tensor goes.

    Attributes:
        name: the parameter's name.
        shape: its shape.
        kind: what it is: ``embedding``, ``norm``, ``bias``, ``vector`` (1 x n), ``readout``, ``router``,
            ``lora``, ``attention`` (per head), ``mla`` (per head), ``experts``, ``gate_up`` (two halves),
            ``matrix``, ``unknown``.
        matrix: True for the matrix optimizer (Pion / Muon), False for AdamW.
        layout, halves: how its units are stored (:mod:`pion_rl.optim.units`; matrix routes only).
        head_rows: rows per attention head (Pion's ``row_block``), or None.
        reason: why, in a few words.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    matrix: bool
    reason: str
    layout: str = "out_in"
    halves: str | None = None
    head_rows: int | None = None

    def units(self, per_head: bool = True) -> tuple[int, int, int]:
        """``(B, r, c)`` of its units (per head only with ``per_head``, as Pion; Muon keeps heads whole)."""
        return unit_shape(self.shape, self.layout, self.halves, self.head_rows if per_head else None)

    def structure(self, per_head: bool = True) -> str:
        """The block structure in words: ``whole``, ``per head``, ``per expert``, ``halves`` combined."""
        if not self.matrix:
            return self.kind
        parts = ["per expert"] if is_experts(self.layout) else []
        if self.halves:
            parts.append(f"{self.halves} halves")
        if self.head_rows and per_head:
            parts.append("per head")
        if self.layout.endswith("in_out"):
            parts.append("(in, out) storage")
        return ", ".join(parts) or "whole"


def attention_head_size(config: Any) -> int | None:
    """Rows per attention head of a Hugging Face model config: ``head_dim`` (Qwen3 declares it), else
    ``hidden_size // num_attention_heads``; None when the config has neither (or is None)."""
    config = _text_config(config)
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    return hidden // heads if hidden and heads else None


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _mla_rows(config: Any, attr: str) -> int | None:
    """Rows per head of an MLA up-projection ``attr``, or None for a config without MLA."""
    if config is None or getattr(config, "kv_lora_rank", None) is None:
        return None
    nope, rope = getattr(config, "qk_nope_head_dim", None), getattr(config, "qk_rope_head_dim", None)
    if attr in MLA_QUERY_NAMES and nope and rope:
        return getattr(config, "qk_head_dim", None) or nope + rope
    v_dim = getattr(config, "v_head_dim", None)
    if attr in MLA_KV_NAMES and nope and v_dim:
        return nope + v_dim
    return None


def _is_norm(module: nn.Module) -> bool:
    norms = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d, nn.LocalResponseNorm)
    return isinstance(module, norms) or type(module).__name__.endswith(("Norm", "NormLayer"))


def _is_router(module: nn.Module) -> bool:
    return "router" in type(module).__name__.lower()


def _is_lora(modules: list[nn.Module]) -> bool:
    """True when a module on the path to the parameter is a peft LoRA layer."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        LoraLayer = ()  # noqa: N806 - without peft no module can be one
    return any(isinstance(m, LoraLayer) for m in modules)


def _experts_count(module: nn.Module, config: Any) -> int | None:
    for owner in (module, config):
        for attr in ("num_experts", "num_local_experts", "n_routed_experts"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


class _Router:
    """Routes the parameters of one model (or bare named parameters) under one set of options."""

    def __init__(self, model: nn.Module | None, head_dim: int | None, router: str,
                 routes: dict[str, str] | None):
        if router not in ROUTER_CHOICES:
            raise ValueError(f"unknown router={router!r}; expected one of {ROUTER_CHOICES} (routers [experts, "
                             f"hidden] go to AdamW by default, 'matrix' gives them to Pion / Muon)")
        for pattern, choice in (routes or {}).items():
            if choice not in ROUTE_CHOICES:
                raise ValueError(f"routes[{pattern!r}]={choice!r} is not a route; expected one of "
                                 f"{tuple(ROUTE_CHOICES)}")
        self.model = model
        self.config = _text_config(getattr(model, "config", None)) if model is not None else None
        self.explicit_head_dim = head_dim
        self.head_dim = head_dim or attention_head_size(self.config)
        self.router = router
        self.routes = dict(routes or {})
        self.used_patterns: set[str] = set()
        self.readout_modules, self.head_roots, self.base_roots = self._heads(model)

    @staticmethod
    def _heads(model: nn.Module | None) -> tuple[set[str], list[str], list[str]]:
        """Names of output-embedding modules, and of each Hugging Face model's root and base-model root:
        a module under a root but outside its base model is a task head (a readout)."""
        if model is None:
            return set(), [], []
        from transformers import PreTrainedModel

        readouts, roots, bases = set(), [], []
        modules = dict(model.named_modules())
        ids = {id(m): n for n, m in modules.items()}
        for name, module in modules.items():
            if not isinstance(module, PreTrainedModel):
                continue
            output = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
            if isinstance(output, nn.Module) and id(output) in ids:
                readouts.add(ids[id(output)])
            base = getattr(module, "base_model", module)
            if base is not module and id(base) in ids:
                roots.append(name)
                bases.append(ids[id(base)])
        return readouts, roots, bases

    def _is_head(self, module_name: str) -> bool:
        def under(name: str, root: str) -> bool:
            return root == "" or name == root or name.startswith(root + ".")

        return any(under(module_name, root) and not under(module_name, base)
                   for root, base in zip(self.head_roots, self.base_roots))

    # ------------------------------------------------------------------ one tensor
    def route(self, name: str, p: torch.Tensor) -> Route:
        shape = tuple(p.shape)
        for pattern, choice in self.routes.items():
            if fnmatch.fnmatchcase(name, pattern):
                self.used_patterns.add(pattern)
                return self._chosen(name, shape, choice, pattern)
        module_name, _, attr = name.rpartition(".")
        if self.model is None:
            return self._by_name(name, shape, module_name, attr)
        path = [self.model]
        for part in module_name.split(".") if module_name else []:
            path.append(getattr(path[-1], part))
        module = path[-1]
        leaf = module_name.rpartition(".")[2]

        if _is_lora(path) and any(part.startswith("lora_") for part in module_name.split(".")):
            return Route(name, shape, "lora", True, "LoRA adapter (peft)")
        if attr == "bias" or attr.endswith("_bias"):
            return Route(name, shape, "bias", False, "bias")
        if isinstance(module, nn.Embedding) or (isinstance(module, nn.EmbeddingBag)):
            return Route(name, shape, "embedding", False, "embedding (nn.Embedding): a lookup table")
        if _is_norm(module):
            return Route(name, shape, "norm", False, f"norm ({type(module).__name__})")
        if p.ndim <= 1:
            return Route(name, shape, "vector", False, f"{p.ndim}-D: not a matrix")
        if _is_router(module) and p.ndim == 2:
            return self._router_route(name, shape, type(module).__name__)
        if p.ndim == 2:
            if min(shape) == 1:
                return Route(name, shape, "vector", False, "1 x n: a rotation cannot change its norm")
            if module_name in self.readout_modules or self._is_head(module_name):
                return Route(name, shape, "readout", False, "readout: a task head outside the base model")
            if module_name in TOP_LEVEL_READOUT_NAMES and not self.head_roots:
                return Route(name, shape, "readout", False, f"readout (top-level '{module_name}')")
            layout = "out_in"
            if type(module).__name__ == "Conv1D" and shape == (getattr(module, "nx", None), getattr(module, "nf", None)):
                layout = "in_out"
            elif not isinstance(module, nn.Linear) and attr != "weight":
                return self._unknown(name, shape, f"a 2-D parameter {attr!r} of {type(module).__name__}")
            return self._hidden_matrix(name, shape, leaf, layout)
        experts = _experts_count(module, self.config)
        if p.ndim == 3 and experts == shape[0]:
            return self._experts(name, shape, module, attr)
        return self._unknown(name, shape, f"{p.ndim}-D in {type(module).__name__}")

    def _hidden_matrix(self, name: str, shape: tuple[int, ...], leaf: str, layout: str) -> Route:
        orientation = " stored (in, out) (Conv1D)" if layout == "in_out" else ""
        mla = _mla_rows(self.config, leaf)
        if mla is not None:
            return self._per_head(name, shape, "mla", layout, mla, f"MLA up-projection, {mla} rows per head",
                                  from_config=True)
        if leaf in PER_HEAD_NAMES + FUSED_QKV_NAMES:
            return self._per_head(name, shape, "attention", layout, self.head_dim,
                                  f"attention projection{orientation}, per head", from_config=False)
        if leaf in FUSED_GATE_UP_NAMES:
            return Route(name, shape, "gate_up", True, f"fused gate/up{orientation}: two halves", layout, "stacked")
        return Route(name, shape, "matrix", True, f"hidden linear map{orientation}", layout)

    def _per_head(self, name, shape, kind, layout, rows, reason, *, from_config: bool) -> Route:
        if rows is not None:
            out = unit_shape(shape, layout)[1]
            if out % rows:
                source = ("the model config's MLA dims" if from_config else
                          f"head_dim={rows}" if self.explicit_head_dim else f"the config's head size {rows}")
                raise ValueError(
                    f"{name}: its {out} output rows do not split into heads of {source}. head_dim must be the "
                    f"model's attention head size: read it from the model's config, model.config.head_dim, or "
                    f"model.config.hidden_size // model.config.num_attention_heads when the config has no head_dim")
        return Route(name, shape, kind, True, reason + ("" if rows else " (no head size: whole)"), layout,
                     head_rows=rows)

    def _router_route(self, name: str, shape: tuple[int, ...], what: str) -> Route:
        if self.router == "matrix":
            return Route(name, shape, "router", True, f"router ({what}), router='matrix'")
        return Route(name, shape, "router", False, f"router ({what}): its rows score experts (router='adamw')")

    def _experts(self, name: str, shape: tuple[int, ...], module: nn.Module, attr: str) -> Route:
        transposed = getattr(module, "is_transposed", None)
        if transposed is None and self.config is not None:
            # Without transformers' layout flag, the hidden size tells the orientation when it is unambiguous.
            hidden = getattr(self.config, "hidden_size", None)
            hidden_out = attr not in EXPERT_GATE_UP_NAMES + ("up_proj",)  # down_proj maps into the hidden size
            first, last = shape[1] == hidden, shape[2] == hidden
            if first != last:
                transposed = last if hidden_out else first
        if transposed is None:
            return self._unknown(name, shape, f"3-D experts in {type(module).__name__} whose (in, out) "
                                              f"orientation is not known")
        layout = "experts_in_out" if transposed else "experts_out_in"
        if attr in EXPERT_GATE_UP_NAMES:
            halves = "stacked" if getattr(module, "is_concatenated", True) else "interleaved"
            return Route(name, shape, "experts", True, f"packed experts ({type(module).__name__}), per expert, "
                                                       f"gate/up {halves} halves", layout, halves)
        return Route(name, shape, "experts", True, f"packed experts ({type(module).__name__}), per expert", layout)

    def _by_name(self, name: str, shape: tuple[int, ...], module_name: str, attr: str) -> Route:
        """Bare named parameters: names and shapes are all there is."""
        parts = module_name.split(".") if module_name else []
        leaf = parts[-1] if parts else ""
        if any(part in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B") for part in parts):
            return Route(name, shape, "lora", True, "LoRA adapter (by name)")
        if attr == "bias" or attr.endswith("_bias"):
            return Route(name, shape, "bias", False, "bias")
        if len(shape) <= 1:
            return Route(name, shape, "vector", False, f"{len(shape)}-D: not a matrix")
        if len(shape) > 2:
            return self._unknown(name, shape, f"{len(shape)}-D (bare named parameters: pass the model itself "
                                              f"so its modules and config tell what it is)")
        if any(part in EMBEDDING_NAMES for part in parts):
            return Route(name, shape, "embedding", False, "embedding (by name)")
        if any(part in READOUT_NAMES for part in parts) or (len(parts) == 1 and leaf in TOP_LEVEL_READOUT_NAMES):
            return Route(name, shape, "readout", False, "readout (by name)")
        if min(shape) == 1:
            return Route(name, shape, "vector", False, "1 x n: a rotation cannot change its norm")
        if re.search(r"router$", leaf) or (leaf == "gate" and parts[-2:-1] == ["mlp"]):
            return self._router_route(name, shape, "by name")
        return self._hidden_matrix(name, shape, leaf, "out_in")

    def _chosen(self, name: str, shape: tuple[int, ...], choice: str, pattern: str) -> Route:
        target = ROUTE_CHOICES[choice]
        if target is None:
            return Route(name, shape, "adamw", False, f"routes[{pattern!r}]='adamw'")
        layout, halves = target
        try:
            unit_shape(shape, layout, halves)
        except ValueError as error:
            raise ValueError(f"routes[{pattern!r}]={choice!r} does not fit {name} {shape}: {error}") from None
        kind = "experts" if is_experts(layout) else "matrix"
        return Route(name, shape, kind, True, f"routes[{pattern!r}]={choice!r}", layout, halves)

    def _unknown(self, name: str, shape: tuple[int, ...], what: str) -> Route:
        return Route(name, shape, "unknown", False, f"no rule knows it: {what}")


def route_pairs(named_params: Iterable) -> list[tuple[str, torch.Tensor]]:
    """``named_params`` as a list, checked to be ``(name, tensor)`` pairs (TypeError otherwise)."""
    named = list(named_params)
    for item in named:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"expected a module or (name, tensor) pairs such as model.named_parameters(); got {item!r}")
    return named


def route_parameters(
    model_or_named_params: nn.Module | Iterable[tuple[str, torch.Tensor]],
    *,
    head_dim: int | None = None,
    router: str = "adamw",
    routes: dict[str, str] | None = None,
    trainable_only: bool = True,
) -> list[Route]:
    """A :class:`Route` for every (trainable) tensor, in ``named_parameters()`` order, a tied weight once.

    Args:
        model_or_named_params: a module (routed by its modules and config) or ``(name, tensor)`` pairs
            (by names and shapes only).
        head_dim: rows per attention head of q/k/v (and fused qkv); None reads it from the model's config
            (:func:`attention_head_size`). MLA up-projections always take their rows from the config.
        router: ``"adamw"`` (default) or ``"matrix"``: where MoE routers ``[experts, hidden]`` go.
        routes: ``{glob pattern: route}`` for tensors no rule knows (or to overrule one), the first matching
            pattern winning; routes are the keys of :data:`ROUTE_CHOICES`.
        trainable_only: leave out tensors with ``requires_grad=False``.
    Warns:
        UnroutedTensorWarning: for tensors sent to AdamW because no rule knows them.
    """
    model = model_or_named_params if isinstance(model_or_named_params, nn.Module) else None
    named = list(model.named_parameters()) if model is not None else route_pairs(model_or_named_params)
    router_ = _Router(model, head_dim, router, routes)
    result = [router_.route(n, p) for n, p in named if p.requires_grad or not trainable_only]
    unused = sorted(set(router_.routes) - router_.used_patterns)
    if unused:
        raise ValueError(f"routes pattern(s) {unused} match no trainable parameter; check the names "
                         f"(model.named_parameters())")
    unknown = [r for r in result if r.kind == "unknown"]
    if unknown:
        warnings.warn(
            f"{len(unknown)} trainable tensor(s) no routing rule knows go to AdamW: "
            + "; ".join(f"{r.name} {list(r.shape)} ({r.reason.removeprefix('no rule knows it: ')})" for r in unknown)
            + f". Route them with routes={{'<name or glob>': <one of {', '.join(ROUTE_CHOICES)}>}}",
            UnroutedTensorWarning, stacklevel=3)
    return result


# ---------------------------------------------------------------------- the report
def routing_table(routes: list[Route], algorithm: str = "pion") -> str:
    """The routing as a table: per algorithm and block structure, tensors, parameters and share of the model.

    Args:
        routes: from :func:`route_parameters`.
        algorithm: ``"pion"`` (heads split), ``"muon"`` (heads whole) or ``"adamw"`` (everything AdamW).
    """
    rows: dict[tuple[str, str], list[int]] = {}
    for r in routes:
        name = algorithm if r.matrix and algorithm != "adamw" else "adamw"
        structure = r.structure(per_head=algorithm == "pion") if name != "adamw" or not r.matrix else "all"
        entry = rows.setdefault((name, structure), [0, 0, 0])
        entry[0] += 1
        entry[1] += int(torch.Size(r.shape).numel())
        entry[2] += r.units(per_head=algorithm == "pion")[0] if r.matrix and name != "adamw" else 0
    total = sum(e[1] for e in rows.values()) or 1
    lines = [f"{'optimizer':<10} {'what':<40} {'tensors':>8} {'units':>8} {'parameters':>14} {'share':>7}"]
    order = sorted(rows, key=lambda key: (key[0] == "adamw", -rows[key][1]))
    for name, structure in order:
        tensors, numel, units = rows[(name, structure)]
        lines.append(f"{name:<10} {structure:<40} {tensors:>8} {units or '-':>8} {numel:>14,} "
                     f"{100 * numel / total:>6.1f}%")
    for name in dict.fromkeys(key[0] for key in order):
        numel = sum(e[1] for key, e in rows.items() if key[0] == name)
        tensors = sum(e[0] for key, e in rows.items() if key[0] == name)
        lines.append(f"{name + ' total':<51} {tensors:>8} {'':>8} {numel:>14,} {100 * numel / total:>6.1f}%")
    return "\n".join(lines)


__all__ = ["HALVES", "LAYOUTS", "ROUTER_CHOICES", "ROUTE_CHOICES", "Route", "UnroutedTensorWarning",
           "WholeMatrixAttentionWarning", "attention_head_size", "route_parameters", "routing_table"]
