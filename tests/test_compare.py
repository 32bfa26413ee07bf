"""pion_rl.compare on runs written by verl's own FileLogger and by wandb in offline mode."""

import json

import numpy as np
import pytest
from verl.utils.tracking import FileLogger

from pion_rl.compare import compare_runs, curve_stats, load_run, main

REWARD = "critic/score/mean"
VAL = "val-core/aime24/acc/mean@32"


def write_verl_jsonl(path, rows, monkeypatch):
    """Log `rows` ({step: metrics}) through verl's FileLogger, the way verl's trainer does."""
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    logger = FileLogger("project", path.stem)
    for step, metrics in rows.items():
        logger.log(metrics, step)
    logger.finish()
    return path


@pytest.fixture
def two_runs(tmp_path, monkeypatch):
    # Run a: 6 steps, validation every 2 steps (verl logs val-core in the same row as training metrics).
    a = {s: {REWARD: 0.1 * s, "actor/grad_norm": np.float32(1.5)} for s in range(1, 7)}
    for s, acc in ((2, 0.25), (4, 0.5), (6, 0.375)):
        a[s][VAL] = acc
    # Run b: only 4 steps; the comparison must stop at step 4 for both.
    b = {s: {REWARD: 0.2, VAL: 0.125} for s in range(1, 5)}
    return (write_verl_jsonl(tmp_path / "a.jsonl", a, monkeypatch),
            write_verl_jsonl(tmp_path / "b.jsonl", b, monkeypatch))


def test_reads_verl_file_logger_rows(two_runs):
    run = load_run(str(two_runs[0]))
    assert run.name == "a"
    assert list(run.history.index) == [1, 2, 3, 4, 5, 6]
    assert run.history[REWARD].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert run.history[VAL].dropna().to_dict() == {2: 0.25, 4: 0.5, 6: 0.375}


def test_curve_stats_final_best_and_mean_height_auc():
    final, best, auc = curve_stats(np.array([0.0, 1.0, 3.0]), np.array([0.0, 1.0, 0.5]))
    # Trapezoids: (0 + 1) / 2 * 1 + (1 + 0.5) / 2 * 2 = 2.0 over a span of 3.
    assert (final, best, auc) == (0.5, 1.0, pytest.approx(2.0 / 3.0))


def test_table_compares_runs_over_their_common_steps(two_runs, tmp_path):
    runs = [load_run(str(p)) for p in two_runs]
    png, md, notes = compare_runs(runs, tmp_path / "out")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "`critic/score/mean`, over steps 1-4." in text
    # Run a's reward over steps 1-4: final 0.4, best 0.4, mean height of the line 0.1..0.4 = 0.25.
    assert "| a | 0.4000 | 0.4000 | 0.2500 | 4 |" in text
    assert "| b | 0.2000 | 0.2000 | 0.2000 | 4 |" in text
    # Validation (one panel per benchmark): run a has points at 2 and 4 inside the common range.
    assert "`val-core/aime24/acc/mean@32`, over steps 2-4." in text
    assert "| a | 0.5000 | 0.5000 | 0.3750 | 2 |" in text
    assert notes == []


def test_reads_an_offline_wandb_run_with_wandbs_reader(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="p", name="pion-offline", dir=str(tmp_path), settings=wandb.Settings(console="off"))
    for step in range(3):
        run.log({REWARD: 0.5 + 0.25 * step, "train/lr": 1e-6}, step=step)
    run.log({VAL: 0.75}, step=2)
    run.finish()

    folder = next((tmp_path / "wandb").glob("offline-run-*"))
    loaded = load_run(str(folder))
    assert loaded.name == "pion-offline"
    assert loaded.history[REWARD].to_dict() == {0: 0.5, 1: 0.75, 2: 1.0}
    assert loaded.history[VAL].dropna().to_dict() == {2: 0.75}
    _, md, _ = compare_runs([loaded], tmp_path / "out")
    assert "| pion-offline | 1.0000 | 1.0000 | 0.7500 | 3 |" in md.read_text()


def test_a_run_missing_a_metric_is_a_note_not_a_failure(two_runs, tmp_path, monkeypatch):
    no_val = write_verl_jsonl(tmp_path / "c.jsonl", {1: {REWARD: 0.3}, 2: {REWARD: 0.4}}, monkeypatch)
    runs = [load_run(str(two_runs[0])), load_run(str(no_val))]
    _, md, notes = compare_runs(runs, tmp_path / "out")
    assert notes == [f"run 'c' has no {VAL!r}"]
    assert f"note: run 'c' has no {VAL!r}" in md.read_text()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "has no logged steps"),
        ('{"step": 1, "data": {"actor/grad_norm": 1.0}}\n', "none of the runs has a metric to compare"),
        ('{"step": 1, "metrics": {}}\n', "bad.jsonl:1 is not a verl file-logger row"),
    ],
)
def test_bad_runs_are_clear_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_an_unknown_run_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_writes_png_and_table_with_given_names(two_runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([*map(str, two_runs), "--out", str(out), "--name", "pion", "--name", "adamw"]) == 0
    text = (out / "summary.md").read_text()
    assert "| pion | 0.4000 |" in text and "| adamw | 0.2000 |" in text
    assert (out / "reward_curves.png").exists()
    assert f"wrote {out / 'summary.md'}" in capsys.readouterr().out


def test_jsonl_rows_are_plain_json(two_runs):
    # The format pion_rl.compare relies on is verl's: {"step": int, "data": {...}}, one per line.
    first = json.loads(two_runs[0].read_text().splitlines()[0])
    assert first == {"step": 1, "data": {REWARD: 0.1, "actor/grad_norm": 1.5}}


def test_optimizer_telemetry_gets_panels_and_the_sv_drift_a_log_axis(tmp_path, monkeypatch):
    from unittest import mock

    from matplotlib.axes import Axes

    drift, rms = "actor/optim/max_rel_sv_change", "actor/optim/update_rms"
    rows = {s: {REWARD: 0.1 * s, rms: 6e-5, **({drift: 2e-2 + 1e-3 * s} if s % 5 == 0 else {})} for s in range(1, 11)}
    run = load_run(str(write_verl_jsonl(tmp_path / "adamw.jsonl", rows, monkeypatch)))
    with mock.patch.object(Axes, "set_yscale", autospec=True) as set_yscale:
        _, md, _ = compare_runs([run], tmp_path / "out")
    text = md.read_text()
    assert f"`{drift}`, over steps 5-10." in text and f"`{rms}`, over steps 1-10." in text
    # The drift spans less than a decade here, so only the telemetry rule puts it on a log axis.
    assert [call.args[1] for call in set_yscale.call_args_list] == ["log"]


def test_a_run_still_writing_is_read_up_to_its_cut_off_last_line(two_runs, tmp_path, capsys):
    live = tmp_path / "live.jsonl"
    complete = two_runs[0].read_text()
    live.write_text(complete + '{"step": 7, "data": {"critic/sco')  # what a writer mid-line leaves
    out = tmp_path / "out"
    assert main([str(live), str(two_runs[1]), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: run 'live': {live}:7: skipped the last line, cut off mid-write" in err
    assert "read the 6 complete row(s) before it" in err
    assert load_run(str(live)).history.index.tolist() == [1, 2, 3, 4, 5, 6]
    # A bad line that is not the last one is still an error: that file is damaged, not being written.
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text('{"step": 1, "data": {"critic/sco\n' + complete)
    assert main([str(damaged), "--out", str(out)]) == 2
    assert "damaged.jsonl:1 is not a verl file-logger row" in capsys.readouterr().err


def test_nan_and_infinity_are_both_dropped_and_counted(tmp_path, capsys):
    path = tmp_path / "odd.jsonl"
    values = [0.5, float("nan"), float("inf"), 0.25, float("-inf")]
    path.write_text("".join(json.dumps({"step": s, "data": {REWARD: v, "x": 1.0}}) + "\n"
                            for s, v in enumerate(values, 1)))
    assert "Infinity" in path.read_text() and "NaN" in path.read_text()  # JSON as Python and verl write it
    run = load_run(str(path))
    assert run.history[REWARD].dropna().to_dict() == {1: 0.5, 4: 0.25}
    assert run.warnings == [f"dropped 3 non-finite value(s) (NaN or Infinity): {REWARD} x3"]
    assert main([str(path), "--out", str(tmp_path / "out")]) == 0
    assert f"warning: run 'odd': dropped 3 non-finite value(s) (NaN or Infinity): {REWARD} x3" in capsys.readouterr().err
    # The table's numbers are those of the finite points only.
    assert "| odd | 0.2500 | 0.5000 |" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("smooth", ["-3", "0", "two"])
def test_smooth_must_be_a_positive_window(two_runs, tmp_path, capsys, smooth):
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, two_runs), "--out", str(tmp_path), "--smooth", smooth])
    assert exit_info.value.code == 2
    assert f"--smooth: must be an integer >= 1 (1 = no smoothing), got '{smooth}'" in capsys.readouterr().err
    assert not (tmp_path / "summary.md").exists()


def test_names_may_follow_one_flag_and_a_wrong_count_is_told_exactly(two_runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([*map(str, two_runs), "--out", str(out), "--name", "pion", "adamw"]) == 0
    assert "| pion | 0.4000 |" in (out / "summary.md").read_text()
    with pytest.raises(SystemExit):
        main([*map(str, two_runs), str(two_runs[0]), "--name", "a", "b"])
    err = capsys.readouterr().err
    assert "got 2 name(s) (a, b) for 3 runs" in err and "give one --name per run, in order, or none" in err


def test_a_benchmark_named_by_a_hub_id_gets_its_panel():
    """verl names validation metrics by data_source; DeepMath's held-out split's is `zwhe99/DeepMath-103K`."""
    import pandas as pd

    from pion_rl.compare import Run, panel_metrics

    keys = ["val-core/zwhe99/DeepMath-103K/acc/mean@4", "val-core/zwhe99/DeepMath-103K/acc/mean@1",
            "val-core/aime24/acc/mean@32"]
    panels = panel_metrics([Run("a", pd.DataFrame(columns=[REWARD, *keys]))])
    assert panels == {"train reward": REWARD, "val aime24 (acc/mean@32)": "val-core/aime24/acc/mean@32",
                      "val zwhe99/DeepMath-103K (acc/mean@4)": "val-core/zwhe99/DeepMath-103K/acc/mean@4"}


def test_runs_over_different_steps_are_compared_with_a_warning(two_runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    warning = "runs cover different steps (a 1-6, b 1-4): each table compares only the steps all runs logged"
    assert f"warning: {warning}" in capsys.readouterr().err
    assert (out / "summary.md").read_text().startswith(f"# Run comparison\n\n**Warning**: {warning}.\n")
    same = write_verl_jsonl(tmp_path / "c.jsonl", {s: {REWARD: 0.3} for s in range(1, 5)}, monkeypatch)
    assert main([str(two_runs[1]), str(same), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err and "Warning" not in (out / "summary.md").read_text()


def test_best_is_given_only_where_higher_is_better(two_runs, tmp_path):
    out = tmp_path / "cli"
    assert main([*map(str, two_runs), "--out", str(out), "--metric", "actor/grad_norm"]) == 0
    sections = dict(part.split("\n", 1) for part in (out / "summary.md").read_text().split("\n### ")[1:])
    assert "| run | final | best (max) | AUC | points |" in sections["train reward"]
    assert "| run | final | best (max) | AUC | points |" in sections["val aime24 (acc/mean@32)"]
    assert "| run | final | mean over steps | points |" in sections["actor/grad_norm"]
    assert "| a | 1.5000 | 1.5000 | 6 |" in sections["actor/grad_norm"]


def plotted_lines(argv):
    """The (x, y, kwargs) of every line `main(argv)` draws."""
    from unittest import mock

    from matplotlib.axes import Axes

    with mock.patch.object(Axes, "plot", autospec=True, side_effect=Axes.plot) as plot:  # recorded, still drawn
        assert main(argv) == 0
    return [(np.asarray(call.args[1], float), np.asarray(call.args[2], float), call.kwargs)
            for call in plot.call_args_list]


def test_per_step_curves_are_smoothed_by_default_over_the_faint_raw_curve(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    reward = rng.random(40)  # GRPO's per-step reward is this noisy
    path = write_verl_jsonl(tmp_path / "noisy.jsonl", {s + 1: {REWARD: float(r)} for s, r in enumerate(reward)},
                            monkeypatch)
    raw, smooth = plotted_lines([str(path), "--out", str(tmp_path / "out")])
    assert raw[2]["alpha"] < 1 and "label" not in raw[2] and np.allclose(raw[1], reward)
    window = np.array([reward[max(0, i - 5):i + 5].mean() for i in range(40)])  # centred, 10 steps
    assert smooth[2]["label"] == "noisy" and np.allclose(smooth[1], window)
    (only,) = plotted_lines([str(path), "--out", str(tmp_path / "out"), "--smooth", "1"])
    assert np.allclose(only[1], reward)


def test_a_metric_no_run_logged_is_an_error_naming_those_they_did(two_runs, tmp_path, capsys):
    """As a user ran it: --metric actor/nope exited 0 with a note."""
    out = tmp_path / "cli"
    assert main([*map(str, two_runs), "--out", str(out), "--metric", "actor/grad_norm", "--metric", "actor/nope"]) == 2
    [error] = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert error.startswith("error: no run logged --metric actor/nope: ")
    assert set(error.split(": ")[-1].split(", ")) == {REWARD, VAL, "actor/grad_norm"}
    assert not out.exists()


def test_the_table_gives_the_smoothed_final_and_best_of_a_per_step_curve(tmp_path, monkeypatch, capsys):
    """The plotted curve is a moving average; the table's final and best are that curve's, not one noisy step's,
    while AUC (a mean already) is of the logged values."""
    rng = np.random.default_rng(1)
    reward = rng.random(40)
    path = write_verl_jsonl(tmp_path / "noisy.jsonl", {s + 1: {REWARD: float(r)} for s, r in enumerate(reward)},
                            monkeypatch)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 0
    window = np.array([reward[max(0, i - 5):i + 5].mean() for i in range(40)])  # centred, 10 steps, as plotted
    auc = np.trapezoid(reward, np.arange(1, 41)) / 39
    row = f"| noisy | {window[-1]:.4f} | {window.max():.4f} | {auc:.4f} | 40 |"
    assert row in (tmp_path / "out" / "summary.md").read_text()
    assert main([str(path), "--out", str(tmp_path / "raw"), "--smooth", "1"]) == 0
    raw_row = f"| noisy | {reward[-1]:.4f} | {reward.max():.4f} | {auc:.4f} | 40 |"
    assert raw_row in (tmp_path / "raw" / "summary.md").read_text()
