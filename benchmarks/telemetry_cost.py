"""What the optimizer telemetry adds to an optimizer step, on the weights of one Qwen3-1.7B decoder layer.

Torch's AdamW (the cheapest optimizer, so the telemetry's own cost stands out) steps the same weights and
gradients without telemetry and with telemetry but no singular values (``spectrum_every=0``: what 9 of 10
steps cost); then the singular values of every unit of the layer (q/k/v per head, float64) are timed once,
which is what a spectrum step adds. One process, fp32, CPU. Usage:

    .venv/bin/python benchmarks/telemetry_cost.py [--steps 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from optimizer_step import HEAD_DIM, layer_parameters, layer_shapes, timed

from pion_rl.optim import param_groups
from pion_rl.optim.units import to_units
from pion_rl.telemetry import OptimizerTelemetry
from pion_rl.telemetry.spectra import unit_singular_values


def timed_steps(spectrum_every: int | None, steps: int) -> float:
    """Seconds per ``optimizer.step()`` (hooks included), after one untimed step; None: no telemetry."""
    named = layer_parameters(layer_shapes(1.0))
    optimizer = torch.optim.AdamW([p for _, p in named], lr=1e-3, weight_decay=0.01)
    if spectrum_every is not None:
        OptimizerTelemetry(optimizer, named, head_dim=HEAD_DIM, spectrum_every=spectrum_every)
    optimizer.step()  # state allocation and the telemetry's reference
    return timed(optimizer, steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    args = parser.parse_args(argv)
    params = sum(torch.Size(s).numel() for s in layer_shapes(1.0).values())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, one Qwen3-1.7B layer "
          f"({params / 1e6:.1f} M params, fp32), {args.steps} timed steps each")
    plain = timed_steps(None, args.steps)
    every_step = timed_steps(0, args.steps)
    print(f"AdamW step alone:                          {plain:8.3f} s")
    print(f"+ telemetry without singular values:       {every_step - plain:8.3f} s")
    named = layer_parameters(layer_shapes(1.0))
    start = time.perf_counter()
    for group in param_groups(named, optimizer="pion", head_dim=HEAD_DIM):
        if group["algorithm"] == "pion":
            for p in group["params"]:
                unit_singular_values(to_units(p, group.get("layout", "out_in"), group.get("halves"),
                                              group.get("row_block"))[0])
    print(f"+ singular values of every unit (float64): {time.perf_counter() - start:8.3f} s (spectrum steps only)")
    print(f"snapshot held during step(): {params * 4 / 1e6:.0f} MB (4 bytes per fp32 parameter held by the rank)")


if __name__ == "__main__":
    main()
