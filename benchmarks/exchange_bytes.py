"""Bytes each optimizer's step moves between ranks, counted at the collectives, on FSDP2 (gloo, CPU).

One Qwen3 decoder layer (``--scale`` of Qwen3-1.7B's hidden sizes, heads of 128) is sharded with
``fully_shard`` over ``--world-size`` gloo ranks; every rank gets the same fixed gradients; each optimizer
takes ``--steps`` steps while :func:`count_sent_bytes` wraps ``torch.distributed``'s collectives. Bytes are
what each rank hands to a collective for other ranks (an all-to-all's splits to other ranks, an all-reduce's
whole tensor), summed over ranks and divided by the steps. Run:

    .venv/bin/python benchmarks/exchange_bytes.py [--world-size 2] [--scale 0.125] [--steps 2]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import tempfile
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: The collectives counted, and how many bytes of each call's arguments leave this rank for others.
_WIRE_BYTES = {
    "all_to_all_single": lambda output, input, output_split_sizes=None, input_split_sizes=None, *a, **k: (
        _other_ranks_share(input, input_split_sizes, k.get("group"))),
    "all_reduce": lambda tensor, *a, **k: tensor.numel() * tensor.element_size(),
    "broadcast": lambda tensor, *a, **k: tensor.numel() * tensor.element_size(),
    "all_gather_into_tensor": lambda output, input, *a, **k: input.numel() * input.element_size(),
    "reduce_scatter_tensor": lambda output, input, *a, **k: input.numel() * input.element_size(),
}


def _other_ranks_share(input: torch.Tensor, splits, group) -> int:
    """Bytes of an ``all_to_all_single`` input that go to ranks other than this one."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    rows = list(splits) if splits else [input.shape[0] // world] * world
    row_bytes = (input[0].numel() if input.ndim > 1 else 1) * input.element_size()
    return (sum(rows) - rows[rank]) * row_bytes


@contextlib.contextmanager
def count_sent_bytes() -> Iterator[collections.Counter]:
    """Within the block, count per collective name the bytes this rank sends (see :data:`_WIRE_BYTES`);
    the counter is yielded and fills as collectives run."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(dist, name) for name in _WIRE_BYTES}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            counts[name] += _WIRE_BYTES[name](*args, **kwargs)
            return original(*args, **kwargs)
        return wrapper

    for name, original in originals.items():
        setattr(dist, name, counting(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def _layer(scale: float):
    from transformers import Qwen3Config
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    hidden, intermediate = int(2048 * scale), int(6144 * scale)
    config = Qwen3Config(hidden_size=hidden, intermediate_size=intermediate, head_dim=128,
                         num_attention_heads=max(1, round(16 * scale)), num_key_value_heads=max(1, round(8 * scale)))
    return Qwen3DecoderLayer(config, layer_idx=0)


def _measure(rank: int, world: int, store: str, scale: float, steps: int, results) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    from pion_rl.optim import Muon, Pion

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    optimizers = {
        "adamw": lambda named: torch.optim.AdamW([p for _, p in named], lr=1e-3),
        "muon": lambda named: Muon(named, lr=1e-3),  # configs/optimizer/muon.yaml's settings
        "pion": lambda named: Pion(named, lr=1e-3, update_side="alternate", head_dim=128),  # pion.yaml's
    }
    out = {}
    for name, make in optimizers.items():
        torch.manual_seed(0)
        layer = _layer(scale)
        fully_shard(layer, mesh=mesh)
        optimizer = make(list(layer.named_parameters()))
        generator = torch.Generator().manual_seed(1)
        for p in layer.parameters():
            p.grad = distribute_tensor(torch.randn(p.shape, generator=generator) * 1e-3, mesh, p.placements)
        with count_sent_bytes() as counts:
            for _ in range(steps):
                optimizer.step()
        out[name] = {k: v / steps for k, v in counts.items()}
    out["matrix_bytes_fp32"] = sum(p.numel() * 4 for n, p in layer.named_parameters() if p.ndim == 2)
    results.put((rank, out))
    dist.destroy_process_group()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--scale", type=float, default=0.125)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=_measure, args=(rank, args.world_size, store, args.scale, args.steps, results))
                 for rank in range(args.world_size)]
        for proc in procs:
            proc.start()
        per_rank = dict(results.get(timeout=600) for _ in procs)
        for proc in procs:
            proc.join()
    matrix_bytes = per_rank[0]["matrix_bytes_fp32"]
    print(f"FSDP2, gloo, world size {args.world_size}, one Qwen3 layer at scale {args.scale} "
          f"({matrix_bytes / 2**20:.1f} MiB of fp32 matrices); bytes sent per step, summed over ranks\n")
    print("| optimizer | all_to_all_single | all_reduce | total | x Pion |")
    print("|---|---|---|---|---|")
    totals = {name: sum(sum(per_rank[r][name].values()) for r in per_rank) for name in ("adamw", "muon", "pion")}
    for name in ("adamw", "muon", "pion"):
        by_kind = collections.Counter()
        for r in per_rank:
            by_kind.update(per_rank[r][name])
        print(f"| {name} | {by_kind['all_to_all_single']:,.0f} | {by_kind['all_reduce']:,.0f} | {totals[name]:,.0f} | "
              f"{totals[name] / totals['pion']:.3f} |")


if __name__ == "__main__":
    main()
