"""`python -m pion_rl.demo [optimizer=adamw|muon|pion|all] [key=value ...]`: the CPU GRPO demo.

Warm-starts a tiny Qwen3 on synthetic arithmetic (cached), trains it with GRPO once per optimizer (or
`seeds=N` times), and writes `<out_dir>/reward_curves.png` and `<out_dir>/summary.md` (keys:
`pion_rl.demo.config.DemoConfig`).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from pion_rl.compare import Run, compare_runs, load_run

from .config import DemoConfig, parse_overrides
from .evaluation import evaluate_policies
from .policy import warm_start
from .problems import load_split
from .seeds import mean_runs, run_name, seed_list, spread_table
from .tokenizer import build_tokenizer
from .tracking import clear_previous_logs
from .train import HELDOUT_ACC, SPECTRUM_DRIFT, run_grpo


def run_demo(config: DemoConfig) -> tuple[list[Run], dict[str, float]]:
    """Warm start, then `config.seeds` GRPO runs per optimizer (replacing that optimizer's earlier logs);
    returns the runs and their wall times (s), by run name (see `pion_rl.demo.seeds.run_name`). The first
    seed's final policy is the one saved and evaluated."""
    torch.set_num_threads(config.threads)
    tokenizer = build_tokenizer(merges=True)
    train_rows = load_split("train")
    heldout_rows = load_split("heldout")[: config.eval_problems]
    warm_state = warm_start(config, tokenizer, train_rows).state_dict()
    runs, seconds = [], {}
    for optimizer in config.optimizers():
        clear_previous_logs(config.out_path, optimizer)
        for seed in seed_list(config):
            name = run_name(config, optimizer, seed)
            started = time.perf_counter()
            path = run_grpo(dataclasses.replace(config, seed=seed), optimizer, warm_state, tokenizer, train_rows,
                            heldout_rows, run_name=name, save=seed == config.seed)
            run = load_run(str(path))
            run.name = name
            runs.append(run)
            seconds[name] = time.perf_counter() - started
    return runs, seconds


def summary_preamble(config: DemoConfig, runs: list[Run], seconds: dict[str, float]) -> str:
    """What was trained, and held-out accuracy before / after GRPO per optimizer."""
    key = HELDOUT_ACC.format(n=config.eval_samples)
    lines = [
        (
            f"GRPO on synthetic arithmetic (pion_rl/demo/data), tiny Qwen3 ({config.num_layers} layers, hidden "
            f"{config.hidden_size}), {config.steps} steps x {config.prompts_per_step} prompts x "
            f"{config.group_size} samples, lr {config.lr} for every optimizer, KL loss {config.kl_loss_coef} "
            f"(low_var_kl), clip {config.clip_ratio}. Held-out accuracy: avg@{config.eval_samples} (sampled at "
            f"T={config.temperature}) on {config.eval_problems} problems never trained on; step 0 is the "
            "supervised warm start."
        ),
        "",
        (
            "| optimizer | held-out acc, warm start | held-out acc, after GRPO | change | max rel. change of "
            "a singular value | wall time (s) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        heldout = run.history[key].dropna()
        drift = run.history[SPECTRUM_DRIFT].dropna() if SPECTRUM_DRIFT in run.history else []
        lines.append(
            f"| {run.name} | {heldout.iloc[0]:.3f} | {heldout.iloc[-1]:.3f} | {heldout.iloc[-1] - heldout.iloc[0]:+.3f} "
            f"| {f'{drift.iloc[-1]:.1e}' if len(drift) else '-'} | {seconds[run.name]:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    config = parse_overrides(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    seed_runs, seed_seconds = run_demo(config)
    runs, seconds = mean_runs(config, seed_runs, seed_seconds)
    png, md, _ = compare_runs(
        runs,
        config.out_path,
        extra_metrics=("actor/kl_loss",),  # the comparer adds the optimizer telemetry's panels itself
        title="pion-rl CPU demo: GRPO with AdamW vs Muon vs Pion",
        preamble=summary_preamble(config, runs, seconds) + spread_table(config, seed_runs),
        smooth=5,
    )
    evaluation = evaluate_policies(config, [run.name for run in runs], load_split("heldout")[: config.eval_problems])
    body = evaluation.split("\n", 1)[1].strip("\n").replace("\n## ", "\n### ")  # under this section's heading
    md.write_text(f"{md.read_text()}\n## Final policies, evaluated with python -m pion_rl.evaluate --backend hf\n\n"
                  f"{body}\n")
    print(md.read_text().split("![curves]")[0])
    print(f"done in {time.perf_counter() - started:.0f} s\nreward curves: {png}\nsummary: {md}")
    print(f"run logs: {config.out_path / 'runs'}, {config.out_path / 'wandb'}/<optimizer> (each run of an optimizer "
          f"replaces its previous logs)")


if __name__ == "__main__":
    main()
