"""The command line of ``python -m pion_rl.evaluate``: sample k responses per problem, score, write the table.

    python -m pion_rl.evaluate --model NAME=PATH [--model NAME=PATH ...] --data FILE.parquet [FILE ...]
        [--k aime24=32,aime25=32,amc23=8,minerva=4,olympiadbench=8] [--backend vllm|hf]
        [--temperature T] [--top-p P] [--max-new-tokens N] [--seed S] [--mode strict|math_verify] --out DIR

Every input is checked before a model is loaded; a bad one is one line on stderr (``python -m
pion_rl.evaluate: error: ...``, no usage block) and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import multiprocessing
import sys
from collections import defaultdict
from pathlib import Path

from pion_rl.reward import MODES, compute_score
from pion_rl.verl_plugin.preflight import HUB_ID

from . import paper
from .generation import Progress, Request, Sampling
from .results import benchmark_result, write_results

BACKENDS = ("vllm", "hf")
PROG = "python -m pion_rl.evaluate"
#: Response length when the model is none of the paper's base models and its generation_config.json sets none
#: (the Qwen3-1.7B recipe's).
DEFAULT_MAX_NEW_TOKENS = 4096


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad input as its one line, without the usage block above it (--help has that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_k = ",".join(f"{b}={k}" for b, k in paper.DEFAULT_K.items())
    parser = _OneLineParser(
        prog=PROG,
        description="avg@k of one or more models on verl-parquet benchmarks, scored with pion_rl.reward; writes "
                    "DIR/results.json (every sample's score) and DIR/table.md (the paper's Table 3 layout).",
    )
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a Hugging Face model directory or a verl checkpoint (run, global_step_N or actor "
                             "directory; exported to DIR/exported/NAME first if it has no HF weights); repeatable")
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE",
                        help="verl parquet files (data_prep's); the benchmark of a row is its data_source")
    parser.add_argument("--k", default="", metavar="BENCH=K,...",
                        help=f"samples per problem, per benchmark, on top of the paper's ({default_k})")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="vllm (GPU; the default when vllm imports) or hf (transformers generate)")
    parser.add_argument("--temperature", type=float, default=paper.TEMPERATURE)
    parser.add_argument("--top-p", type=float, default=paper.TOP_P)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="response length (default: the paper recipe's for the model's base, else the model's "
                             "generation_config.json max_new_tokens, else 4096)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="strict", help="pion_rl.reward's matching mode")
    parser.add_argument("--out", required=True, metavar="DIR")
    args = parser.parse_args(argv)
    try:
        args.models = _model_specs(args.model)
        given_k = _k_specs(args.k)
        args.rows = _read_rows(args.data)
        unknown = sorted(set(given_k) - set(args.rows))
        if unknown:
            raise ValueError(f"--k names benchmark(s) {', '.join(unknown)} that the data does not hold; its "
                             f"benchmarks (data_source) are {', '.join(sorted(args.rows))}")
        args.k = {**paper.DEFAULT_K, **given_k}
        missing = sorted(set(args.rows) - set(args.k))
        if missing:
            raise ValueError(f"no k for benchmark(s) {missing}: add them to --k, e.g. --k {missing[0]}=4")
        if args.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
        if not 0 < args.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.max_new_tokens is not None and args.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        args.backend = args.backend or ("vllm" if importlib.util.find_spec("vllm") else "hf")
        if args.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError("--backend vllm needs vLLM (pip install -r verl/requirements-gpu.txt); "
                             "on a CPU use --backend hf")
    except ValueError as error:
        parser.error(str(error))
    return args


def _model_specs(specs: list[str]) -> dict[str, str]:
    """NAME -> a local directory, or a Hugging Face Hub id (``org/name``) that transformers / vLLM fetch."""
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--model {spec!r}: expected NAME=PATH")
        if name in models:
            raise ValueError(f"--model name {name!r} is given twice")
        local = Path(path).expanduser()
        if local.is_dir():
            models[name] = str(local)
        elif HUB_ID.fullmatch(path) and not local.exists():
            models[name] = path
        else:
            raise ValueError(f"--model {name}: {path} is not a directory (nor a Hub id such as Qwen/Qwen3-1.7B)")
    return models


def _k_specs(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--k {item!r}: expected BENCHMARK=K with K a positive integer")
        out[name.strip()] = int(value)
    return out


def _read_rows(files: list[str]) -> dict[str, list[dict]]:
    """Rows per benchmark (data_source), in file order: {"messages", "ground_truth"}."""
    import pandas as pd

    rows = defaultdict(list)
    for file in files:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ValueError(f"--data {file}: no such file")
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"--data {file}: not a readable parquet file ({error})") from None
        missing = {"data_source", "prompt", "reward_model"} - set(frame.columns)
        if missing:
            raise ValueError(f"--data {file}: missing column(s) {sorted(missing)}; expected verl rows "
                             "(data_prep/*.py writes them)")
        for index, row in enumerate(frame.to_dict("records")):
            truth = (row["reward_model"] or {}).get("ground_truth")
            messages = [dict(m) for m in row["prompt"]]
            if truth is None or not messages:
                raise ValueError(f"--data {file}: row {index} has no prompt or no reward_model.ground_truth")
            rows[row["data_source"]].append({"messages": messages, "ground_truth": truth})
    if not rows:
        raise ValueError(f"--data {' '.join(files)}: no rows")
    return dict(rows)


def model_config(model: str) -> dict:
    """A model directory's or Hub id's config as a dict (``architectures``, ``hidden_size``, ...)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model).to_dict()


def _generation_max_new_tokens(model: str) -> int | None:
    """``max_new_tokens`` of a local model directory's generation_config.json (the length it was trained to
    answer in, e.g. the CPU demo's policies), or None."""
    path = Path(model) / "generation_config.json"
    return json.loads(path.read_text()).get("max_new_tokens") if path.is_file() else None


def evaluate_model(name: str, model_dir: str, args: argparse.Namespace, sampling: Sampling) -> dict[str, dict]:
    """Sample, score and summarise one model on every benchmark: {BENCHMARK: benchmark_result(...)}."""
    benchmarks = list(args.rows)
    requests = [Request(row["messages"], args.k[b]) for b in benchmarks for row in args.rows[b]]
    progress = Progress(f"{name}", len(requests))
    backend = importlib.import_module(f"pion_rl.evaluate.{args.backend}")
    if args.backend == "vllm":
        # One process per model: vLLM frees the GPU only when its process ends.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            responses = pool.apply(backend.generate, (model_dir, requests, sampling, progress))
    else:
        responses = backend.generate(model_dir, requests, sampling, progress)
    out, position = {}, 0
    for b in benchmarks:
        scores = []
        for row in args.rows[b]:
            scores.append([compute_score(b, text, row["ground_truth"], mode=args.mode)["score"]
                           for text in responses[position]])
            position += 1
        out[b] = benchmark_result(scores)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pion_rl.verl_plugin.checkpoint import config_dir, hf_model_dir

    out = Path(args.out)
    bases, lengths = {}, {}
    for name, path in args.models.items():  # every model checked before anything is exported or loaded
        try:
            found = path if not Path(path).is_dir() else str(config_dir(path))
            config = model_config(found)
        except (OSError, ValueError) as error:
            print(f"{PROG}: error: --model {name}: {_one_line(error)}", file=sys.stderr)
            return 2
        base = paper.base_model_of(config)
        bases[name] = base.label if base else None
        lengths[name] = (args.max_new_tokens or (base.max_response_length if base else None)
                         or _generation_max_new_tokens(found) or DEFAULT_MAX_NEW_TOKENS)
    model_dirs = {name: path if not Path(path).is_dir() else str(hf_model_dir(path, out / "exported" / name))
                  for name, path in args.models.items()}
    settings = {
        "backend": args.backend, "temperature": args.temperature, "top_p": args.top_p,
        "max_new_tokens": lengths, "seed": args.seed, "mode": args.mode,
        "k": {b: args.k[b] for b in args.rows}, "data": [str(Path(f).expanduser()) for f in args.data],
        "models": args.models, "model_dirs": model_dirs, "base_models": bases,
    }
    models = {}
    for name, model_dir in model_dirs.items():
        sampling = Sampling(args.temperature, args.top_p, lengths[name], args.seed)
        models[name] = evaluate_model(name, model_dir, args, sampling)
    json_path, table_path = write_results(out, settings, models)
    print(table_path.read_text())
    print(f"wrote {json_path} and {table_path}", file=sys.stderr)
    return 0
