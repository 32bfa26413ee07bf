"""The CPU GRPO demo end to end with a microscopic model, and Pion's spectrum preservation inside it."""

import io
import json
import re
import statistics

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


@pytest.mark.parametrize("override, message", [
    ("steps=-1", "steps=-1 must be > 0"),
    ("lr=-1", "lr=-1.0 must be > 0"),
    ("lr=nan", "lr=nan must be a finite number"),
    ("seeds=0", "seeds=0 must be > 0"),
    ("eval_every=0", "eval_every=0 must be > 0"),
    ("kl_loss_coef=-0.1", "kl_loss_coef=-0.1 must be >= 0"),
    ("temperature=0", "temperature=0.0 must be > 0"),
    ("group_size=1", "group_size=1: GRPO's advantage compares samples of one prompt, so it needs >= 2"),
    ("num_kv_heads=3", "num_heads=2 must be a multiple of num_kv_heads=3"),
    ("eval_problems=129", "eval_problems=129 exceeds the 128 rows of the heldout split"),
    ("wandb=maybe", "unknown wandb='maybe'"),
])
def test_nonsensical_settings_are_rejected_before_outputs_are_touched(tmp_path, override, message):
    (tmp_path / "summary.md").write_text("the previous run's summary")
    with pytest.raises(SystemExit, match=re.escape(message)):
        main([f"out_dir={tmp_path}", *MICRO, "steps=1", override])  # short, were it accepted
    assert (tmp_path / "summary.md").read_text() == "the previous run's summary"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


def test_seeds_give_mean_and_spread_over_runs_from_one_warm_start(tmp_path, capsys):
    main([f"out_dir={tmp_path}", "optimizer=pion", "steps=2", "seeds=3", "seed=5", *MICRO])
    key = HELDOUT_ACC.format(n=2)
    logs = [read_jsonl(tmp_path / "runs" / f"pion-seed{s}.jsonl") for s in (5, 6, 7)]
    assert len({json.dumps(log[1], sort_keys=True) for log in logs}) == 3  # three different runs
    start, end = [log[0][key] for log in logs], [log[2][key] for log in logs]
    change = [e - s for s, e in zip(start, end)]
    summary = (tmp_path / "summary.md").read_text()
    spread = (f"| pion | {statistics.mean(start):.3f} ± {statistics.stdev(start):.3f} "
              f"| {statistics.mean(end):.3f} ± {statistics.stdev(end):.3f} "
              f"| {statistics.mean(change):+.3f} ± {statistics.stdev(change):.3f} |")
    assert spread in summary, summary
    assert "Over 3 GRPO seeds (5, 6, 7) from the one warm start" in summary
    # The main table and the curves show the mean run.
    assert f"| pion | {statistics.mean(start):.3f} | {statistics.mean(end):.3f} |" in summary
    assert len([p for p in (tmp_path / "cache").iterdir()]) == 1  # one warm start for all seeds


def test_each_invocation_replaces_the_logs_of_the_optimizers_it_trains(tmp_path, capsys):
    def offline_runs(optimizer):
        return sorted((tmp_path / "wandb" / optimizer).glob("**/offline-run-*"))

    args = [f"out_dir={tmp_path}", "steps=1", *MICRO, "wandb=offline"]
    main([*args, "optimizer=muon"])
    main([*args, "optimizer=pion"])
    first = offline_runs("pion")
    main([*args, "optimizer=pion"])
    assert len(first) == 1 and len(offline_runs("pion")) == 1 and offline_runs("pion") != first
    assert len(offline_runs("muon")) == 1  # another optimizer's latest run stays
    assert "(each run of an optimizer replaces its previous logs)" in capsys.readouterr().out  # and it says so
    main([*args, "optimizer=pion", "seeds=2"])
    assert len(offline_runs("pion")) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["muon.jsonl", "pion-seed0.jsonl",
                                                                      "pion-seed1.jsonl"]


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_uncached_warm_start_shows_progress_on_a_terminal_only(tmp_path, monkeypatch, tty):
    stream = _Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    config = parse_overrides([f"out_dir={tmp_path}", *MICRO, "warm_start_steps=3"])
    warm_start(config, build_tokenizer(merges=True), load_split("train"), log=lambda _: None)
    if tty:
        assert "warm start" in stream.getvalue() and "3/3" in stream.getvalue()
    else:
        assert stream.getvalue() == ""
