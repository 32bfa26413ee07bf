"""Optimizer state per rank for AdamW / Muon / Pion on FSDP2 at 8 to 64 ranks, and in detail (with the exchange
traffic per step) at one world size.

Shapes only: the models are built on the meta device from their published configs (no weights, no hub), so
the output is the same on every machine. Matrix owners come from the code the optimizers really run
(``Pion``/``Muon.matrix_state_numel`` and ``pion_rl.optim.sharding.assign_owners``); row ranges from
``RowLayout`` (FSDP2's ``Shard(0)`` chunking). All state is fp32 (verl's FSDP2 actor keeps fp32 master
weights). Run:

    .venv/bin/python benchmarks/sharded_state.py [--world-size 8]

It prints the table at scale (docs/multi-node.md), its short form (README.md), then the detail at
``--world-size``.
"""

from __future__ import annotations

import argparse
import functools

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from pion_rl.optim import Muon, Pion
from pion_rl.optim.sharding import RowLayout, assign_owners

HEAD_DIM = 128
FP32 = 4
#: World sizes of the table at scale: one to eight nodes of 8 GPUs.
WORLD_SIZES = (8, 16, 32, 64)
#: The published configs' sizes (Qwen/Qwen3-1.7B, deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B, Qwen/Qwen3-8B).
MODELS = {
    "Qwen3-1.7B": (Qwen3ForCausalLM, Qwen3Config(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=HEAD_DIM, tie_word_embeddings=True)),
    "DeepSeek-R1-Distill-Qwen-1.5B": (Qwen2ForCausalLM, Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=False)),
    "Qwen3-8B": (Qwen3ForCausalLM, Qwen3Config(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=HEAD_DIM, tie_word_embeddings=False)),
}
OPTIMIZERS = ("adamw", "muon", "pion")


@functools.cache
def meta_model(name: str) -> nn.Module:
    model_class, config = MODELS[name]
    with torch.device("meta"):
        return model_class(config)


def shard_numel(p: torch.Tensor, layout: RowLayout) -> list[int]:
    """Elements of ``p`` each rank stores under FSDP2 (rows chunked by ``ceil(rows / world)``)."""
    per_row = p[0].numel() if p.ndim > 1 else 1
    ranges = (layout.rows(k, p.shape[0]) for k in range(layout.world_size))
    return [(stop - start) * per_row for start, stop in ranges]


def state_bytes_per_rank(model: nn.Module, optimizer: str, world: int) -> dict:
    """Sharded and unsharded (every rank holds all matrix state, as the public Pion release did) state bytes per
    rank, and ``largest``: (name, state bytes) of the matrix with the most state, whole on its owner (None for
    AdamW)."""
    layout = RowLayout(shard=tuple(range(world)), replica=(0,) * world, num_shards=world)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = {id(p): n for n, p in named}
    if optimizer == "adamw":  # exp_avg and exp_avg_sq of every local shard
        adamw = [p for _, p in named]
        matrices, costs = [], []
    else:
        opt = Pion(named, head_dim=HEAD_DIM) if optimizer == "pion" else Muon(named)
        adamw = [p for g in opt.param_groups if g["algorithm"] == "adamw" for p in g["params"]]
        matrices = [p for g in opt.param_groups if g["algorithm"] == optimizer for p in g["params"]]
        costs = opt.matrix_state_numel()  # in the same group order
    adamw_rank = [2 * FP32 * sum(col) for col in zip(*(shard_numel(p, layout) for p in adamw))]
    owners = assign_owners(costs, world)
    matrix_rank = [FP32 * sum(c for c, o in zip(costs, owners) if o == rank) for rank in range(world)]
    matrix_total = FP32 * sum(costs)
    largest = max(range(len(costs)), key=costs.__getitem__, default=None)
    return dict(
        matrices=matrices, owners=owners, layout=layout, matrix_total=matrix_total,
        largest=None if largest is None else (names[id(matrices[largest])], FP32 * costs[largest]),
        total=matrix_total + sum(adamw_rank), matrix_rank=matrix_rank,
        sharded=[a + m for a, m in zip(adamw_rank, matrix_rank)],
        unsharded=[a + matrix_total for a in adamw_rank],
    )


#: Bytes per matrix element on the wire, (to the owner, back from it): Pion gathers W and G in fp32 and
#: sends the new W back; Muon gathers G in fp32 and sends back its bf16 orthogonalised update.
WIRE_BYTES = {"pion": (2 * FP32, FP32), "muon": (FP32, 2)}


def exchange_bytes_per_rank(optimizer: str, matrices, owners, layout: RowLayout) -> tuple[list[int], list[int]]:
    """(sent, received) bytes per rank per step by ShardedExchange (see :data:`WIRE_BYTES`)."""
    world = layout.world_size
    to_owner, from_owner = WIRE_BYTES[optimizer]
    sent, received = [0] * world, [0] * world
    for p, owner in zip(matrices, owners):
        rows, cols = p.shape
        for k in range(world):
            if k == owner:
                continue
            start, stop = layout.rows(k, rows)
            numel = (stop - start) * cols
            sent[k] += to_owner * numel
            received[owner] += to_owner * numel
            sent[owner] += from_owner * numel
            received[k] += from_owner * numel
    return sent, received


def gb(n: float, digits: int = 2) -> str:
    return f"{n / 1e9:.{digits}f}"


def matrix_label(name: str, model: nn.Module) -> str:
    """``q_proj 4096x4096``: a matrix by its module (not its layer) and shape."""
    shape = model.get_parameter(name).shape
    return f"{name.removesuffix('.weight').rpartition('.')[2]} {shape[0]}x{shape[1]}"


def scale_table() -> str:
    """Per (model, optimizer): state per rank (the busiest rank) at each of :data:`WORLD_SIZES` ranks, how far
    the busiest rank is above an even share at the largest, and the largest matrix's state (one owner holds it
    whole)."""
    sizes = " | ".join(f"{world} ranks" for world in WORLD_SIZES)
    lines = [f"| model | optimizer | total state | per rank at {sizes} | busiest / even at {WORLD_SIZES[-1]} | "
             f"largest matrix: its state on one owner |",
             "|---|---|---|" + "---|" * len(WORLD_SIZES) + "---|---|"]
    for name in MODELS:
        model = meta_model(name)
        for optimizer in OPTIMIZERS:
            states = [state_bytes_per_rank(model, optimizer, world) for world in WORLD_SIZES]
            total = states[0]["total"]
            busiest = " | ".join(gb(max(s["sharded"])) for s in states)
            ratio = max(states[-1]["sharded"]) / (total / WORLD_SIZES[-1])
            largest = states[0]["largest"]
            matrix = f"{matrix_label(largest[0], model)}: {gb(largest[1])}" if largest else "- (shards only)"
            lines.append(f"| {name} | {optimizer} | {gb(total)} | {busiest} | {ratio:.2f} | {matrix} |")
    return "\n".join(lines)


def short_table() -> str:
    """:func:`scale_table`'s busiest rank at the smallest and largest world size, one row per model, to 0.1 GB."""
    few, many = WORLD_SIZES[0], WORLD_SIZES[-1]
    lines = [f"| model: GB per rank at {few} → {many} ranks | " + " | ".join(OPTIMIZERS) + " |",
             "|---|" + "---|" * len(OPTIMIZERS)]
    for name in MODELS:
        model = meta_model(name)
        cells = []
        for optimizer in OPTIMIZERS:
            a, b = (max(state_bytes_per_rank(model, optimizer, world)["sharded"]) for world in (few, many))
            cells.append(f"{gb(a, 1)} → {gb(b, 1)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_tables(world: int) -> str:
    """State per rank against the unsharded layout, and the exchange's traffic per step, at ``world`` ranks."""
    lines = [f"world size {world}; GB = 1e9 bytes; fp32 state", "",
             "| model | optimizer | total state (of it, matrix state) | per rank, unsharded | "
             "per rank, sharded (max / min) | max / (total/N) | matrix state max / (matrix total/N) |",
             "|---|---|---|---|---|---|---|"]
    traffic = []
    for name in MODELS:
        model = meta_model(name)
        for optimizer in OPTIMIZERS:
            s = state_bytes_per_rank(model, optimizer, world)
            even = s["total"] / world
            matrix_ratio = (f"{max(s['matrix_rank']) / (s['matrix_total'] / world):.3f}"
                            if s["matrix_total"] else "-")
            lines.append(f"| {name} | {optimizer} | {gb(s['total'])} ({gb(s['matrix_total'])}) | "
                         f"{gb(max(s['unsharded']))} | "
                         f"{gb(max(s['sharded']))} / {gb(min(s['sharded']))} | {max(s['sharded']) / even:.3f} | "
                         f"{matrix_ratio} |")
            if s["matrices"]:
                sent, received = exchange_bytes_per_rank(optimizer, s["matrices"], s["owners"], s["layout"])
                weights = sum(p.numel() for p in s["matrices"]) * FP32
                traffic.append((name, optimizer, weights, sent, received))

    lines += ["", "Exchange traffic per optimizer step, against gathering every full W and G on every rank "
              "(all-gather, what an unsharded optimizer on FSDP2 needs; a ring all-gather sends and receives "
              "(N-1)/N of the data on every rank):", "",
              "| model | optimizer | matrix weights | sharded exchange: sent + received, busiest rank | "
              "sharded exchange: total sent | all-gather of W and G: sent + received per rank |",
              "|---|---|---|---|---|---|"]
    for name, optimizer, weights, sent, received in traffic:
        per_rank = max(s + r for s, r in zip(sent, received))
        all_gather = 2 * (2 * weights) * (world - 1) / world
        lines.append(f"| {name} | {optimizer} | {gb(weights)} | {gb(per_rank)} | {gb(sum(sent))} | "
                     f"{gb(all_gather)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=8, help="the world size of the detailed tables")
    world = parser.parse_args().world_size
    print("Optimizer state per rank (busiest rank), GB = 1e9 bytes, fp32, FSDP2 over every rank:\n")
    print(scale_table())
    print("\nShort form:\n")
    print(short_table())
    print()
    print(detail_tables(world))


if __name__ == "__main__":
    main()
