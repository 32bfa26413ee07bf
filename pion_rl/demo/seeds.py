"""Several GRPO seeds per optimizer: one mean run per optimizer for the curves, and the spread table.

With ``seeds=N`` every optimizer is trained N times from the same warm start, with seeds ``seed .. seed+N-1``
(prompt order, sampling and evaluation noise). The spread over them is what a rerun on another machine, or
with other noise, may move a result by.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pandas as pd

from pion_rl.compare import Run

from .config import DemoConfig
from .train import HELDOUT_ACC, SPECTRUM_DRIFT


def run_name(config: DemoConfig, optimizer: str, seed: int) -> str:
    """The optimizer's name for a single seed, ``<optimizer>-seed<s>`` when there are several."""
    return optimizer if config.seeds == 1 else f"{optimizer}-seed{seed}"


def seed_list(config: DemoConfig) -> list[int]:
    return [config.seed + i for i in range(config.seeds)]


@dataclass
class OptimizerRuns:
    """One optimizer's latest complete runs in a demo's out_dir: the settings they ran with, and one run per
    seed (named by `run_name`)."""

    optimizer: str
    config: DemoConfig
    runs: list[Run]

    def mean(self) -> Run:
        """The run whose every metric is the mean over the seeds at each step (the run itself for one seed),
        named after the optimizer."""
        if len(self.runs) == 1:
            return Run(self.optimizer, self.runs[0].history)
        return Run(self.optimizer, pd.concat([run.history for run in self.runs]).groupby(level=0).mean())


def spread_table(groups: list[OptimizerRuns]) -> str:
    """Markdown: per optimizer run with several seeds, mean +- sample standard deviation over them of held-out
    accuracy at the warm start and after GRPO, its change, and the largest relative change of a singular
    value. Empty when every optimizer has one seed."""
    several = [group for group in groups if len(group.runs) > 1]
    if not several:
        return ""
    lines = [
        "Over several GRPO seeds from the one warm start: mean ± standard deviation; the rows above are the means.",
        "",
        "| optimizer | seeds | held-out acc, warm start | after GRPO | change | max rel. change of a singular value |",
        "|---|---|---|---|---|---|",
    ]
    for group in several:
        key = HELDOUT_ACC.format(n=group.config.eval_samples)
        start = [run.history[key].dropna().iloc[0] for run in group.runs]
        end = [run.history[key].dropna().iloc[-1] for run in group.runs]
        drift = [run.history[SPECTRUM_DRIFT].dropna().iloc[-1] for run in group.runs
                 if SPECTRUM_DRIFT in run.history and run.history[SPECTRUM_DRIFT].notna().any()]
        lines.append(
            f"| {group.optimizer} | {', '.join(map(str, seed_list(group.config)))} | {_spread(start, '.3f')} | "
            f"{_spread(end, '.3f')} | {_spread([e - s for s, e in zip(start, end)], '+.3f')} | "
            f"{_spread(drift, '.1e') if drift else '-'} |"
        )
    return "\n" + "\n".join(lines) + "\n"


def _spread(values: list[float], spec: str) -> str:
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec.lstrip('+')}}"
