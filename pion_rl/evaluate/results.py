"""The evaluation's files: ``results.json`` (every sample's score), ``responses.jsonl.gz`` (every sample's
text beside its score) and ``table.md`` (Table 3 layout).

results.json::

    {"settings": {..., "timing": {"generation_wall_s": float, "device_groups": [...], "jobs": [...]}},
     "models": {NAME: {BENCHMARK: {"avg": float, "se": float | null, "k": int, "n_problems": int,
                                   "scores": [[score of sample j of problem i, ...], ...]}}}}

responses.jsonl.gz, one line per model and problem (gzip: ``zcat responses.jsonl.gz | head -1`` shows one)::

    {"model": NAME, "benchmark": str, "problem": i, "prompt": [chat messages], "ground_truth": str,
     "samples": [{"text": str, "score": float}, ...]}

``table.md`` is rendered from results.json's content alone, so it can be rebuilt from a results.json.
"""

from __future__ import annotations

import gzip
import json
import math
from itertools import combinations
from pathlib import Path

from .paper import BASE_MODELS, BENCHMARKS, HEADERS
from .stats import avg_at_k, paired_bootstrap, standard_error

RESULTS_FILE = "results.json"
RESPONSES_FILE = "responses.jsonl.gz"
TABLE_FILE = "table.md"
CONFIDENCE = 0.95
N_RESAMPLES = 10_000


def benchmark_result(scores: list[list[float]]) -> dict:
    """One model on one benchmark: avg@k, its standard error over problems, and every score kept."""
    return {"avg": avg_at_k(scores), "se": standard_error(scores), "k": len(scores[0]), "n_problems": len(scores),
            "scores": [[float(s) for s in row] for row in scores]}


def write_results(out_dir: str | Path, settings: dict, models: dict[str, dict[str, dict]],
                  responses: list[dict]) -> tuple[Path, Path, Path]:
    """Write ``results.json``, ``responses.jsonl.gz`` (``responses``: its lines, as the module docstring
    shows) and ``table.md`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {"settings": settings, "models": models}
    json_path, responses_path, table_path = out / RESULTS_FILE, out / RESPONSES_FILE, out / TABLE_FILE
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    with gzip.open(responses_path, "wt", encoding="utf-8") as stream:
        stream.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in responses)
    table_path.write_text(render_table(results))
    return json_path, responses_path, table_path


def read_results(path: str | Path) -> dict:
    """A results.json (or the directory holding one) as written by `write_results`."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    results = json.loads(path.read_text())
    if not isinstance(results, dict) or not {"settings", "models"} <= set(results):
        raise ValueError(f"{path} is not an evaluation results file (needs 'settings' and 'models')")
    return results


def column_order(benchmarks) -> list[str]:
    """Table 3's benchmarks in the paper's order, then any others alphabetically."""
    return [b for b in BENCHMARKS if b in benchmarks] + sorted(set(benchmarks) - set(BENCHMARKS))


def render_table(results: dict, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE) -> str:
    """Markdown: avg@k per benchmark and Avg in percent (± standard error over problems) per model, the paper's
    Table 3 rows for the same base model(s), and every pair's differences with paired-bootstrap intervals."""
    settings, models = results["settings"], results["models"]
    names = list(models)
    columns = column_order({b for name in names for b in models[name]})
    for name in names:
        if set(models[name]) != set(columns):
            raise ValueError(f"model {name!r} was evaluated on {sorted(models[name])}, others on {columns}")
    k = {b: models[names[0]][b]["k"] for b in columns}
    header = "| Model | " + " | ".join(f"{HEADERS.get(b, b)} (avg@{k[b]})" for b in columns) + " | Avg |"
    rule = "|---" * (len(columns) + 2) + "|"
    lines = [
        "# Evaluation: avg@k accuracy (%)",
        "",
        _settings_line(settings),
        "",
        header,
        rule,
    ]
    for name in names:
        cells = [_percent(models[name][b]["avg"], models[name][b]["se"]) for b in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_percent(*_mean_with_se(models[name], columns))} |")
    lines += _paper_rows(settings.get("base_models", {}), names, columns)
    lines += ["", "± is the standard error over problems. Avg is the unweighted mean of the benchmark columns."]
    if len(names) > 1:
        lines += _difference_table(models, names, columns, n_resamples, confidence, settings.get("seed", 0))
    return "\n".join(lines) + "\n"


def _settings_line(settings: dict) -> str:
    parts = [f"{key} {settings[key]}" for key in ("backend", "temperature", "top_p", "seed", "mode") if key in settings]
    lengths = settings.get("max_new_tokens")
    if isinstance(lengths, dict) and len(set(lengths.values())) == 1:
        lengths = next(iter(lengths.values()))
    if isinstance(lengths, dict):
        lengths = ", ".join(f"{name} {n}" for name, n in lengths.items())
    if lengths is not None:
        parts.append(f"max_new_tokens {lengths}")
    line = ("Settings: " + ", ".join(parts) + f". Every sample's score is in {RESULTS_FILE}, its text beside it "
            f"in {RESPONSES_FILE}.")
    timing = settings.get("timing")
    if timing:
        groups = timing["device_groups"]
        where = f"on {len(groups)} device group(s) ({'; '.join(groups)})" if groups else "without device groups"
        line += (f" Generation: {len(timing['jobs'])} job(s) {where}, {timing['generation_wall_s']:.0f} s wall "
                 "time (model loading included).")
    return line


def _paper_rows(base_models: dict[str, str | None], names: list[str], columns: list[str]) -> list[str]:
    labels = [label for label in dict.fromkeys(base_models.get(n) for n in names) if label]
    bases = [b for b in BASE_MODELS if b.label in labels]
    if not bases or not set(columns) & set(BENCHMARKS):
        known = ", ".join(b.label for b in BASE_MODELS)
        return ["", f"No rows from the paper: it reports only {', '.join(BENCHMARKS)} for base models {known}."]
    lines = []
    for base in bases:
        for row, cells in base.rows.items():
            by_benchmark = dict(zip(BENCHMARKS, cells))
            shown = [by_benchmark.get(b, "–") for b in columns]
            lines.append(f"| paper: {base.label} {row} | " + " | ".join(shown) + f" | {cells[-1]} |")
    note = ("Rows marked paper are the paper's Table 3 as reported (avg@k with the k above, T=0.6, top-p 0.95; "
            "no intervals).")
    if set(columns) != set(BENCHMARKS):
        note += f" Their Avg is over {', '.join(BENCHMARKS)}; this table's Avg is over its own columns."
    return lines + ["", note]


def _difference_table(models, names, columns, n_resamples, confidence, seed) -> list[str]:
    level = f"{100 * confidence:g}%"
    lines = [
        "",
        f"## Differences between models (percentage points, {level} paired bootstrap over problems)",
        "",
        "| Comparison | " + " | ".join(HEADERS.get(b, b) for b in columns) + " | Avg |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for first, second in combinations(names, 2):
        diffs = paired_bootstrap({b: models[first][b]["scores"] for b in columns},
                                 {b: models[second][b]["scores"] for b in columns},
                                 n_resamples=n_resamples, confidence=confidence, seed=seed)
        cells = [_difference(*diffs[b]) for b in columns] + [_difference(*diffs["avg"])]
        lines.append(f"| {second} − {first} | " + " | ".join(cells) + " |")
    lines += ["", f"Each cell: difference [{level} interval]; * marks an interval that excludes 0, i.e. a "
                  "difference these problems support. Resampled: which problems were asked, the same for both "
                  f"models ({n_resamples} resamples)."]
    return lines


def _mean_with_se(model: dict, columns: list[str]) -> tuple[float, float | None]:
    """Avg over benchmarks and its standard error (benchmarks are independent samples of problems)."""
    ses = [model[b]["se"] for b in columns]
    se = None if None in ses else math.sqrt(sum(s * s for s in ses)) / len(columns)
    return sum(model[b]["avg"] for b in columns) / len(columns), se


def _percent(value: float, se: float | None) -> str:
    return f"{100 * value:.2f}" + ("" if se is None else f" ± {100 * se:.2f}")


def _difference(point: float, low: float, high: float) -> str:
    mark = "*" if low > 0 or high < 0 else ""
    return f"{100 * point:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]{mark}"
