"""The demo closes the loop: final policies saved as HF directories, held-out parquet, pion_rl.evaluate's table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pion_rl.demo.__main__ import main
from pion_rl.demo.config import parse_overrides
from pion_rl.demo.policy import warm_start
from pion_rl.demo.problems import load_split
from pion_rl.demo.tokenizer import build_tokenizer

MICRO = [
    "hidden_size=16", "intermediate_size=32", "num_layers=1", "num_heads=2", "num_kv_heads=1", "head_dim=8",
    "warm_start_steps=2", "warm_start_batch=4", "prompts_per_step=2", "group_size=4", "max_new_tokens=8",
    "eval_every=2", "eval_problems=6", "eval_samples=2", "wandb=disabled", "steps=2",
]
OPTIMIZERS = ("adamw", "muon", "pion")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    main([f"out_dir={root / 'outputs' / 'demo'}", *MICRO])
    return root


def _max_relative_spectrum_change(model, start, head_dim: int) -> float:
    """Largest |s_i - s_i(start)| / s_max(start) over the blocks Pion rotates (q/k/v per head, others whole)."""
    worst, start_params = 0.0, dict(start.named_parameters())
    for name, weight in model.named_parameters():
        if weight.ndim != 2 or "embed" in name or "lm_head" in name:
            continue
        rows = head_dim if any(p in name for p in ("q_proj", "k_proj", "v_proj")) else weight.shape[0]
        now = torch.linalg.svdvals(weight.detach().double().reshape(-1, rows, weight.shape[1]))
        before = torch.linalg.svdvals(start_params[name].detach().double().reshape(-1, rows, weight.shape[1]))
        worst = max(worst, float(((now - before).abs().amax(-1) / before.amax(-1)).max()))
    return worst


def test_final_policies_are_saved_with_their_tokenizer(demo):
    out = demo / "outputs" / "demo"
    config = parse_overrides([f"out_dir={out}", *MICRO])
    tokenizer = build_tokenizer(merges=True)
    start = warm_start(config, tokenizer, load_split("train"), log=lambda _: None)
    messages = [{"role": "user", "content": "What is 3 + 4?"}]
    drift = {}
    for name in OPTIMIZERS:
        directory = out / "models" / name
        assert AutoTokenizer.from_pretrained(directory).apply_chat_template(messages) == \
            tokenizer.apply_chat_template(messages)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        drift[name] = _max_relative_spectrum_change(model, start, config.head_dim)
    # Each directory holds its optimizer's trained policy: two steps moved AdamW's and Muon's spectra, while
    # Pion's rotations kept every block's singular values (the warm start's) to rounding.
    assert drift["pion"] < 1e-6 < drift["adamw"] and drift["muon"] > 1e-6
    assert drift["adamw"] > 10 * drift["pion"]


def test_heldout_parquet_is_verl_rows_of_the_heldout_split(demo):
    frame = pd.read_parquet(demo / "outputs" / "demo" / "heldout.parquet")
    rows = load_split("heldout")[:6]
    assert list(frame.columns) == ["data_source", "prompt", "reward_model", "extra_info"]
    assert set(frame["data_source"]) == {"synthetic_arith"}
    assert [list(map(dict, p)) for p in frame["prompt"]] == [r["prompt"] for r in rows]
    assert [r["ground_truth"] for r in frame["reward_model"]] == [r["reward_model"]["ground_truth"] for r in rows]


def test_summary_carries_the_evaluation_table(demo):
    out = demo / "outputs" / "demo"
    results = json.loads((out / "eval" / "results.json").read_text())
    assert list(results["models"]) == list(OPTIMIZERS)
    for name in OPTIMIZERS:
        arith = results["models"][name]["synthetic_arith"]
        assert (arith["k"], arith["n_problems"]) == (2, 6)
    assert results["settings"]["backend"] == "hf"
    # The response length the policies were trained with, read from their generation_config.json.
    assert results["settings"]["max_new_tokens"] == {name: 8 for name in OPTIMIZERS}
    table_rows = [line for line in (out / "eval" / "table.md").read_text().splitlines() if line.startswith("| ")]
    summary = (out / "summary.md").read_text()
    assert table_rows and all(row in summary for row in table_rows)


def test_the_readme_evaluate_command_works_after_the_demo(demo, tmp_path):
    # The command, run from the directory holding outputs/ (only --out moved into the test's tmp).
    command = (f"{sys.executable} -m pion_rl.evaluate --model pion=outputs/demo/models/pion "
               f"--data outputs/demo/heldout.parquet --k synthetic_arith=2 --backend hf --out {tmp_path / 'e'}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_repo()), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(command.split(), cwd=demo, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pion: 6/6 problems" in run.stderr  # progress on stderr
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["models"]["pion"]["synthetic_arith"]["n_problems"] == 6
    assert run.stdout == (tmp_path / "e" / "table.md").read_text() + "\n"


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
