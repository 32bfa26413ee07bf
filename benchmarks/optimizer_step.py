"""Step time and state size of AdamW, Muon and Pion on the weights of one Qwen3-1.7B decoder layer.

All optimizers run in one process on the same weights and gradients (fp32, CPU), so the ratios are
measured under the same machine load. With ``--rounds R`` every optimizer is built first and the timed steps
take turns, round by round, so a shared machine's changing load falls on all of them alike; each round's
ratio to Muon is then taken within the round. Usage:

    .venv/bin/python benchmarks/optimizer_step.py [--steps 2] [--rounds 1] [--scale 1.0] [--only NAME ...] [--by-matrix]

``--by-matrix`` times each weight matrix of the layer alone (one optimizer per matrix), to see where the
time goes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gpu_step import torch_muon  # this script's directory is on sys.path
from pion_rl.optim import Muon, Pion, param_groups

HIDDEN, INTERMEDIATE, HEAD_DIM, Q_HEADS, KV_HEADS = 2048, 6144, 128, 16, 8


def layer_shapes(scale: float) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of one Qwen3 decoder layer (``scale`` < 1 shrinks hidden sizes for a quick look)."""
    h, i = int(HIDDEN * scale), int(INTERMEDIATE * scale)
    q, kv = (max(1, round(heads * scale)) * HEAD_DIM for heads in (Q_HEADS, KV_HEADS))
    return {
        "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h), "self_attn.v_proj.weight": (kv, h),
        "self_attn.o_proj.weight": (h, q), "self_attn.q_norm.weight": (HEAD_DIM,), "self_attn.k_norm.weight": (HEAD_DIM,),
        "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h), "mlp.down_proj.weight": (h, i),
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
    }


OPTIMIZERS = {
    "adamw_torch": lambda named: torch.optim.AdamW([p for _, p in named], lr=1e-3, weight_decay=0.01),
    "muon_bf16ns": lambda named: Muon(named, lr=1e-3),
    "muon_fp32ns": lambda named: Muon(named, lr=1e-3, ns_dtype="float32"),
    "muon_torch": torch_muon,  # torch.optim.Muon (bf16 Newton-Schulz) + AdamW for the norms
}
for _variant in ("lie_lie", "transported_ambient_ambient", "msign"):
    for _side in ("alternate", "both"):
        for _map in ("taylor", "cayley"):
            if _variant != "lie_lie" and _map == "cayley":
                continue  # the map costs the same for every variant; measure it once
            OPTIMIZERS[f"pion_{_variant}_{_side}_{_map}"] = (
                lambda named, v=_variant, s=_side, m=_map: Pion(named, lr=1e-3, variant=v, update_side=s,
                                                                exp_map=m, head_dim=HEAD_DIM))
for _variant, _side, _map in (("lie_lie", "alternate", "taylor"), ("lie_lie", "alternate", "cayley"),
                              ("lie_lie", "both", "taylor"), ("msign", "alternate", "taylor")):
    OPTIMIZERS[f"pion_{_variant}_{_side}_{_map}_bf16"] = (
        lambda named, v=_variant, s=_side, m=_map: Pion(named, lr=1e-3, variant=v, update_side=s, exp_map=m,
                                                        head_dim=HEAD_DIM, precision="bf16"))


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if isinstance(t, torch.Tensor) and t.ndim > 0)


def layer_parameters(shapes: dict) -> list[tuple[str, torch.nn.Parameter]]:
    """Named parameters of the given shapes with fixed gradients, the same on every call (seed 0)."""
    gen = torch.Generator().manual_seed(0)
    named = [(n, torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02)) for n, s in shapes.items()]
    for _, p in named:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return named


def build(name: str, shapes: dict) -> torch.optim.Optimizer:
    opt = OPTIMIZERS[name](layer_parameters(shapes))
    opt.step()  # allocates state; alternate: this was a right-side step, the timed ones cover both sides
    return opt


def timed(opt: torch.optim.Optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def by_matrix(shapes: dict, names: list[str], steps: int) -> None:
    """Step time of each optimizer on each matrix of the layer alone, and its ratio to Muon's."""
    print("\n| matrix | shape | " + " | ".join(names) + " | " + " | ".join(f"{n} / muon_bf16ns" for n in names[3:]) + " |")
    print("|---|---|" + "---|" * (2 * len(names) - 3))
    for param, shape in shapes.items():
        if len(shape) != 2:
            continue
        times = {name: timed(build(name, {param: shape}), steps) for name in names}
        print(f"| {param} | {shape[0]} x {shape[1]} | " + " | ".join(f"{t:.3f}" for t in times.values()) + " | "
              + " | ".join(f"{times[n] / times['muon_bf16ns']:.2f}" for n in names[3:]) + " |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per optimizer (even: both sides of alternate)")
    parser.add_argument("--rounds", type=int, default=1, help="build all, then take turns for this many rounds")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink hidden sizes (quick look)")
    parser.add_argument("--only", nargs="*", default=None, help="optimizer names to run (always with the baselines)")
    parser.add_argument("--by-matrix", action="store_true", help="time each matrix alone")
    args = parser.parse_args(argv)
    shapes = layer_shapes(args.scale)
    names = list(OPTIMIZERS) if not args.only else ["adamw_torch", "muon_bf16ns", "muon_fp32ns", *args.only]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, one Qwen3-1.7B layer x{args.scale}, "
          f"{args.steps} timed steps each, fp32 params")
    matrices = param_groups([(n, torch.empty(s, device="meta", requires_grad=True)) for n, s in shapes.items()], "pion",
                            head_dim=HEAD_DIM)
    print(f"{sum(len(g['params']) for g in matrices if g['algorithm'] == 'pion')} matrices to the matrix optimizer")
    if args.by_matrix:
        by_matrix(shapes, names, args.steps)
        return
    if args.rounds == 1:  # one optimizer alive at a time
        results = {}
        for name in names:
            opt = build(name, shapes)
            results[name] = ([timed(opt, args.steps)], state_bytes(opt))
            print(f"  measured {name}: {results[name][0][0]:.3f} s", flush=True)
            del opt
    else:
        optimizers = {name: build(name, shapes) for name in names}
        results = {name: ([], state_bytes(opt)) for name, opt in optimizers.items()}
        for r in range(args.rounds):
            for name, opt in optimizers.items():
                results[name][0].append(timed(opt, args.steps))
            print(f"  round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f}" for n, (t, _) in results.items()), flush=True)
    median = {name: statistics.median(times) for name, (times, _) in results.items()}
    adamw, muon, muon32 = median["adamw_torch"], median["muon_bf16ns"], median["muon_fp32ns"]
    muon_rounds = results["muon_bf16ns"][0]
    print("\n| optimizer | s/step (median) | min-max | x AdamW | x Muon (bf16 NS) | per round, min-max | x Muon (fp32 NS) "
          "| state MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (times, nbytes) in results.items():
        per_round = [t / m for t, m in zip(times, muon_rounds)]
        print(f"| {name} | {median[name]:.3f} | {min(times):.2f}-{max(times):.2f} | {median[name] / adamw:.1f} | "
              f"{median[name] / muon:.2f} | {min(per_round):.2f}-{max(per_round):.2f} | {median[name] / muon32:.2f} | "
              f"{nbytes / 2**20:.0f} |")


if __name__ == "__main__":
    main()
