"""The demo's `summary.md` and curves, rebuilt from the complete runs in out_dir (whichever invocations made them).

The summary says which runs it holds, their settings where they differ, and, for each table, how its numbers
were measured: the held-out accuracy logged during training (training temperature, a fraction) is not the
final evaluation's (the paper's sampling, in percent).
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
from pathlib import Path

from pion_rl.compare import compare_runs, load_run
from pion_rl.evaluate import paper

from .config import OPTIMIZERS, DemoConfig
from .evaluation import evaluate_policies
from .problems import load_split
from .seeds import OptimizerRuns, run_name, seed_list, spread_table
from .tracking import committed_settings, jsonl_path
from .train import HELDOUT_ACC, OPTIMIZER_STEP_S, SPECTRUM_DRIFT

DISPLAY_NAMES = {"adamw": "AdamW", "muon": "Muon", "pion": "Pion"}
#: Settings that do not change what a run computes, left out of the "differ between runs" line.
NOT_COMPARED = ("optimizer", "out_dir", "threads", "wandb", "log_every")


def runs_on_disk(out_dir: Path) -> list[OptimizerRuns]:
    """Every optimizer's latest complete runs in `out_dir`, in the order adamw, muon, pion."""
    groups, fields = [], {f.name for f in dataclasses.fields(DemoConfig)}
    for optimizer in OPTIMIZERS:
        settings = committed_settings(out_dir, optimizer)
        if settings is None:
            continue
        config = DemoConfig(**{key: value for key, value in settings.items() if key in fields})
        runs = []
        for seed in seed_list(config):
            run = load_run(str(jsonl_path(out_dir, run_name(config, optimizer, seed))))
            run.name = run_name(config, optimizer, seed)
            runs.append(run)
        groups.append(OptimizerRuns(optimizer, config, runs))
    return groups


def title(groups: list[OptimizerRuns]) -> str:
    return "pion-rl CPU demo: GRPO with " + " vs ".join(DISPLAY_NAMES[group.optimizer] for group in groups)


def summary_preamble(groups: list[OptimizerRuns]) -> str:
    """What was trained, the protocol of the held-out accuracy, and per optimizer that accuracy before / after
    GRPO, the spectral drift and the optimizer's own step time."""
    first = groups[0].config
    lines = [
        f"Runs: the latest complete run of each optimizer in `{first.out_dir}/runs` "
        f"({', '.join(f'{g.optimizer}: {g.config.steps} steps' for g in groups)}).",
        "",
        (
            f"GRPO on synthetic arithmetic (pion_rl/demo/data), tiny Qwen3 ({first.num_layers} layers, hidden "
            f"{first.hidden_size}), {first.steps} steps x {first.prompts_per_step} prompts x {first.group_size} "
            f"samples, lr {first.lr} for every optimizer, KL loss {first.kl_loss_coef} (low_var_kl), clip "
            f"{first.clip_ratio}."
        ),
    ]
    differ = differing_settings(groups)
    if differ:
        lines.append(f"Settings that differ between these runs: {differ}.")
    lines += [
        "",
        (
            f"Held-out accuracy in this table and the curves (training protocol): the fraction of correct answers "
            f"among {first.eval_samples} samples per problem at the training temperature T={first.temperature}, "
            f"on {first.eval_problems} problems never trained on; step 0 is the supervised warm start. It is not "
            f"the final evaluation's accuracy at the end of this page (T={paper.TEMPERATURE}, top-p {paper.TOP_P}, "
            "in percent): sampling at "
            "a lower temperature picks the policy's likelier answers, so it usually scores higher. Optimizer step: "
            "`optimizer.step()` alone (`actor/optim/step_s`), median over the run's steps, with its min-max; "
            "generation and the backward pass are not in it."
        ),
        "",
        (
            "| optimizer | held-out acc, warm start | held-out acc, after GRPO | change | max rel. change of "
            "a singular value | optimizer step, ms (min-max) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for group in groups:
        run = group.mean()
        heldout = run.history[HELDOUT_ACC.format(n=group.config.eval_samples)].dropna()
        drift = run.history[SPECTRUM_DRIFT].dropna() if SPECTRUM_DRIFT in run.history else []
        step_ms = [1e3 * value for r in group.runs for value in r.history[OPTIMIZER_STEP_S].dropna()]
        start, end = heldout.iloc[0], heldout.iloc[-1]
        lines.append(
            f"| {run.name} | {start:.3f} | {end:.3f} | {end - start:+.3f} "
            f"| {f'{drift.iloc[-1]:.1e}' if len(drift) else '-'} "
            f"| {statistics.median(step_ms):.1f} ({min(step_ms):.1f}-{max(step_ms):.1f}) |"
        )
    return "\n".join(lines) + "\n"


def differing_settings(groups: list[OptimizerRuns]) -> str:
    """`steps (adamw 250, pion 30); lr (...)` for every setting whose value is not the same in all groups."""
    parts = []
    for f in dataclasses.fields(DemoConfig):
        values = {group.optimizer: getattr(group.config, f.name) for group in groups}
        if f.name not in NOT_COMPARED and len(set(values.values())) > 1:
            parts.append(f"{f.name} ({', '.join(f'{name} {value}' for name, value in values.items())})")
    return "; ".join(parts)


def write_summary(out_dir: Path, evaluate: bool = True) -> Path:
    """Rebuild `out_dir/summary.md` and `reward_curves.png` from the runs on disk; with `evaluate`, score
    their final policies with `pion_rl.evaluate` into `out_dir/eval` and append that table; without, the old
    evaluation (of other policies) is removed and the summary says it was not run. Returns summary.md."""
    groups = runs_on_disk(out_dir)
    _, md, _ = compare_runs(
        [group.mean() for group in groups],
        out_dir,
        extra_metrics=("actor/kl_loss",),  # the comparer adds the optimizer telemetry's panels itself
        title=title(groups),
        preamble=summary_preamble(groups) + spread_table(groups),
    )
    heading = "## Final policies, evaluated with python -m pion_rl.evaluate --backend hf"
    if evaluate:
        config = groups[0].config
        table = evaluate_policies(config, [g.optimizer for g in groups], load_split("heldout")[: config.eval_problems])
        body = table.split("\n", 1)[1].strip("\n").replace("\n## ", "\n### ")  # under this section's heading
    else:
        shutil.rmtree(out_dir / "eval", ignore_errors=True)
        body = "Not evaluated: the demo was interrupted before its evaluation. Run the demo again to evaluate."
    sampling = f"the paper's sampling: T={paper.TEMPERATURE}, top-p {paper.TOP_P}"
    md.write_text(f"{md.read_text()}\n{heading} ({sampling})\n\n{body}\n")
    return md
