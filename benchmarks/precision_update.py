"""How far one Pion update under ``precision="bf16"`` is from the same update under ``"fp32"``.

    python benchmarks/precision_update.py          # one Qwen3-1.7B layer's matrices (CPU: minutes)
    python benchmarks/precision_update.py --tiny   # toy sizes (seconds)

The recipe's Pion (lie_lie, alternate, degree-2 Taylor, RMS 0.2) runs ``--steps`` fp32 steps on random
weights (std 0.02, as Qwen3's init) and gradients; before each, a bf16 step is taken from a copy of the same
weights and state. Printed per matrix and step: ``||dW_bf16 - dW_fp32||_F / ||dW_fp32||_F``. Steps alternate
sides (odd: in side, even: out side). The lr only scales the step (RMS scaling), so 1e-3 keeps the update far
above the weights' fp32 rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_step import QWEN3_1_7B, RECIPE, TINY, ModelShape  # noqa: E402

from pion_rl.optim.pion_math import PionSettings, pion_step, state_shapes  # noqa: E402


def layer_matrices(m: ModelShape) -> dict[str, tuple[int, int, int]]:
    """``name: (blocks, rows, cols)`` of one decoder layer's distinct matrix shapes (q/k per head)."""
    q, kv = m.q_heads * m.head_dim, m.kv_heads * m.head_dim
    return {"q_proj (per head)": (q // m.head_dim, m.head_dim, m.hidden),
            "k_proj (per head)": (kv // m.head_dim, m.head_dim, m.hidden), "o_proj": (1, m.hidden, q),
            "gate_proj": (1, m.intermediate, m.hidden), "down_proj": (1, m.hidden, m.intermediate)}


def per_update_difference(m: ModelShape, steps: int, lr: float = 1e-3, seed: int = 0) -> dict[str, list[float]]:
    gen = torch.Generator().manual_seed(seed)
    fp32, bf16 = (PionSettings(precision=p, **RECIPE) for p in ("fp32", "bf16"))
    out = {}
    for name, (blocks, rows, cols) in layer_matrices(m).items():
        w = torch.randn(blocks, rows, cols, generator=gen) * 0.02
        state = {k: torch.zeros(s) for k, s in state_shapes(fp32, blocks, rows, cols).items()}
        out[name] = []
        for step in range(1, steps + 1):
            g = torch.randn(blocks, rows, cols, generator=gen) * 1e-3
            w_bf16, state_bf16 = w.clone(), {k: v.clone() for k, v in state.items()}
            before = w.clone()
            pion_step(w_bf16, g, state_bf16, step, bf16, lr)
            pion_step(w, g, state, step, fp32, lr)
            out[name].append(((w_bf16 - w).norm() / (w - before).norm()).item())
            del w_bf16, state_bf16
    return out


def main(argv=None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes")
    parser.add_argument("--steps", type=int, default=4, help="steps per matrix (even: both sides)")
    args = parser.parse_args(argv)
    result = per_update_difference(TINY if args.tiny else QWEN3_1_7B, args.steps)
    print("| matrix | " + " | ".join(f"step {t} ({'in' if t % 2 else 'out'})" for t in range(1, args.steps + 1)) + " |")
    print("|---" * (args.steps + 1) + "|")
    for name, row in result.items():
        print(f"| {name} | " + " | ".join(f"{x:.2e}" for x in row) + " |")
    return result


if __name__ == "__main__":
    main()
