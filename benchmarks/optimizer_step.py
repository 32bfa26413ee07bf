"""Step time and state size of AdamW, Muon and Pion on the weights of one Qwen3-1.7B decoder layer.

All optimizers run in one process on the same weights and gradients (fp32, CPU), so the ratios are
measured under the same machine load. Usage:

    .venv/bin/python benchmarks/optimizer_step.py [--steps 2] [--scale 1.0] [--only pion_lie_lie_alternate_taylor]
"""

from __future__ import annotations

import argparse
import time

import torch

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


def measure(name: str, shapes: dict, steps: int) -> tuple[float, int]:
    gen = torch.Generator().manual_seed(0)
    named = [(n, torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02)) for n, s in shapes.items()]
    for _, p in named:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = OPTIMIZERS[name](named)
    opt.step()  # allocates state; alternate: this was a right-side step, the timed ones cover both sides
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps, state_bytes(opt)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per optimizer (even: both sides of alternate)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink hidden sizes (quick look)")
    parser.add_argument("--only", nargs="*", default=None, help="optimizer names to run (always with the baselines)")
    args = parser.parse_args(argv)
    shapes = layer_shapes(args.scale)
    names = list(OPTIMIZERS) if not args.only else ["adamw_torch", "muon_bf16ns", "muon_fp32ns", *args.only]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, one Qwen3-1.7B layer x{args.scale}, "
          f"{args.steps} timed steps each, fp32 params")
    matrices = param_groups([(n, torch.empty(s, device="meta", requires_grad=True)) for n, s in shapes.items()], "pion")
    print(f"{sum(len(g['params']) for g in matrices if g['algorithm'] == 'pion')} matrices to the matrix optimizer")
    results = {}
    for name in names:
        results[name] = measure(name, shapes, args.steps)
        print(f"  measured {name}: {results[name][0]:.3f} s", flush=True)
    adamw, muon = results["adamw_torch"][0], results["muon_bf16ns"][0]
    muon32 = results["muon_fp32ns"][0]
    print("\n| optimizer | s/step | x AdamW | x Muon (bf16 NS) | x Muon (fp32 NS) | state MiB |")
    print("|---|---|---|---|---|---|")
    for name, (sec, nbytes) in results.items():
        print(f"| {name} | {sec:.3f} | {sec / adamw:.1f} | {sec / muon:.2f} | {sec / muon32:.2f} | {nbytes / 2**20:.0f} |")


if __name__ == "__main__":
    main()
