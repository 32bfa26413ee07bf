"""One optimizer step on every parameter of a Qwen3-1.7B-shaped model: speed, state and spectrum fidelity.

    python benchmarks/gpu_step.py                  # CUDA: the whole model (1.72 B fp32 params), ~5 min
    python benchmarks/gpu_step.py --tiny           # the same code at toy sizes on CPU (the test suite runs it)
    python benchmarks/gpu_step.py --json out.json --only pion_recipe_bf16 muon_dion

Needs torch and a copy of ``pion_rl/`` next to ``benchmarks/`` (no verl, Hydra or omegaconf); microsoft/dion's
Muon is measured when ``import dion`` works. Three tables, as markdown:
- speed: mean s/step of ``--steps`` steps after ``--warmup`` untimed ones (fixed random gradients, fp32 master
  weights, ``head_dim`` 128), and optimizer state in GB (1e9 bytes);
- fidelity: largest relative change of any singular value of layer 0's q_proj (per head), gate_proj and
  down_proj after 20 alternate Pion steps at lr 1e-3 (random gradients), and how far each path's final
  weights are from the fp32 path's, relative to how far fp32 moved them;
- stats: what ``pion_step`` returns (per-block step size and generator norm) for the recipe, fp32 and bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare copy of the repository
from pion_rl.optim import Muon, Pion, param_groups  # noqa: E402
from pion_rl.optim.lie import skew  # noqa: E402
from pion_rl.optim.pion_math import PionSettings, pion_step, state_shapes  # noqa: E402
from pion_rl.optim.precision import steering_product, times_generator  # noqa: E402


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int


QWEN3_1_7B = ModelShape(hidden=2048, intermediate=6144, layers=28, q_heads=16, kv_heads=8, head_dim=128, vocab=151936)
TINY = ModelShape(hidden=128, intermediate=384, layers=1, q_heads=2, kv_heads=1, head_dim=64, vocab=256)

#: The RL recipe's Pion (configs/optimizer/pion.yaml), at both precisions.
RECIPE = dict(variant="lie_lie", update_side="alternate", exp_map="taylor", degree=2, betas=(0.9, 0.999))


def parameter_shapes(m: ModelShape) -> dict[str, tuple[int, ...]]:
    """Every parameter of a Qwen3 decoder-only model (tied embeddings, as Qwen3-1.7B)."""
    shapes = {"model.embed_tokens.weight": (m.vocab, m.hidden), "model.norm.weight": (m.hidden,)}
    q, kv = m.q_heads * m.head_dim, m.kv_heads * m.head_dim
    for i in range(m.layers):
        pre = f"model.layers.{i}."
        shapes.update({
            pre + "self_attn.q_proj.weight": (q, m.hidden), pre + "self_attn.k_proj.weight": (kv, m.hidden),
            pre + "self_attn.v_proj.weight": (kv, m.hidden), pre + "self_attn.o_proj.weight": (m.hidden, q),
            pre + "self_attn.q_norm.weight": (m.head_dim,), pre + "self_attn.k_norm.weight": (m.head_dim,),
            pre + "mlp.gate_proj.weight": (m.intermediate, m.hidden), pre + "mlp.up_proj.weight": (m.intermediate, m.hidden),
            pre + "mlp.down_proj.weight": (m.hidden, m.intermediate),
            pre + "input_layernorm.weight": (m.hidden,), pre + "post_attention_layernorm.weight": (m.hidden,),
        })
    return shapes


def _dion_muon(named, head_dim):
    from dion import Muon as DionMuon  # optional: microsoft/dion

    groups = param_groups(named, "muon")
    return DionMuon([{"params": g["params"], "algorithm": "muon" if g["algorithm"] == "muon" else "adamw",
                      **({"weight_decay": 0.01} if g["algorithm"] == "muon" else {})} for g in groups],
                    lr=1e-3, mu=0.95, nesterov=True, adjust_lr="rms_norm", use_triton=True, weight_decay=0.01)


def torch_muon(named, head_dim=None, fused=False):
    """torch.optim.Muon on the matrices (pion_rl.optim.param_groups routing) chained with AdamW on the rest."""
    groups = param_groups(named, "muon")
    muon = torch.optim.Muon([p for g in groups if g["algorithm"] == "muon" for p in g["params"]], lr=1e-3,
                            weight_decay=0.01, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([p for g in groups if g["algorithm"] == "adamw" for p in g["params"]], lr=1e-3,
                              weight_decay=0.01, fused=fused)
    return _Chained(muon, adamw)


class _Chained:
    """Two torch optimizers stepped together (torch.optim.Muon takes only 2-D matrices)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        self.state = {p: s for o in optimizers for p, s in o.state.items()}

    def step(self):
        for o in self.optimizers:
            o.step()
        self.state = {p: s for o in self.optimizers for p, s in o.state.items()}


def optimizers(cuda: bool) -> dict:
    """name -> builder(named_params, head_dim); the issue's table, in its order."""
    table = {
        "adamw_foreach": lambda named, hd: torch.optim.AdamW([p for _, p in named], lr=1e-3, weight_decay=0.01, foreach=True),
        "adamw_fused": lambda named, hd: torch.optim.AdamW([p for _, p in named], lr=1e-3, weight_decay=0.01, fused=True),
        "muon_dion": _dion_muon,
        "muon_torch": lambda named, hd: torch_muon(named, hd, fused=cuda),
        "muon_bf16ns": lambda named, hd: Muon(named, lr=1e-3),
        "muon_fp32ns": lambda named, hd: Muon(named, lr=1e-3, ns_dtype="float32"),
    }
    for precision in ("fp32", "bf16"):
        table[f"pion_recipe_{precision}"] = (
            lambda named, hd, pr=precision: Pion(named, lr=1e-3, precision=pr, head_dim=hd, **RECIPE))
    for name, change in (("both", dict(update_side="both")), ("cayley", dict(exp_map="cayley")),
                         ("msign", dict(variant="msign", betas=None))):
        for precision in ("fp32", "bf16"):
            table[f"pion_{name}_{precision}"] = (
                lambda named, hd, pr=precision, ch=change: Pion(named, lr=1e-3, precision=pr, head_dim=hd,
                                                                **{**RECIPE, **ch}))
    return table


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def state_bytes(opt) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if isinstance(t, torch.Tensor) and t.ndim > 0)


def measure_speed(name, build, shapes, head_dim, device, steps, warmup) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    named = [(n, torch.nn.Parameter(torch.randn(s, generator=gen, device=device) * 0.02)) for n, s in shapes.items()]
    for _, p in named:
        p.grad = torch.randn(p.shape, generator=gen, device=device) * 1e-3
    opt = build(named, head_dim)
    for _ in range(warmup):
        opt.step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    _sync(device)
    result = {"s_per_step": (time.perf_counter() - start) / steps, "state_gb": state_bytes(opt) / 1e9}
    del opt, named
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------- fidelity
FIDELITY_PATHS = {  # name -> (Pion options on top of RECIPE, TF32 matmuls allowed)
    "fp32": (dict(precision="fp32"), False),
    "tf32": (dict(precision="fp32"), True),
    "bf16": (dict(precision="bf16"), False),
    "cayley_fp32": (dict(precision="fp32", exp_map="cayley"), False),
    "cayley_bf16": (dict(precision="bf16", exp_map="cayley"), False),
}


@contextlib.contextmanager
def _tf32(allowed: bool):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _svdvals_per_block(w: torch.Tensor, block: int | None) -> torch.Tensor:
    w = w.double()
    return torch.linalg.svdvals(w.view(-1, block, w.shape[1]) if block else w)


def fidelity(m: ModelShape, device, steps: int = 20, lr: float = 1e-3, paths=None) -> dict:
    """Run every path of :data:`FIDELITY_PATHS` on the same three layer-0 matrices and gradients.

    Returns ``{path: {matrix: max relative singular-value change, "update_vs_fp32": ||W - W_fp32|| /
    ||W_fp32 - W0|| over the three matrices, "moved": ||W_fp32 - W0|| / ||W0||}}``.
    """
    shapes = {"q_proj": ((m.q_heads * m.head_dim, m.hidden), m.head_dim),
              "gate_proj": ((m.intermediate, m.hidden), None), "down_proj": ((m.hidden, m.intermediate), None)}
    gen = torch.Generator(device=device).manual_seed(1)
    w0 = {k: torch.randn(s, generator=gen, device=device) * 0.02 for k, (s, _) in shapes.items()}
    grads = [{k: torch.randn(s, generator=gen, device=device) * 1e-3 for k, (s, _) in shapes.items()}
             for _ in range(steps)]
    finals = {}
    for path, (options, tf32) in FIDELITY_PATHS.items():
        if (paths and path not in paths) or (tf32 and device.type != "cuda"):
            continue
        finals[path] = {}
        for k, (_, block) in shapes.items():
            p = torch.nn.Parameter(w0[k].clone())
            opt = Pion([p], lr=lr, row_block=block, **{**RECIPE, **options})
            with _tf32(tf32):
                for g in grads:
                    p.grad = g[k]
                    opt.step()
            finals[path][k] = p.detach().clone()
            del opt
    s0 = {k: _svdvals_per_block(w0[k], block) for k, (_, block) in shapes.items()}
    flat = lambda ws: torch.cat([ws[k].double().flatten().cpu() for k in shapes])  # noqa: E731
    ref, start = flat(finals["fp32"]), flat(w0)
    out = {}
    for path, ws in finals.items():
        row = {k: (_svdvals_per_block(ws[k], block) / s0[k] - 1).abs().max().item() for k, (_, block) in shapes.items()}
        row["update_vs_fp32"] = ((flat(ws) - ref).norm() / (ref - start).norm()).item()
        row["moved"] = ((ref - start).norm() / start.norm()).item()
        out[path] = row
    return out


def step_stats(m: ModelShape, device) -> dict:
    """What ``pion_step`` returns for layer 0's q_proj (per head) on its first two recipe steps."""
    gen = torch.Generator(device=device).manual_seed(2)
    rows, cols, blocks = m.head_dim, m.hidden, m.q_heads
    w0 = torch.randn(blocks, rows, cols, generator=gen, device=device) * 0.02
    grads = [torch.randn(blocks, rows, cols, generator=gen, device=device) * 1e-3 for _ in range(2)]
    out = {}
    for precision in ("fp32", "bf16"):
        settings = PionSettings(precision=precision, **RECIPE)
        w = w0.clone()
        state = {k: torch.zeros(s, device=device) for k, s in state_shapes(settings, blocks, rows, cols).items()}
        for step, g in enumerate(grads, start=1):
            stats = pion_step(w, g, state, step, settings, lr=1e-3)
            out[f"{precision}_step{step}"] = {k: v.tolist() for k, v in stats.items()}
    return out


def kernel_check(device) -> dict:
    """The bf16 path's products on ``device`` against float64 products of the same rounded inputs (transposed
    operands included, as the left side uses them): relative Frobenius errors, fp32-accumulation sized (~1e-7)
    where the output is fp32, bf16 sized (~4e-3) where it is bf16 (CPU generator products)."""
    gen = torch.Generator(device=device).manual_seed(3)
    w = torch.randn(4, 128, 512, generator=gen, device=device)
    a = skew(torch.randn(4, 512, 512, generator=gen, device=device), torch.bfloat16)
    rel = lambda got, want: ((got.double() - want).norm() / want.norm()).item()  # noqa: E731
    wb = w.to(torch.bfloat16).double()
    return {
        "times_generator": rel(times_generator(w, a), w.double() @ a.double()),
        "times_generator_left": rel(times_generator(w, a[:, :128, :128], left=True), a[:, :128, :128].double() @ w.double()),
        "steering_product_transposed": rel(steering_product(w.mT, w, "bf16"), wb.mT @ wb),
    }


def fused_ema_probe(m: ModelShape, device, repeats: int = 5) -> dict:
    """A candidate for CUDA's momentum update, measured, not used: one bf16 x bf16 GEMM accumulating into the fp32
    buffer (``baddbmm`` with ``out_dtype`` and ``beta``, ``out`` the buffer itself) against today's product
    blended by ``lerp_``. For two buffers (per-head q in-side, contraction ``head_dim``; gate_proj out-side,
    contraction ``hidden``): whether each runs (else why not), its relative error against float64 of the same
    bf16 inputs, and its time (s). The CPU has no such kernel: there the fused row reports the failure."""
    out = {}
    buffers = {"q_in": (m.q_heads, m.hidden, m.head_dim), "gate_out": (1, m.intermediate, m.hidden)}
    for label, (b, n, k) in buffers.items():
        gen = torch.Generator(device=device).manual_seed(5)
        a = torch.randn(b, n, k, generator=gen, device=device).to(torch.bfloat16)
        c = torch.randn(b, k, n, generator=gen, device=device).to(torch.bfloat16)
        buf0 = torch.randn(b, n, n, generator=gen, device=device)
        want = 0.9 * buf0.double() + 0.1 * (a.double() @ c.double())

        def unfused(buf):
            buf.lerp_(steering_product(a, c, "bf16").float(), 0.1)

        def fused(buf):
            torch.ops.aten.baddbmm.dtype_out(buf, a, c, torch.float32, beta=0.9, alpha=0.1, out=buf)

        row = {}
        for name, update in (("unfused", unfused), ("fused", fused)):
            buf = buf0.clone()
            try:
                update(buf)
            except (RuntimeError, NotImplementedError, AttributeError) as e:
                row[name] = f"fails: {type(e).__name__}: {str(e)[:120]}"
                continue
            row[f"{name}_error"] = ((buf.double() - want).norm() / want.norm()).item()
            _sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                update(buf)
            _sync(device)
            row[f"{name}_s"] = (time.perf_counter() - start) / repeats
        out[label] = row
    return out


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (a quick check of this script)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (even: both sides of alternate)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (state allocation, compiles)")
    parser.add_argument("--only", nargs="*", default=None, help="optimizer names to time (default: all)")
    parser.add_argument("--skip-speed", action="store_true", help="only the fidelity and stats tables")
    parser.add_argument("--json", type=Path, default=None, help="also write every number to this file")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        # The full model's weights, gradients and state need tens of GB: on a CPU it is killed for memory.
        print("gpu_step.py: error: no CUDA device here, and the full Qwen3-1.7B run needs one; "
              "use --tiny for the same code at toy sizes on CPU", file=sys.stderr)
        raise SystemExit(2)

    device = torch.device("cpu" if args.tiny else "cuda")
    shape = TINY if args.tiny else QWEN3_1_7B
    shapes = parameter_shapes(shape)
    described = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {described}, {sum(torch.Size(s).numel() for s in shapes.values()) / 1e9:.3f} B "
          f"params ({'tiny' if args.tiny else 'Qwen3-1.7B'}), fp32 master weights, {args.steps} timed steps after "
          f"{args.warmup}", flush=True)
    report = {"device": described, "torch": torch.__version__, "tiny": args.tiny, "speed": {}, "skipped": {}}
    report["kernels"] = kernel_check(device)
    print("bf16-path products, relative error against float64 of the same rounded inputs: "
          + ", ".join(f"{k} {v:.1e}" for k, v in report["kernels"].items()), flush=True)
    report["fused_ema"] = fused_ema_probe(shape, device)
    print("momentum update, a bf16 GEMM fused into the fp32 buffer against product + lerp (error vs float64, s):")
    for buffer, row in report["fused_ema"].items():
        print(f"  {buffer}: " + "; ".join(
            f"{way} {row[f'{way}_error']:.1e}, {row[f'{way}_s']:.4f} s" if f"{way}_error" in row else f"{way} {row[way]}"
            for way in ("unfused", "fused")), flush=True)

    if not args.skip_speed:
        table = optimizers(device.type == "cuda")
        for name in args.only or table:
            if name == "adamw_fused" and device.type != "cuda":
                report["skipped"][name] = "fused AdamW needs CUDA"
                continue
            try:
                report["speed"][name] = measure_speed(name, table[name], shapes, shape.head_dim, device,
                                                      args.steps, args.warmup)
            except ImportError as e:  # dion not installed
                report["skipped"][name] = f"not importable: {e}"
                continue
            r = report["speed"][name]
            print(f"  {name}: {r['s_per_step']:.3f} s/step, state {r['state_gb']:.2f} GB", flush=True)
        speed = report["speed"]
        muon = speed.get("muon_dion", speed.get("muon_bf16ns", {})).get("s_per_step")
        print(f"\n| optimizer | s/step | x {'dion' if 'muon_dion' in speed else 'pion-rl bf16'} Muon | state GB |")
        print("|---|---|---|---|")
        for name, r in speed.items():
            ratio = f"{r['s_per_step'] / muon:.2f}" if muon else "-"
            print(f"| {name} | {r['s_per_step']:.3f} | {ratio} | {r['state_gb']:.2f} |")
        for name, why in report["skipped"].items():
            print(f"| {name} | skipped: {why} | | |")

    report["fidelity"] = fidelity(shape, device)
    print("\n| path | q_proj (per head) | gate_proj | down_proj | update vs fp32 |")
    print("|---|---|---|---|---|")
    for path, row in report["fidelity"].items():
        print(f"| {path} | {row['q_proj']:.2e} | {row['gate_proj']:.2e} | {row['down_proj']:.2e} | "
              f"{row['update_vs_fp32']:.2e} |")
    print(f"(the fp32 path moved the weights by {report['fidelity']['fp32']['moved']:.1%})")

    report["stats"] = step_stats(shape, device)
    print("\n| recipe step | step_size (first blocks) | generator_norm (first blocks) |")
    print("|---|---|---|")
    for key, stats in report["stats"].items():
        print(f"| {key} | {', '.join(f'{v:.3e}' for v in stats['step_size'][:3])} | "
              f"{', '.join(f'{v:.3e}' for v in stats['generator_norm'][:3])} |")

    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
