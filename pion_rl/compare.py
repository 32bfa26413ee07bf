"""Compare training runs: training-reward and validation-accuracy curves, plus final / best / AUC table.

    python -m pion_rl.compare RUN [RUN ...] [--out DIR] [--name NAME ...] [--metric KEY ...]

A RUN is one of
  * a JSONL file written by verl's file logger (`trainer.logger=[file]`: one `{"step": s, "data": {...}}`
    per line),
  * an offline wandb run folder (`wandb/offline-run-*`) or its `run-*.wandb` file, read by wandb's own
    transaction-log reader (`wandb leet inspect --json`),
  * an online wandb run path `entity/project/run_id`, read through `wandb.Api`.
Metric names are verl's: training reward `critic/score/mean`, validation accuracy
`val-core/<benchmark>/<acc|reward>/mean@<n>` (one panel per benchmark), and when logged the optimizer
telemetry's `actor/optim/max_rel_sv_change` (log axis) and `actor/optim/update_rms`. Runs are aligned by step; the
table compares them over the steps all of them logged, with a warning when their steps differ. Curves logged at
every step are drawn as a centred moving average over `--smooth` steps (default 10) with the raw curve faint
behind it; the table's final and best of such a curve are the average's, AUC is the logged values'. A
`--metric` that no run logged is an error naming the metrics they did.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

TRAIN_REWARD = "critic/score/mean"
#: Optimizer telemetry (pion_rl.telemetry) panels, shown when a run has them; verl logs them as `actor/optim/...`.
TELEMETRY_PANELS = {"max rel. singular-value change": "optim/max_rel_sv_change", "update RMS": "optim/update_rms"}
#: Panels always drawn on a log axis (Pion's spectral drift sits orders of magnitude below AdamW's and Muon's).
LOG_SCALE_METRICS = ("optim/max_rel_sv_change",)
# The benchmark is verl's data_source, which may hold a slash (DeepMath's is zwhe99/DeepMath-103K).
VAL_CORE = re.compile(r"^val-core/(?P<benchmark>.+)/(?P<var>[^/]+)/mean@(?P<n>\d+)$")
WANDB_RUN_PATH = re.compile(r"^[\w.-]+/[\w.-]+/(runs/)?[\w-]+$")
#: Moving-average window (steps) of the plotted per-step curves: GRPO's per-step reward is noisy.
DEFAULT_SMOOTH = 10


class CompareError(ValueError):
    """Bad input to the comparer: the message says what was wrong and what to do."""


@dataclass
class Run:
    """A run's scalar history: one row per logged step (index `step`), one column per metric (NaN if absent),
    and what reading it skipped (a cut-off last line, non-finite values), to be told to the user."""

    name: str
    history: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- readers


def read_file_logger_jsonl(path: Path) -> Run:
    """A run from verl's FileLogger output (`{"step": int, "data": {metric: value}}` per line).

    A last line without its newline that does not parse is what a run still writing (or one that crashed)
    leaves: it is skipped with a warning; a bad complete line is an error."""
    rows, warnings = [], []
    lines = Path(path).read_text().split("\n")  # the last item is "" when the file ends with a newline
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            rows.append({"step": int(record["step"]), **record["data"]})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if lineno == len(lines):
                warnings.append(f"{path}:{lineno}: skipped the last line, cut off mid-write ({len(line)} characters "
                                f"without a newline); read the {len(rows)} complete row(s) before it")
                break
            raise CompareError(
                f"{path}:{lineno} is not a verl file-logger row ({err!r}); expected "
                '{"step": <int>, "data": {<metric>: <value>, ...}}'
            ) from err
    history, dropped = _history(rows)
    return Run(Path(path).stem, history, warnings + dropped)


def read_wandb_offline(path: Path) -> Run:
    """A run from an offline wandb folder or `.wandb` file, decoded by wandb's own reader (wandb-core)."""
    path = Path(path)
    log_file = path if path.is_file() else next(iter(sorted(path.glob("run-*.wandb"))), None)
    if log_file is None:
        raise CompareError(f"{path} holds no run-*.wandb file: pass an offline run folder (wandb/offline-run-*)")
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log_file)],
        capture_output=True,
        text=True,
        check=False,  # a failure is reported below with wandb's own message
    )
    if proc.returncode != 0:
        raise CompareError(f"wandb could not read {log_file}: {proc.stderr.strip() or proc.stdout.strip()}")
    name, rows = path.name, []
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if record["type"] == "run":
            name = record["run"].get("display_name") or record["run"].get("run_id") or name
        elif record["type"] == "history":
            history = record["history"]
            step = history.get("step", {}).get("num", history["item"].get("_step", 0))
            rows.append({"step": int(step), **_scalars(history["item"])})
    history, dropped = _history(rows)
    return Run(name, history, dropped)


def read_wandb_online(run_path: str) -> Run:
    """A run from the wandb server by its path `entity/project/run_id` (needs WANDB_API_KEY)."""
    import wandb

    try:
        run = wandb.Api().run(run_path.replace("/runs/", "/"))
    except Exception as err:  # wandb raises its own CommError / ValueError / auth errors
        raise CompareError(f"cannot fetch wandb run {run_path!r}: {err}") from err
    rows = [{"step": int(row["_step"]), **_scalars(row)} for row in run.scan_history() if "_step" in row]
    history, dropped = _history(rows)
    return Run(run.name or run_path, history, dropped)


def load_run(spec: str) -> Run:
    """Read a run from a path or wandb run path (see the module docstring); the format is picked by shape."""
    path = Path(spec)
    if path.is_file() and path.suffix == ".jsonl":
        return read_file_logger_jsonl(path)
    if path.is_dir() or (path.is_file() and path.suffix == ".wandb"):
        return read_wandb_offline(path)
    if path.exists():
        raise CompareError(f"{spec}: unknown run format; expected a .jsonl file, a .wandb file or a run folder")
    if WANDB_RUN_PATH.match(spec):
        return read_wandb_online(spec)
    raise CompareError(f"{spec}: no such file or folder, and not a wandb run path entity/project/run_id")


def _scalars(item: dict) -> dict:
    """The numeric metrics of a logged row (wandb's `_runtime` etc. and media entries dropped)."""
    return {
        key: float(value)
        for key, value in item.items()
        if not key.startswith("_") and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _history(rows: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """Rows -> one row per step (several logs of the same step are merged; later values win), and a warning
    counting the NaN and infinite values dropped (both are treated as not logged)."""
    dropped: Counter[str] = Counter()
    for row in rows:
        for key, value in list(row.items()):
            if key != "step" and isinstance(value, float) and not math.isfinite(value):
                del row[key]
                dropped[key] += 1
    warnings = []
    if dropped:
        counts = ", ".join(f"{key} x{n}" for key, n in sorted(dropped.items()))
        warnings.append(f"dropped {sum(dropped.values())} non-finite value(s) (NaN or Infinity): {counts}")
    if not rows:
        return pd.DataFrame(index=pd.Index([], name="step", dtype=int)), warnings
    frame = pd.DataFrame(rows).groupby("step").last().sort_index()
    return frame.apply(pd.to_numeric, errors="coerce"), warnings


# ---------------------------------------------------------------------------------------------- metrics


def panel_metrics(runs: list[Run], extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Panel title -> metric key: training reward, one validation metric per benchmark, the optimizer
    telemetry's singular-value drift and update RMS when a run logged them, then `extra` keys.

    For a benchmark logged with several sample counts, the largest n (verl's core metric) is kept."""
    panels = {"train reward": TRAIN_REWARD}
    best_n: dict[str, tuple[int, str]] = {}
    for key in sorted({key for run in runs for key in run.history.columns}):
        match = VAL_CORE.match(key)
        if match:
            n = int(match["n"])
            if match["benchmark"] not in best_n or n > best_n[match["benchmark"]][0]:
                best_n[match["benchmark"]] = (n, key)
    for benchmark, (_, key) in sorted(best_n.items()):
        match = VAL_CORE.match(key)
        panels[f"val {benchmark} ({match['var']}/mean@{match['n']})"] = key
    logged = sorted({key for run in runs for key in run.history.columns})
    for title, name in TELEMETRY_PANELS.items():
        key = next((key for key in logged if key == name or key.endswith("/" + name)), None)
        if key is not None:
            panels[title] = key
    panels.update({key: key for key in extra})
    return panels


def higher_is_better(key: str) -> bool:
    """Rewards and accuracies; not KL, drift, norms or times, where the largest value is no "best"."""
    return key == TRAIN_REWARD or bool(VAL_CORE.match(key))


def step_coverage_warning(runs: list[Run]) -> str | None:
    """A warning naming each run's logged steps when they are not the same for all runs, else None."""
    spans = {run.name: (int(run.history.index[0]), int(run.history.index[-1])) for run in runs if len(run.history)}
    if len(set(spans.values())) <= 1:
        return None
    listed = ", ".join(f"{name} {lo}-{hi}" for name, (lo, hi) in spans.items())
    return f"runs cover different steps ({listed}): each table compares only the steps all runs logged"


def curve_stats(steps: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """(final, best, AUC) of a curve sampled at increasing `steps`; AUC is the trapezoid area divided by
    the step span, i.e. the curve's mean height, so runs of different lengths compare on one scale."""
    span = steps[-1] - steps[0]
    auc = float(np.trapezoid(values, steps) / span) if span > 0 else float(values[-1])
    return float(values[-1]), float(values.max()), auc


def common_curves(runs: list[Run], key: str) -> tuple[dict[str, pd.Series], tuple[int, int] | None]:
    """Each run's non-missing curve for `key`, cut to the step range every run covers, and that range."""
    curves = {run.name: run.history[key].dropna() for run in runs if key in run.history}
    curves = {name: curve for name, curve in curves.items() if len(curve)}
    if not curves:
        return {}, None
    lo = max(int(c.index[0]) for c in curves.values())
    hi = min(int(c.index[-1]) for c in curves.values())
    if lo > hi:  # disjoint step ranges: compare each run over its own steps
        return curves, None
    return {name: c[(c.index >= lo) & (c.index <= hi)] for name, c in curves.items()}, (lo, hi)


# ---------------------------------------------------------------------------------------------- outputs


def smoothed(curve: pd.Series, smooth: int) -> pd.Series | None:
    """The centred moving average over ``smooth`` steps of a curve logged at every step (indexed by step), as
    plotted; None where it is not smoothed: ``smooth`` 1, a curve no longer than the window, or gaps in its
    steps (validation every N steps)."""
    if smooth > 1 and len(curve) > smooth and np.all(np.diff(curve.index) == 1):
        return curve.rolling(smooth, center=True, min_periods=1).mean()
    return None


def markdown_table(runs: list[Run], panels: dict[str, str], smooth: int = 1) -> tuple[str, list[str]]:
    """The comparison table (one section per panel) and notes on metrics missing from some runs. Where a run's
    curve is plotted smoothed (`smoothed`), its final and best are those of the smoothed curve, not one noisy
    step; AUC and the mean over steps are of the logged values."""
    lines, notes = [], []
    for title, key in panels.items():
        curves, window = common_curves(runs, key)
        for run in runs:
            if run.name not in curves:
                notes.append(f"run {run.name!r} has no {key!r}")
        if not curves:
            continue
        where = f"steps {window[0]}-{window[1]}" if window else "each run's own steps (their ranges do not overlap)"
        averaged = {name: smoothed(curve, smooth) for name, curve in curves.items()}
        how = (f" final and best are of the {smooth}-step moving average (as plotted); AUC of the logged values."
               if any(a is not None for a in averaged.values()) else "")
        lines += [f"### {title}", "", f"`{key}`, over {where}.{how}", ""]
        best = higher_is_better(key)  # a "best" column only where the largest value is the best one
        columns = ["final", "best (max)", "AUC"] if best else ["final", "mean over steps"]
        lines += [f"| run | {' | '.join(columns)} | points |", "|---" * (len(columns) + 2) + "|"]
        for name, curve in curves.items():
            steps = curve.index.to_numpy(float)
            final, top, auc = curve_stats(steps, curve.to_numpy(float))
            if averaged[name] is not None:
                final, top, _ = curve_stats(steps, averaged[name].to_numpy(float))
            cells = [final, top, auc] if best else [final, auc]
            lines.append(f"| {name} | {' | '.join(map(_number, cells))} | {len(curve)} |")
        lines.append("")
    return "\n".join(lines), notes


def _number(x: float) -> str:
    """Four decimals, or scientific notation for values that would print as 0.0000 (e.g. Pion's drift)."""
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.3e}"


def plot_curves(runs: list[Run], panels: dict[str, str], out_png: Path, smooth: int = 1) -> None:
    """One subplot per panel, one line per run; with `smooth` > 1 a centred rolling mean is drawn over the
    faint raw curve of series logged at every step (sparse ones, like validation, are drawn as they are).
    A non-negative panel whose positive values span more than three decades gets a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {t: k for t, k in panels.items() if any(k in r.history and r.history[k].notna().any() for r in runs)}
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.6), squeeze=False)
    for ax, (title, key) in zip(axes[0], present.items()):
        for i, run in enumerate(runs):
            if key not in run.history:
                continue
            curve = run.history[key].dropna()
            color = f"C{i}"
            if (average := smoothed(curve, smooth)) is not None:
                ax.plot(curve.index, curve.values, color=color, alpha=0.25, linewidth=1)
                curve = average
            ax.plot(curve.index, curve.values, color=color, label=run.name, marker="o" if len(curve) < 30 else None,
                    markersize=3)
        values = np.concatenate([r.history[key].dropna().to_numpy(float) for r in runs if key in r.history])
        positive = values[values > 0]
        spans_decades = len(positive) and values.min() >= 0 and positive.max() > 1e3 * positive.min()
        if key.endswith(LOG_SCALE_METRICS) or spans_decades:
            ax.set_yscale("log")  # e.g. spectral drift: Pion's ~1e-8 next to AdamW's ~1e-2
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def compare_runs(
    runs: list[Run],
    out_dir: Path,
    *,
    extra_metrics: tuple[str, ...] = (),
    title: str = "Run comparison",
    preamble: str = "",
    smooth: int = DEFAULT_SMOOTH,
    png_name: str = "reward_curves.png",
) -> tuple[Path, Path, list[str]]:
    """Write `out_dir/<png_name>` and `out_dir/summary.md` for `runs`; returns both paths and notes on
    metrics that some runs lack. The summary starts with `step_coverage_warning` when there is one.

    Raises CompareError if a run is empty, no run logged one of ``extra_metrics``, or no run has any metric to
    compare."""
    for run in runs:
        if run.history.empty:
            raise CompareError(f"run {run.name!r} has no logged steps: is it the right file, and did it log?")
    logged = sorted({key for run in runs for key in run.history.columns if run.history[key].notna().any()})
    unknown = [key for key in extra_metrics if key not in logged]
    if unknown:
        raise CompareError(f"no run logged --metric {', '.join(unknown)}: name one the runs hold: {', '.join(logged)}")
    panels = panel_metrics(runs, extra_metrics)
    table, notes = markdown_table(runs, panels, smooth)
    if not table:
        raise CompareError(
            f"none of the runs has a metric to compare ({', '.join(panels.values())}); they log: "
            f"{', '.join(logged[:20]) or 'nothing'}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, md = out_dir / png_name, out_dir / "summary.md"
    plot_curves(runs, panels, png, smooth)
    note_text = "".join(f"- note: {note}\n" for note in notes)
    warning = step_coverage_warning(runs)
    md.write_text(
        f"# {title}\n\n{f'**Warning**: {warning}.{chr(10)}{chr(10)}' if warning else ''}"
        f"{preamble}{'' if not preamble else chr(10)}"
        f"![curves]({png_name})\n\n{table}\n{note_text}"
    )
    return png, md, notes


def _window(text: str) -> int:
    """argparse type of --smooth: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (1 = no smoothing), got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pion_rl.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="JSONL file, offline wandb folder or wandb path")
    parser.add_argument("--out", type=Path, default=Path("outputs/compare"), help="output folder")
    parser.add_argument("--name", action="extend", nargs="+", default=[],
                        help="display names, one per RUN in order, after the runs (--name a b, or --name a --name b)")
    parser.add_argument("--metric", action="append", default=[], help="extra metric key to plot and tabulate")
    parser.add_argument("--smooth", type=_window, default=DEFAULT_SMOOTH,
                        help=f"moving-average window, steps, of the plotted per-step curves (the raw curve is drawn "
                             f"faint behind); 1: raw curves only (default: {DEFAULT_SMOOTH})")
    args = parser.parse_args(argv)
    if args.name and len(args.name) != len(args.runs):
        parser.error(f"got {len(args.name)} name(s) ({', '.join(args.name)}) for {len(args.runs)} runs "
                     f"({', '.join(args.runs)}): give one --name per run, in order, or none")
    try:
        runs = [load_run(spec) for spec in args.runs]
        for run in runs:
            for warning in run.warnings:
                print(f"warning: run {run.name!r}: {warning}", file=sys.stderr)
        for run, name in zip(runs, args.name):
            run.name = name
        if len({run.name for run in runs}) < len(runs):
            raise CompareError(f"runs share a name ({[r.name for r in runs]}): tell them apart with --name")
        warning = step_coverage_warning(runs)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        png, md, notes = compare_runs(runs, args.out, extra_metrics=tuple(args.metric), smooth=args.smooth)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {png}\nwrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
