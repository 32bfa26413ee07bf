"""Optimizer state per rank, and exchange traffic per step, for AdamW / Muon / Pion on FSDP2 at world size 8.

Shapes only: the models are built on the meta device from their published configs (no weights, no hub).
Matrix owners come from the code the optimizers really run (``Pion``/``Muon.matrix_state_numel`` and
``pion_rl.optim.sharding.assign_owners``); row ranges from ``RowLayout`` (FSDP2's ``Shard(0)`` chunking).
All state is fp32 (verl's FSDP2 actor keeps fp32 master weights). Run:

    .venv/bin/python benchmarks/sharded_state.py [--world-size 8]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from pion_rl.optim import Muon, Pion
from pion_rl.optim.sharding import RowLayout, assign_owners

HEAD_DIM = 128
FP32 = 4
#: The published configs' sizes (Qwen/Qwen3-1.7B, deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B).
MODELS = {
    "Qwen3-1.7B": (Qwen3ForCausalLM, Qwen3Config(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=HEAD_DIM, tie_word_embeddings=True)),
    "DeepSeek-R1-Distill-Qwen-1.5B": (Qwen2ForCausalLM, Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=False)),
}


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
    """Sharded and unsharded (every rank holds all matrix state, as the public Pion release did) state bytes."""
    layout = RowLayout(shard=tuple(range(world)), replica=(0,) * world, num_shards=world)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
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
    return dict(
        matrices=matrices, owners=owners, layout=layout, matrix_total=matrix_total,
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


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=8)
    world = parser.parse_args().world_size
    print(f"world size {world}; GB = 1e9 bytes; fp32 state\n")
    print("| model | optimizer | total state (of it, matrix state) | per rank, unsharded | per rank, sharded (max / min) | "
          "max / (total/N) | matrix state max / (matrix total/N) |")
    print("|---|---|---|---|---|---|---|")
    traffic = []
    for name in MODELS:
        model = meta_model(name)
        for optimizer in ("adamw", "muon", "pion"):
            s = state_bytes_per_rank(model, optimizer, world)
            even = s["total"] / world
            matrix_ratio = (f"{max(s['matrix_rank']) / (s['matrix_total'] / world):.3f}"
                            if s["matrix_total"] else "-")
            print(f"| {name} | {optimizer} | {gb(s['total'])} ({gb(s['matrix_total'])}) | "
                  f"{gb(max(s['unsharded']))} | "
                  f"{gb(max(s['sharded']))} / {gb(min(s['sharded']))} | {max(s['sharded']) / even:.3f} | "
                  f"{matrix_ratio} |")
            if s["matrices"]:
                sent, received = exchange_bytes_per_rank(optimizer, s["matrices"], s["owners"], s["layout"])
                weights = sum(p.numel() for p in s["matrices"]) * FP32
                traffic.append((name, optimizer, weights, sent, received, world))

    print("\nExchange traffic per optimizer step, against gathering every full W and G on "
          "every rank (all-gather, what an unsharded optimizer on FSDP2 needs; a ring all-gather sends and "
          "receives (N-1)/N of the data on every rank):\n")
    print("| model | optimizer | matrix weights | sharded exchange: sent + received, busiest rank | "
          "sharded exchange: total sent | all-gather of W and G: sent + received per rank |")
    print("|---|---|---|---|---|---|")
    for name, optimizer, weights, sent, received, world in traffic:
        per_rank = max(s + r for s, r in zip(sent, received))
        all_gather = 2 * (2 * weights) * (world - 1) / world
        print(f"| {name} | {optimizer} | {gb(weights)} | {gb(per_rank)} | {gb(sum(sent))} | {gb(all_gather)} |")


if __name__ == "__main__":
    main()
