"""The CPU GRPO demo end to end with a microscopic model, and Pion's spectrum preservation inside it."""

import dataclasses
import io
import json
import re
import statistics

import pytest
import torch

from pion_rl.demo.__main__ import main
from pion_rl.demo.config import DemoConfig, parse_overrides
from pion_rl.demo.grpo import grpo_loss
from pion_rl.demo.policy import warm_start, warm_start_key
from pion_rl.demo.problems import load_split
from pion_rl.demo.tokenizer import build_tokenizer
from pion_rl.demo.train import HELDOUT_ACC, OPTIMIZER_STEP_S, SPECTRUM_DRIFT, run_grpo

MICRO = [
    "hidden_size=16", "intermediate_size=32", "num_layers=1", "num_heads=2", "num_kv_heads=1", "head_dim=8",
    "warm_start_steps=2", "warm_start_batch=4", "prompts_per_step=2", "group_size=4", "max_new_tokens=8",
    "eval_every=1", "eval_problems=4", "eval_samples=2", "wandb=disabled",
]


def read_jsonl(path):
    return {row["step"]: row["data"] for row in map(json.loads, path.read_text().splitlines())}


def test_two_step_demo_writes_curves_summary_and_run_logs(tmp_path, capsys):
    main([f"out_dir={tmp_path}", "steps=2", "log_every=2", *MICRO])

    assert (tmp_path / "reward_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# pion-rl CPU demo: GRPO with AdamW vs Muon vs Pion\n") and "Warning" not in summary
    heldout_key = HELDOUT_ACC.format(n=2)
    logs = {name: read_jsonl(tmp_path / "runs" / f"{name}.jsonl") for name in ("adamw", "muon", "pion")}
    out = capsys.readouterr().out
    for name, log in logs.items():
        assert sorted(log) == [0, 1, 2]
        assert heldout_key in log[0] and heldout_key in log[2]
        for step in (1, 2):
            assert 0.0 <= log[step]["critic/score/mean"] <= 1.0
            assert log[step]["response_length/mean"] <= 8
        start, end = log[0][heldout_key], log[2][heldout_key]
        # The optimizer's own step time (median over steps, min-max), not the run's wall time.
        step_ms = sorted(1e3 * log[step][OPTIMIZER_STEP_S] for step in (1, 2))
        assert (f"| {name} | {start:.3f} | {end:.3f} | {end - start:+.3f} | - | {statistics.median(step_ms):.1f} "
                f"({step_ms[0]:.1f}-{step_ms[1]:.1f}) |") in summary
        # Off a terminal, a console line every log_every steps with the logged numbers.
        assert (f"GRPO {name} step 2/2: reward {log[2]['critic/score/mean']:.3f}, held-out acc {end:.3f} (step 2), "
                f"KL {log[2]['actor/kl_loss']:.2e}, optimizer step {1e3 * log[2][OPTIMIZER_STEP_S]:.1f} ms") in out
        assert f"GRPO {name} step 1/2" not in out
    # Same warm start, same prompts and sampling noise: the optimizers only diverge after their first update.
    assert len({log[0][heldout_key] for log in logs.values()}) == 1
    assert len({log[1]["critic/score/mean"] for log in logs.values()}) == 1
    assert f"summary: {tmp_path / 'summary.md'}" in out
    # Each table says how it was measured: training-time accuracy at T=1.0, the evaluation at T=0.6.
    assert "at the training temperature T=1.0" in summary and "(T=0.6, top-p 0.95, in percent)" in summary
    assert "evaluated with python -m pion_rl.evaluate --backend hf (the paper's sampling: T=0.6, top-p 0.95)" in summary
    # "best" only where higher is better: reward and accuracy, not KL or the update size.
    sections = dict(part.split("\n", 1) for part in summary.split("\n### ")[1:])
    assert "best (max)" in sections["train reward"] and "best (max)" in sections[f"val synthetic_arith (acc/mean@2)"]
    assert "best" not in sections["actor/kl_loss"] and "best" not in sections["update RMS"]

    # One more optimizer run, shorter: the summary is rebuilt from the complete runs on disk and says so.
    main([f"out_dir={tmp_path}", "optimizer=pion", "steps=1", *MICRO])
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# pion-rl CPU demo: GRPO with AdamW vs Muon vs Pion\n\n**Warning**: runs cover "
                              "different steps (adamw 0-2, muon 0-2, pion 0-1)")
    assert (f"latest complete run of each optimizer in `{tmp_path}/runs` (adamw: 2 steps, muon: 2 steps, "
            "pion: 1 steps)") in summary
    assert "Settings that differ between these runs: steps (adamw 2, muon 2, pion 1)." in summary
    assert f"| adamw | {logs['adamw'][0][heldout_key]:.3f} | {logs['adamw'][2][heldout_key]:.3f} |" in summary
    assert sorted(read_jsonl(tmp_path / "runs" / "pion.jsonl")) == [0, 1]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["adamw", "muon", "pion"]
    assert "| adamw |" in (tmp_path / "eval" / "table.md").read_text()  # the evaluation covers all three


def test_ctrl_c_is_one_line_and_leaves_only_complete_runs_and_their_summary(tmp_path, monkeypatch, capsys):
    calls = []

    def interrupt_the_second_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # adamw's only step went through; muon's first step is interrupted
            raise KeyboardInterrupt
        return grpo_loss(*args, **kwargs)

    monkeypatch.setattr("pion_rl.demo.train.grpo_loss", interrupt_the_second_run)
    (tmp_path / "eval").mkdir(parents=True)  # an earlier evaluation, of other policies
    with pytest.raises(SystemExit) as exit_info:
        main([f"out_dir={tmp_path}", "steps=1", *MICRO])
    assert exit_info.value.code == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1] == (f"interrupted: discarded the unfinished run, kept the finished runs of adamw; "
                       f"{tmp_path / 'summary.md'} covers the complete runs in {tmp_path / 'runs'}")
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["adamw.jsonl", "adamw.settings.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "models", "reward_curves.png", "runs", "summary.md"]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# pion-rl CPU demo: GRPO with AdamW\n") and "| adamw |" in summary
    assert "| muon |" not in summary and "Not evaluated: the demo was interrupted" in summary


def test_help_lists_every_setting_with_its_default_and_what_it_does(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pion_rl.demo [key=value ...]")
    for field in dataclasses.fields(DemoConfig):
        (line,) = [line for line in out.splitlines() if line.strip().startswith(f"{field.name}=")]
        assert line.split()[0] == f"{field.name}={field.default}" and field.metadata["help"] in line


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
    with pytest.raises(SystemExit, match="^steps: expected an integer, got 'two'$"):
        parse_overrides(["steps=two"])
    with pytest.raises(SystemExit, match="^lr: expected a number, got '1e-3x'$"):
        parse_overrides(["lr=1e-3x"])


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
    spread = (f"| pion | 5, 6, 7 | {statistics.mean(start):.3f} ± {statistics.stdev(start):.3f} "
              f"| {statistics.mean(end):.3f} ± {statistics.stdev(end):.3f} "
              f"| {statistics.mean(change):+.3f} ± {statistics.stdev(change):.3f} |")
    assert spread in summary, summary
    assert "Over several GRPO seeds from the one warm start" in summary
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
    assert "(each run of an optimizer replaces its previous logs once it is complete)" in capsys.readouterr().out
    main([*args, "optimizer=pion", "seeds=2"])
    assert len(offline_runs("pion")) == 2
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.jsonl")) == ["muon.jsonl", "pion-seed0.jsonl",
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
