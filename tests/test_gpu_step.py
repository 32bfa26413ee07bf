"""benchmarks/gpu_step.py --tiny, run from a bare copy of pion_rl/ and the script (as on a GPU machine without
verl): its state sizes, fidelity table and step statistics must hold what the bf16 path promises."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_step import TINY, parameter_shapes  # noqa: E402


def test_tiny_run_from_a_bare_copy(tmp_path):
    shutil.copytree(REPO / "pion_rl", tmp_path / "pion_rl", ignore=shutil.ignore_patterns("__pycache__", "demo"))
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "gpu_step.py", tmp_path / "benchmarks")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "benchmarks/gpu_step.py", "--tiny", "--steps", "1", "--warmup", "1",
                    "--only", "muon_bf16ns", "pion_recipe_fp32", "pion_recipe_bf16", "--json", str(out)],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())

    # State, counted independently: Pion keeps c^2 + r^2 per (row) block, Muon one W-sized buffer, AdamW two.
    shapes = parameter_shapes(TINY)
    matrices = {n: s for n, s in shapes.items() if len(s) == 2 and "embed" not in n}
    adamw = sum(2 * math.prod(s) for n, s in shapes.items() if n not in matrices)
    pion = 0
    for name, (rows, cols) in matrices.items():
        block = TINY.head_dim if name.split(".")[-2] in ("q_proj", "k_proj", "v_proj") else rows
        pion += rows // block * (cols**2 + block**2)
    muon = sum(math.prod(s) for s in matrices.values())
    speed = report["speed"]
    assert speed["pion_recipe_fp32"]["state_gb"] == speed["pion_recipe_bf16"]["state_gb"] == 4 * (pion + adamw) / 1e9
    assert speed["muon_bf16ns"]["state_gb"] == 4 * (muon + adamw) / 1e9
    assert "muon_dion" not in speed

    kernels = report["kernels"]  # fp32-accurate products of the rounded inputs; bf16 output on CPU
    assert kernels["times_generator"] < 1e-6 and kernels["times_generator_left"] < 1e-6
    assert kernels["steering_product_transposed"] < 2.0**-8

    for row in report["fused_ema"].values():  # CPU: the blend of a bf16 product; the fused kernel is CUDA's
        assert 0 < row["unfused_error"] < 2.0**-8
        if "fused_error" in row:
            assert row["fused_error"] < 1e-6
        else:
            assert row["fused"].startswith("fails: NotImplementedError")

    fidelity = report["fidelity"]
    assert 0.05 < fidelity["fp32"]["moved"] < 0.3  # the protocol moves the weights by 10-20%
    for matrix in ("q_proj", "gate_proj", "down_proj"):
        # The bf16 path keeps fp32's spectrum fidelity (within 1.5x), and Cayley (fp64 solve) Taylor-2's.
        assert fidelity["bf16"][matrix] <= 1.5 * fidelity["fp32"][matrix]
        assert fidelity["cayley_fp32"][matrix] <= fidelity["fp32"][matrix]
        assert fidelity["fp32"][matrix] < 1e-6  # fp32 rounding of W, not a bent spectrum
    assert 0 < fidelity["bf16"]["update_vs_fp32"] < 0.01

    stats = report["stats"]
    for step in (1, 2):
        fp32, bf16 = stats[f"fp32_step{step}"], stats[f"bf16_step{step}"]
        assert len(fp32["step_size"]) == TINY.q_heads
        for key in ("step_size", "generator_norm"):
            assert all(abs(b / a - 1) < 0.01 for a, b in zip(fp32[key], bf16[key]))



def test_full_size_without_a_gpu_refuses_in_one_line_pointing_to_tiny():
    # Hidden GPUs stand for a CPU-only machine; before the check, the full model was built on CPU (killed, rc 137).
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_step.py")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("gpu_step.py: error: no CUDA device")
    assert "--tiny" in run.stderr
