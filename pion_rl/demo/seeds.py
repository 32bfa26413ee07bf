"""Several GRPO seeds per optimizer: one mean run per optimizer for the curves, and the spread table.

With ``seeds=N`` every optimizer is trained N times from the same warm start, with seeds ``seed .. seed+N-1``
(prompt order, sampling and evaluation noise). The spread over them is what a rerun on another machine, or
with other noise, may move a result by.
"""

from __future__ import annotations

import statistics

import pandas as pd

from pion_rl.compare import Run

from .config import DemoConfig
from .train import HELDOUT_ACC, SPECTRUM_DRIFT


def run_name(config: DemoConfig, optimizer: str, seed: int) -> str:
    """The optimizer's name for a single seed, ``<optimizer>-seed<s>`` when there are several."""
    return optimizer if config.seeds == 1 else f"{optimizer}-seed{seed}"


def seed_list(config: DemoConfig) -> list[int]:
    return [config.seed + i for i in range(config.seeds)]


def mean_runs(config: DemoConfig, runs: list[Run], seconds: dict[str, float]) -> tuple[list[Run], dict[str, float]]:
    """Per optimizer, the run whose every metric is the mean over its seeds at each step, and the seeds'
    total wall time (s). With one seed, the runs themselves."""
    if config.seeds == 1:
        return runs, seconds
    means, totals = [], {}
    for optimizer in config.optimizers():
        names = [run_name(config, optimizer, seed) for seed in seed_list(config)]
        histories = [run.history for run in runs if run.name in names]
        means.append(Run(optimizer, pd.concat(histories).groupby(level=0).mean()))
        totals[optimizer] = sum(seconds[name] for name in names)
    return means, totals


def spread_table(config: DemoConfig, runs: list[Run]) -> str:
    """Markdown: per optimizer, mean +- sample standard deviation over the seeds of held-out accuracy at the
    warm start and after GRPO, its change, and the largest relative change of a singular value. Empty for
    one seed."""
    if config.seeds == 1:
        return ""
    key = HELDOUT_ACC.format(n=config.eval_samples)
    lines = [
        f"Over {config.seeds} GRPO seeds ({', '.join(map(str, seed_list(config)))}) from the one warm start: "
        "mean ± standard deviation; the rows above are the means.",
        "",
        "| optimizer | held-out acc, warm start | after GRPO | change | max rel. change of a singular value |",
        "|---|---|---|---|---|",
    ]
    for optimizer in config.optimizers():
        names = {run_name(config, optimizer, seed) for seed in seed_list(config)}
        mine = [run for run in runs if run.name in names]
        start = [run.history[key].dropna().iloc[0] for run in mine]
        end = [run.history[key].dropna().iloc[-1] for run in mine]
        drift = [run.history[SPECTRUM_DRIFT].dropna().iloc[-1] for run in mine
                 if SPECTRUM_DRIFT in run.history and run.history[SPECTRUM_DRIFT].notna().any()]
        lines.append(
            f"| {optimizer} | {_spread(start, '.3f')} | {_spread(end, '.3f')} | "
            f"{_spread([e - s for s, e in zip(start, end)], '+.3f')} | {_spread(drift, '.1e') if drift else '-'} |"
        )
    return "\n" + "\n".join(lines) + "\n"


def _spread(values: list[float], spec: str) -> str:
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec.lstrip('+')}}"
