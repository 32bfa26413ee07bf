"""The command line of ``python -m pion_rl.evaluate``: sample k responses per problem, score, write the table.

    python -m pion_rl.evaluate --model NAME=PATH [--model NAME=PATH ...] --data FILE.parquet [FILE ...]
        [--k aime24=32,aime25=32,amc23=8,minerva=4,olympiadbench=8] [--backend vllm|hf]
        [--temperature T] [--top-p P] [--max-new-tokens N] [--seed S] [--mode strict|math_verify|paper]
        [--devices 0,1,...] [--devices-per-model G] --out DIR

Generation is spread over the node's GPUs (:mod:`.schedule`): models in parallel, each split over several
GPUs' worth of jobs when there are more GPUs than models; on a CPU machine the hf backend runs here (naming
``--devices`` there is an error).

Every input (the data's verl columns, each model's config and tokenizer, ``--out``) is checked before a model
is loaded; a bad one is one line on stderr (``python -m pion_rl.evaluate: error: ...``, no usage block) and
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from pion_rl.reward import MODES, compute_score
from pion_rl.row_schema import schema_problem
from pion_rl.verl_plugin.preflight import HUB_ID

from . import paper, worker
from .generation import Request, Sampling, chat_prompts
from .results import benchmark_result, write_results
from .schedule import JobResult, device_groups, plan_jobs, run_jobs, visible_devices, worker_launcher

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
                    "DIR/results.json (every sample's score), DIR/responses.jsonl.gz (every sample's text and "
                    "score) and DIR/table.md (the paper's Table 3 layout).",
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
    parser.add_argument("--mode", choices=MODES, default="paper",
                        help="pion_rl.reward's matching mode (paper: verl's math_reward verdict, as the recipes' reward)")
    parser.add_argument("--devices", default=None, metavar="ID,...",
                        help="CUDA device ids (as CUDA_VISIBLE_DEVICES names them) to spread the models over "
                             "(default: every visible GPU; none on a CPU machine; '' for none)")
    parser.add_argument("--devices-per-model", type=int, default=1, metavar="G",
                        help="GPUs per model: vLLM's tensor-parallel size (default 1: one model per GPU)")
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
        if args.backend == "hf" and args.devices_per_model != 1:
            raise ValueError("--devices-per-model > 1 splits a model with vLLM's tensor parallelism: use "
                             "--backend vllm, or 1 with the hf backend")
        devices = visible_devices() if args.devices is None else visible_devices(cuda_visible=args.devices)
        if args.backend == "hf" and devices and not _cuda_device_count():
            if args.devices is not None:
                raise ValueError(f"--devices {args.devices}: torch sees no CUDA device on this machine, so the hf "
                                 "backend runs on its CPU: leave --devices out")
            devices = []  # CUDA_VISIBLE_DEVICES names devices that are not there: the CPU, as above
        args.groups = device_groups(devices, args.devices_per_model)
        args.out = str(_out_dir(args.out))
    except ValueError as error:
        parser.error(str(error))
    return args


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count()


def _out_dir(out: str) -> Path:
    """``--out`` as a path, if it is a directory this process can write into or can create; the results are
    written only after generation, so a path they cannot go to must fail here."""
    path = Path(out).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, not a directory: name a new or existing directory "
                         "for the results")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable: name a directory you can write into")
    return path


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
        problem = schema_problem(path)
        if problem:
            raise ValueError(f"--data {file} {problem}: pass verl rows (data_prep/*.py writes them)")
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"--data {file}: not a readable parquet file ({error})") from None
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


def check_tokenizer(model_dir: str, request: Request) -> None:
    """Raise ValueError unless ``model_dir`` holds a tokenizer that turns ``request`` into a prompt.

    transformers 5 builds an empty tokenizer of the config's type when a directory has none of its files, which
    fails only later, at the prompt; here its missing files are named instead."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    files = sorted(set(tokenizer.vocab_files_names.values()) | {"tokenizer.json"})  # the fast format any class reads
    if not any((Path(model_dir) / file).is_file() for file in files):
        raise ValueError(f"{model_dir} has no tokenizer (none of {', '.join(files)}): copy the tokenizer files of "
                         "the model it was trained from into it")
    chat_prompts(tokenizer, [request])


def _generation_max_new_tokens(model: str) -> int | None:
    """``max_new_tokens`` of a local model directory's generation_config.json (the length it was trained to
    answer in, e.g. the CPU demo's policies), or None."""
    path = Path(model) / "generation_config.json"
    return json.loads(path.read_text()).get("max_new_tokens") if path.is_file() else None


def generate_all(args: argparse.Namespace, model_dirs: dict[str, str], requests: list[Request],
                 samplings: dict[str, Sampling]) -> list[JobResult]:
    """Every model's responses to ``requests``, as the jobs :mod:`.schedule` plans over ``args.groups``.

    On a CPU machine the hf backend runs in this process, one model after another; otherwise each job is a
    worker process on its device group (vLLM frees a GPU only when its process ends).
    """
    jobs = plan_jobs(list(model_dirs), len(requests), len(args.groups))

    def spec_of(job, group):
        part = f" part {job.part}/{job.parts}" if job.parts > 1 else ""
        label = f"{job.model}{part}" + (f" on GPU {','.join(group)}" if group else "")
        return worker.job_spec(args.backend, model_dirs[job.model], label, [requests[i] for i in job.indices],
                               samplings[job.model], max(1, len(group)))

    if args.backend == "hf" and args.groups == [()]:
        results, origin = [], time.perf_counter()
        for job in jobs:
            started = time.perf_counter()
            responses = worker.generate(spec_of(job, ()))
            results.append(JobResult(job, (), responses, started - origin, time.perf_counter() - started))
        return results
    with tempfile.TemporaryDirectory(prefix="pion-rl-evaluate-") as workdir:
        return run_jobs(jobs, args.groups, worker_launcher(spec_of, workdir))


def score(args: argparse.Namespace, responses: list[list[str]]) -> tuple[dict[str, dict], list[dict]]:
    """One model's ``{BENCHMARK: benchmark_result(...)}`` and its records for responses.jsonl.gz (per problem:
    benchmark, problem number, prompt, ground truth, every sample's text and score)."""
    out, records, position = {}, [], 0
    for b in args.rows:
        scores = []
        for number, row in enumerate(args.rows[b]):
            texts = responses[position]
            scores.append([compute_score(b, text, row["ground_truth"], mode=args.mode)["score"] for text in texts])
            records.append({"benchmark": b, "problem": number, "prompt": row["messages"],
                            "ground_truth": row["ground_truth"],
                            "samples": [{"text": t, "score": float(v)} for t, v in zip(texts, scores[-1])]})
            position += 1
        out[b] = benchmark_result(scores)
    return out, records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pion_rl.verl_plugin.checkpoint import config_dir, hf_model_dir

    out = Path(args.out)
    requests = [Request(row["messages"], args.k[b], index)
                for index, (b, row) in enumerate((b, row) for b in args.rows for row in args.rows[b])]
    bases, lengths = {}, {}
    for name, path in args.models.items():  # every model checked before anything is exported or loaded
        try:
            found = path if not Path(path).is_dir() else str(config_dir(path))
            config = model_config(found)
            if Path(path).is_dir():
                check_tokenizer(found, requests[0])
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
    samplings = {name: Sampling(args.temperature, args.top_p, lengths[name], args.seed) for name in model_dirs}
    started = time.perf_counter()
    try:
        results = generate_all(args, model_dirs, requests, samplings)
    except RuntimeError as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    wall_s = time.perf_counter() - started
    responses = {name: [None] * len(requests) for name in model_dirs}
    for result in results:
        for index, texts in zip(result.job.indices, result.responses):
            responses[result.job.model][index] = texts
    settings["timing"] = {
        "generation_wall_s": wall_s, "device_groups": [",".join(g) for g in args.groups if g],
        "jobs": [{"model": r.job.model, "part": r.job.part, "parts": r.job.parts, "devices": ",".join(r.devices),
                  "problems": len(r.job.indices), "start_s": r.start_s, "seconds": r.seconds} for r in results],
    }
    models, records = {}, []
    for name in model_dirs:
        models[name], model_records = score(args, responses[name])
        records += [{"model": name, **record} for record in model_records]
    paths = write_results(out, settings, models, records)
    print(paths[-1].read_text())
    where = (f"{len(args.groups)} device group(s) ({'; '.join(settings['timing']['device_groups'])})"
             if args.groups != [()] else "this machine")
    print(f"generated {len(results)} job(s) for {len(model_dirs)} model(s) on {where} in {wall_s:.0f} s; wrote "
          + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0
