"""The statistics of the evaluation table, as pure functions on per-sample scores.

Shapes: ``scores`` is (n_problems, k): the score (0 or 1) of sample j of problem i. Every statistic treats
the problem as the unit of sampling (the k samples of one problem are not independent draws of accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def avg_at_k(scores: Sequence[Sequence[float]]) -> float:
    """avg@k: the mean of all n_problems x k scores (each problem weighs the same, as every row has k)."""
    array = _matrix(scores)
    return float(array.mean())


def standard_error(scores: Sequence[Sequence[float]]) -> float | None:
    """Standard error of avg@k over problems: sample standard deviation (ddof 1) of the per-problem means
    over sqrt(n_problems). None for a single problem (no spread to estimate)."""
    per_problem = _matrix(scores).mean(axis=1)
    if len(per_problem) < 2:
        return None
    return float(per_problem.std(ddof=1) / math.sqrt(len(per_problem)))


def paired_bootstrap(
    baseline: Mapping[str, Sequence[Sequence[float]]],
    candidate: Mapping[str, Sequence[Sequence[float]]],
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Difference candidate - baseline in avg@k per benchmark and in their unweighted mean ("avg", the
    table's Avg column), each as (difference, low, high) with a percentile interval from a paired bootstrap
    over problems.

    Both models must have been scored on the same problems in the same order (k may differ). One bootstrap
    replicate draws n_problems problems with replacement in every benchmark independently, and takes the
    same problems for both models: what varies is which problems were asked, which is what makes a gap
    between optimizers real or not. The per-benchmark intervals come from the same replicates as "avg".
    """
    if set(baseline) != set(candidate) or not baseline:
        raise ValueError(f"benchmarks differ: {sorted(baseline)} vs {sorted(candidate)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    tail = 100 * (1 - confidence) / 2
    out, replicate_sum = {}, np.zeros(n_resamples)
    for name in sorted(baseline):
        a, b = _matrix(baseline[name]).mean(axis=1), _matrix(candidate[name]).mean(axis=1)
        if len(a) != len(b):
            raise ValueError(f"{name}: {len(a)} problems for one model, {len(b)} for the other; a paired "
                             "comparison needs the same problems")
        diff = b - a
        replicates = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
        replicate_sum += replicates
        out[name] = _estimate(float(diff.mean()), replicates, tail)
    mean_diff = float(np.mean([out[name][0] for name in out]))
    out["avg"] = _estimate(mean_diff, replicate_sum / len(baseline), tail)
    return out


def _estimate(point: float, replicates: np.ndarray, tail: float) -> tuple[float, float, float]:
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return point, float(low), float(high)


def _matrix(scores: Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (n_problems, k) table, got shape {array.shape}")
    return array
