"""The CPU GRPO demo end to end with a microscopic model, and Pion's spectrum preservation inside it."""

import json

import pytest
import torch

from pion_rl.demo.__main__ import main
from pion_rl.demo.config import parse_overrides
from pion_rl.demo.policy import warm_start, warm_start_key
from pion_rl.demo.problems import load_split
from pion_rl.demo.tokenizer import build_tokenizer
from pion_rl.demo.train import HELDOUT_ACC, SPECTRUM_DRIFT, run_grpo

MICRO = [
    "hidden_size=16", "intermediate_size=32", "num_layers=1", "num_heads=2", "num_kv_heads=1", "head_dim=8",
    "warm_start_steps=2", "warm_start_batch=4", "prompts_per_step=2", "group_size=4", "max_new_tokens=8",
    "eval_every=1", "eval_problems=4", "eval_samples=2", "wandb=disabled",
]


def read_jsonl(path):
    return {row["step"]: row["data"] for row in map(json.loads, path.read_text().splitlines())}


def test_two_step_demo_writes_curves_summary_and_run_logs(tmp_path, capsys):
    main([f"out_dir={tmp_path}", "steps=2", *MICRO])

    assert (tmp_path / "reward_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "summary.md").read_text()
    heldout_key = HELDOUT_ACC.format(n=2)
    logs = {name: read_jsonl(tmp_path / "runs" / f"{name}.jsonl") for name in ("adamw", "muon", "pion")}
    for name, log in logs.items():
        assert sorted(log) == [0, 1, 2]
        assert heldout_key in log[0] and heldout_key in log[2]
        for step in (1, 2):
            assert 0.0 <= log[step]["critic/score/mean"] <= 1.0
            assert log[step]["response_length/mean"] <= 8
        start, end = log[0][heldout_key], log[2][heldout_key]
        assert f"| {name} | {start:.3f} | {end:.3f} | {end - start:+.3f} |" in summary
    # Same warm start, same prompts and sampling noise: the optimizers only diverge after their first update.
    assert len({log[0][heldout_key] for log in logs.values()}) == 1
    assert len({log[1]["critic/score/mean"] for log in logs.values()}) == 1
    assert f"summary: {tmp_path / 'summary.md'}" in capsys.readouterr().out


def test_warm_start_is_cached_by_its_settings(tmp_path):
    tokenizer, rows = build_tokenizer(merges=True), load_split("train")
    config = parse_overrides([f"out_dir={tmp_path}", *MICRO])
    first = warm_start(config, tokenizer, rows, log=lambda _: None)
    messages = []
    again = warm_start(config, tokenizer, rows, log=messages.append)
    assert messages and messages[0].startswith("warm start: loaded")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    key = warm_start_key(config, tokenizer, rows)
    other = parse_overrides([f"out_dir={tmp_path}", *MICRO, "warm_start_steps=3"])
    assert warm_start_key(other, tokenizer, rows) != key
    assert warm_start_key(config, build_tokenizer(), rows) != key  # another vocabulary
    assert warm_start_key(config, tokenizer, rows[1:]) != key
    grpo_only = parse_overrides([f"out_dir={tmp_path}", *MICRO, "steps=7", "lr=1"])
    assert warm_start_key(grpo_only, tokenizer, rows) == key


def test_bad_overrides_say_what_is_valid():
    with pytest.raises(SystemExit, match="unknown optimizer='sgd'"):
        parse_overrides(["optimizer=sgd"])
    with pytest.raises(SystemExit, match="expected key=value with key one of optimizer, out_dir"):
        parse_overrides(["learning_rate=1"])
    with pytest.raises(SystemExit, match="bad value for steps: 'two' is not a int"):
        parse_overrides(["steps=two"])


def test_pion_keeps_the_spectra_of_its_matrices_during_demo_training(tmp_path):
    # Degree-2 Taylor map: each step scales singular values by at most sqrt(1 + theta^4 / 4), theta the
    # spectral norm of the scaled generator. At the demo's update size (RMS lr * 0.2 against weights of RMS
    # ~0.02 - 0.1) theta < 0.1, so 4 steps move a singular value by < 4 * 0.1^4 / 8 = 5e-5 (relative to
    # the block's largest): that is the tolerance. AdamW under the same rollouts must move them far more.
    config = parse_overrides([f"out_dir={tmp_path}", *MICRO, "hidden_size=32", "intermediate_size=64",
                              "head_dim=16", "steps=4", "eval_every=100", "lr=2e-3", "spectrum_every=1"])
    tokenizer, train_rows = build_tokenizer(merges=True), load_split("train")
    warm_state = warm_start(config, tokenizer, train_rows, log=lambda _: None).state_dict()
    drift = {}
    for name in ("pion", "adamw"):
        log = read_jsonl(run_grpo(config, name, warm_state, tokenizer, train_rows, load_split("heldout")[:4]))
        drift[name] = max(log[step][SPECTRUM_DRIFT] for step in range(1, 5))
    tolerance = 4 * 0.1**4 / 8
    assert drift["pion"] < tolerance
    assert drift["adamw"] > 100 * tolerance
