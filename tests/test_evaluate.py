"""pion_rl.evaluate: statistics against hand-computed values, the files it writes, both generation backends."""

from __future__ import annotations

import gzip
import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from pion_rl.evaluate import cli, paper, stats
from pion_rl.evaluate.generation import Progress, Request, Sampling
from pion_rl.evaluate.results import benchmark_result, read_results, render_table, write_results

# --- statistics ---------------------------------------------------------------------------------------------


def test_avg_at_k_and_standard_error_by_hand():
    scores = [[1, 0], [1, 1], [0, 0]]
    assert stats.avg_at_k(scores) == 0.5
    # per-problem means 0.5, 1, 0: sample sd 0.5, se 0.5 / sqrt(3)
    assert stats.standard_error(scores) == pytest.approx(0.5 / 3 ** 0.5, rel=1e-12)
    assert stats.standard_error([[1, 0, 1]]) is None


def test_paired_bootstrap_interval_by_hand():
    # Differences per problem 0, 0, 0, 1: a replicate's mean is X / 4 with X ~ Binomial(4, 1/4).
    # P(X = 0) = 0.316 > 2.5%, so the low end is 0; P(X >= 3) = 0.0508 > 2.5% > P(X = 4) = 0.0039: high end 0.75.
    baseline = {"b": [[0, 0], [0, 0], [0, 0], [0, 0]]}
    candidate = {"b": [[0, 0], [0, 0], [0, 0], [1, 1]]}
    out = stats.paired_bootstrap(baseline, candidate, n_resamples=40_000, seed=1)
    assert out["b"] == (0.25, 0.0, 0.75)
    assert out["avg"] == out["b"]
    # A constant per-problem difference has no spread; swapping the models flips the sign.
    same = stats.paired_bootstrap({"b": [[0, 1]] * 5}, {"b": [[1, 1]] * 5})
    assert same["b"] == (0.5, 0.5, 0.5)
    flipped = stats.paired_bootstrap(candidate, baseline, n_resamples=40_000, seed=1)
    assert flipped["b"] == (-0.25, -0.75, 0.0)


def test_bootstrap_avg_resamples_each_benchmark_and_averages():
    # Benchmark x: difference exactly 1 on every problem; benchmark y: exactly 0. Avg = 0.5, no spread.
    out = stats.paired_bootstrap({"x": [[0]] * 3, "y": [[1]] * 7}, {"x": [[1]] * 3, "y": [[1]] * 7})
    assert out["avg"] == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="same problems"):
        stats.paired_bootstrap({"x": [[0]] * 3}, {"x": [[0]] * 4})


# --- files --------------------------------------------------------------------------------------------------

# The paper's Table 3, as printed (accuracy %, AIME24 AIME25 AMC23 Minerva Olymp Avg).
PAPER_QWEN3 = {
    "base": "4.06 | 10.10 | 30.27 | 16.27 | 23.67 | 16.87",
    "AdamW": "22.71 | 20.94 | 58.43 | 25.91 | 46.09 | 34.82",
    "Muon": "20.42 | 19.27 | 54.22 | 24.08 | 42.41 | 32.08",
    "Pion": "25.42 | 21.98 | 59.94 | 26.84 | 46.43 | 36.12",
}
PAPER_R1 = {
    "base": "20.52 | 20.83 | 54.06 | 19.39 | 36.20 | 30.20",
    "AdamW": "25.42 | 23.94 | 62.65 | 23.16 | 44.69 | 35.97",
    "Muon": "29.06 | 23.33 | 66.72 | 22.89 | 44.61 | 37.32",
    "Pion": "30.00 | 24.38 | 66.87 | 23.90 | 46.43 | 38.32",
}


def _five_benchmark_results(base_label):
    rng = np.random.default_rng(0)
    models = {name: {b: benchmark_result(rng.integers(0, 2, size=(6, 4)).tolist()) for b in paper.BENCHMARKS}
              for name in ("adamw", "pion")}
    return {"settings": {"backend": "hf", "seed": 0, "base_models": {"adamw": base_label, "pion": base_label}},
            "models": models}


def test_results_json_round_trips(tmp_path):
    results = _five_benchmark_results("Qwen3-1.7B")
    results["models"]["adamw"]["aime24"] = benchmark_result([[1.0, 0.0, 1.0]])  # se None for one problem
    del results["models"]["pion"]
    json_path, _, table_path = write_results(tmp_path, results["settings"], results["models"], [])
    assert read_results(tmp_path) == results == read_results(json_path)
    assert table_path.read_text() == render_table(results)


@pytest.mark.parametrize(("label", "rows"), [("Qwen3-1.7B", PAPER_QWEN3), ("R1-Distill-1.5B", PAPER_R1)])
def test_table_has_the_papers_rows_verbatim_for_the_same_base_model(label, rows):
    table = render_table(_five_benchmark_results(label))
    for row, cells in rows.items():
        assert f"| paper: {label} {row} | {cells} |" in table
    other = PAPER_R1 if rows is PAPER_QWEN3 else PAPER_QWEN3
    assert other["AdamW"] not in table
    assert "| AIME24 (avg@4) | AIME25 (avg@4) | AMC23 (avg@4) | Minerva (avg@4) | Olymp (avg@4) | Avg |" in table


def test_table_rows_and_differences_match_the_scores():
    results = _five_benchmark_results("Qwen3-1.7B")
    models = results["models"]
    table = render_table(results)
    avg = {n: sum(models[n][b]["avg"] for b in paper.BENCHMARKS) / 5 for n in models}
    adamw_row = next(line for line in table.splitlines() if line.startswith("| adamw |"))
    assert adamw_row.split(" | ")[1] == f"{100 * models['adamw']['aime24']['avg']:.2f} ± " \
                                         f"{100 * models['adamw']['aime24']['se']:.2f}"
    assert adamw_row.split(" | ")[-1].startswith(f"{100 * avg['adamw']:.2f} ± ")
    diff_row = next(line for line in table.splitlines() if line.startswith("| pion − adamw |"))
    assert diff_row.split(" | ")[-1].startswith(f"{100 * (avg['pion'] - avg['adamw']):+.2f} [")


def test_table_without_a_paper_base_model_says_so():
    results = _five_benchmark_results(None)
    assert "No rows from the paper" in render_table(results) and "| paper:" not in render_table(results)


def test_paper_base_models_are_recognised_from_their_configs():
    qwen3 = {"architectures": ["Qwen3ForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 28}
    r1 = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536, "num_hidden_layers": 28}
    assert paper.base_model_of(qwen3).label == "Qwen3-1.7B" and paper.base_model_of(qwen3).max_response_length == 4096
    assert paper.base_model_of(r1).label == "R1-Distill-1.5B" and paper.base_model_of(r1).max_response_length == 8192
    assert paper.base_model_of({**qwen3, "num_hidden_layers": 2}) is None


# --- the hf backend end to end --------------------------------------------------------------------------------

ANSWER = "\\boxed{7}"


def write_chain_model(directory):
    """A tiny Qwen3 that answers every prompt with ANSWER then eos: its attention and MLP outputs are zero, so
    the next token is a fixed function of the current one (a chain from the prompt's last token, "\\n")."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from pion_rl.demo.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    config = Qwen3Config(vocab_size=vocab, hidden_size=vocab + 1, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model = Qwen3ForCausalLM(config)
    chain = tokenizer.encode("\n" + ANSWER, add_special_tokens=False) + [tokenizer.eos_token_id]
    successor = torch.full((vocab,), tokenizer.eos_token_id)
    successor[chain[:-1]] = torch.tensor(chain[1:])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                param.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, vocab + 1))
        model.lm_head.weight.zero_()
        model.lm_head.weight[successor, torch.arange(vocab)] = 10.0  # logit gap ~160 after the final norm
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _rows(source, truths):
    return [{"data_source": source, "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
             "reward_model": {"style": "rule", "ground_truth": t}, "extra_info": {"index": i}}
            for i, t in enumerate(truths)]


def test_hf_backend_end_to_end(tmp_path, capsys):
    model = write_chain_model(tmp_path / "model")
    pd.DataFrame(_rows("synthetic_arith", ["7", "7", "8", "7"])).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame(_rows("amc23", ["7", "12"])).to_parquet(tmp_path / "b.parquet")
    code = cli.main(["--model", f"first={model}", "--model", f"second={model}", "--data", str(tmp_path / "a.parquet"),
                     str(tmp_path / "b.parquet"), "--k", "synthetic_arith=3,amc23=2", "--backend", "hf",
                     "--max-new-tokens", "20", "--out", str(tmp_path / "out")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for name in ("first", "second"):
        arith, amc = results["models"][name]["synthetic_arith"], results["models"][name]["amc23"]
        assert arith["scores"] == [[1.0] * 3, [1.0] * 3, [0.0] * 3, [1.0] * 3]
        assert (arith["avg"], arith["k"], arith["n_problems"]) == (0.75, 3, 4)
        assert arith["se"] == pytest.approx(0.25)  # per-problem means 1, 1, 0, 1: sd 0.5 over sqrt(4)
        assert amc["scores"] == [[1.0, 1.0], [0.0, 0.0]] and amc["avg"] == 0.5
    settings = results["settings"]
    assert (settings["backend"], settings["temperature"], settings["top_p"], settings["seed"], settings["mode"]) \
        == ("hf", 0.6, 0.95, 0, "paper")
    assert settings["k"] == {"synthetic_arith": 3, "amc23": 2} and settings["base_models"] == {"first": None,
                                                                                               "second": None}
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| first | 50.00 ± 50.00 | 75.00 ± 25.00 |" in table  # AMC23 column first (the paper's order)
    assert "| second − first | +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] |" in table
    assert table in capsys.readouterr().out
    # What was graded: every sample's text beside its score, per model and problem, in the data's order.
    with gzip.open(tmp_path / "out" / "responses.jsonl.gz", "rt") as stream:
        records = [json.loads(line) for line in stream]
    assert [(r["model"], r["benchmark"], r["problem"], r["ground_truth"]) for r in records] == [
        (name, b, i, t) for name in ("first", "second")
        for b, truths in (("synthetic_arith", "7787"), ("amc23", ["7", "12"])) for i, t in enumerate(truths)]
    for record in records:
        assert record["prompt"] == [{"role": "user", "content": f"What is {record['problem']} + 1?"}]
        scores = results["models"][record["model"]][record["benchmark"]]["scores"][record["problem"]]
        assert [s["score"] for s in record["samples"]] == scores
        assert all(s["text"].strip() == ANSWER for s in record["samples"])
    assert results["settings"]["timing"]["device_groups"] == []  # a CPU machine: one model after another here


def test_models_run_in_parallel_one_per_device_group(tmp_path, monkeypatch):
    """Two devices (stand-ins on a CPU machine: each worker is told its CUDA_VISIBLE_DEVICES, and the hf backend
    runs on the CPU), two models: both run at once, one per device, with the results of a run here."""
    monkeypatch.setattr(cli, "_cuda_device_count", lambda: 2)  # the stand-ins pass for GPUs in the check of --devices
    model = write_chain_model(tmp_path / "model")
    pd.DataFrame(_rows("amc23", ["7", "12", "7"])).to_parquet(tmp_path / "a.parquet")
    common = ["--model", f"first={model}", "--model", f"second={model}", "--data", str(tmp_path / "a.parquet"),
              "--k", "amc23=2", "--backend", "hf", "--max-new-tokens", "20"]
    assert cli.main([*common, "--devices", "", "--out", str(tmp_path / "here")]) == 0
    assert cli.main([*common, "--devices", "0,1", "--out", str(tmp_path / "spread")]) == 0
    here, spread = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("here", "spread"))
    assert spread["models"] == here["models"] and here["models"]["first"]["amc23"]["avg"] == pytest.approx(2 / 3)
    first, second = spread["settings"]["timing"]["jobs"]
    assert (first["model"], first["devices"], second["model"], second["devices"]) == ("first", "0", "second", "1")
    assert second["start_s"] < first["start_s"] + first["seconds"]  # the second started before the first ended


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "amc23=0"], "expected BENCHMARK=K"),
        (["--data", "/nowhere.parquet"], "no such file"),
        (["--model", "broken"], "expected NAME=PATH"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--backend", "vllm"], "--backend vllm needs vLLM"),
        (["--k", "synthetic_arith=1,arith=2"], "--k names benchmark(s) arith that the data does not hold; its "
                                               "benchmarks (data_source) are synthetic_arith"),
        (["--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),  # argparse's own errors too
        (["--out"], "argument --out: expected one argument"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(tmp_path, capsys, args, message):
    import importlib.util

    if "vllm" in args and importlib.util.find_spec("vllm"):
        pytest.skip("vLLM is installed here")
    pd.DataFrame(_rows("synthetic_arith", ["1"])).to_parquet(tmp_path / "a.parquet")
    base = {"--model": f"m={tmp_path}", "--data": str(tmp_path / "a.parquet"), "--k": "synthetic_arith=1",
            "--backend": "hf", "--out": str(tmp_path / "out")}
    base.update(dict(zip(args[::2], args[1::2] or [None])))
    with pytest.raises(SystemExit) as exit_info:
        cli.main([x for pair in base.items() for x in pair if x is not None])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err
    assert err.startswith("python -m pion_rl.evaluate: error: ") and err.count("\n") == 1, err  # no usage block
    assert not (tmp_path / "out").exists()


def test_an_unknown_benchmark_in_k_is_an_error_naming_the_datas(tmp_path):
    """As a user ran it: --k amc=2 on AMC23 data was silently ignored (the run used the paper's k=8)."""
    import subprocess

    pd.DataFrame(_rows("amc23", ["1"])).to_parquet(tmp_path / "amc23.parquet")
    pd.DataFrame(_rows("aime24", ["1"])).to_parquet(tmp_path / "aime24.parquet")
    run = subprocess.run([sys.executable, "-m", "pion_rl.evaluate", "--model", f"m={tmp_path}", "--data",
                          str(tmp_path / "amc23.parquet"), str(tmp_path / "aime24.parquet"), "--k", "amc=2",
                          "--backend", "hf", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 2 and not (tmp_path / "out").exists()
    assert run.stderr == ("python -m pion_rl.evaluate: error: --k names benchmark(s) amc that the data does not "
                          "hold; its benchmarks (data_source) are aime24, amc23\n")


def test_unknown_benchmark_needs_a_k(tmp_path, capsys):
    pd.DataFrame(_rows("math500", ["1"])).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(SystemExit):
        cli.main(["--model", f"m={tmp_path}", "--data", str(tmp_path / "a.parquet"), "--backend", "hf",
                  "--out", str(tmp_path / "out")])
    assert "no k for benchmark(s) ['math500']: add them to --k" in capsys.readouterr().err


# --- spreading generation over devices --------------------------------------------------------------------------


def test_device_groups_and_the_jobs_planned_on_them(monkeypatch):
    from pion_rl.evaluate.schedule import Job, device_groups, plan_jobs, visible_devices

    assert visible_devices(cuda_visible="2,5, 7") == ["2", "5", "7"] and visible_devices(cuda_visible="") == []
    assert visible_devices(cuda_visible="3,-1,4") == ["3"]  # as CUDA reads it: nothing after an invalid entry
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_devices(count=lambda: 3) == ["0", "1", "2"]  # unset: every device torch counts
    assert device_groups([str(i) for i in range(8)], 2) == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    assert device_groups(["0", "1", "2"], 2) == [("0", "1")]  # a device left over stays idle
    assert device_groups([], 1) == [()]
    with pytest.raises(ValueError, match="needs that many devices"):
        device_groups(["0"], 2)
    # 4 models on 8 GPUs: 2 jobs each, problems dealt round-robin; more models than groups: one job each.
    jobs = plan_jobs(["a", "b", "c", "d"], 5, 8)
    assert jobs[:2] == [Job("a", (0, 2, 4), 1, 2), Job("a", (1, 3), 2, 2)] and len(jobs) == 8
    assert plan_jobs(["a", "b", "c"], 4, 2) == [Job(m, (0, 1, 2, 3)) for m in "abc"]
    assert plan_jobs(["a"], 2, 8) == [Job("a", (0,), 1, 2), Job("a", (1,), 2, 2)]  # never an empty job
    for models, n, groups in ((["a", "b", "c"], 10, 8), (["a"], 7, 3)):
        planned = plan_jobs(models, n, groups)
        for m in models:  # every request of every model exactly once
            assert sorted(i for j in planned if j.model == m for i in j.indices) == list(range(n))


def test_jobs_run_one_per_group_at_a_time_and_all_of_them(monkeypatch):
    from pion_rl.evaluate import schedule

    monkeypatch.setattr(schedule, "POLL_S", 0.0)
    busy, log = set(), []

    class FakeProcess:  # finishes after a few polls; exit status from its job
        def __init__(self, job, group):
            self.job, self.group, self.polls = job, group, 2 + len(job.indices)
            assert group not in busy, "two jobs on one device group"
            busy.add(group)
            log.append(("start", job.model, job.part, group, len(busy)))

        def poll(self):
            self.polls -= 1
            if self.polls > 0:
                return None
            busy.discard(self.group)
            return 3 if self.job.model == "broken" else 0

        def kill(self):
            busy.discard(self.group)

        def wait(self):
            pass

    def launch(job, group):
        process = FakeProcess(job, group)
        return schedule.Launched(process, lambda: {"responses": [[f"{job.model}:{i}"] for i in job.indices]})

    groups = [("0",), ("1",), ("2",)]
    jobs = schedule.plan_jobs(["a", "b"], 7, 4) + schedule.plan_jobs(["c"], 7, 1)
    results = schedule.run_jobs(jobs, groups, launch)
    assert [r.job for r in results] == jobs and not busy
    assert all(r.responses == [[f"{r.job.model}:{i}"] for i in r.job.indices] for r in results)
    assert max(entry[-1] for entry in log) == 3  # all three groups busy at once
    with pytest.raises(RuntimeError, match="model broken .*failed with exit status 3"):
        schedule.run_jobs(schedule.plan_jobs(["broken", "slow"], 7, 2), groups[:2], launch)
    assert not busy  # the other job was stopped


# --- the vLLM backend, without vLLM ----------------------------------------------------------------------------


def test_vllm_requests_carry_n_sampling_seeds_and_the_chat_template():
    from pion_rl.demo.tokenizer import build_tokenizer
    from pion_rl.evaluate import vllm as vllm_backend

    tokenizer = build_tokenizer()
    # Seeds follow each request's place in the whole evaluation (here 5, 9, 2), not its place in this job.
    requests = [Request([{"role": "user", "content": f"q{i}"}], n, index)
                for i, (n, index) in enumerate(((32, 5), (32, 9), (8, 2)))]
    built = vllm_backend.build_requests(tokenizer, requests, Sampling(0.6, 0.95, 4096, seed=7))
    assert [prompt for prompt, _ in built] == [
        f"<|im_start|>user\nq{i}<|im_end|>\n<|im_start|>assistant\n" for i in range(3)
    ]
    assert [params for _, params in built] == [
        {"n": n, "temperature": 0.6, "top_p": 0.95, "max_tokens": 4096, "seed": 7 + index}
        for n, index in ((32, 5), (32, 9), (8, 2))
    ]


def test_vllm_generate_drives_the_engine_in_order(monkeypatch):
    from pion_rl.demo.tokenizer import build_tokenizer
    from pion_rl.evaluate import vllm as vllm_backend

    calls = {}

    class FakeLLM:
        def __init__(self, **kwargs):
            calls["llm"] = kwargs

        def get_tokenizer(self):
            return build_tokenizer()

        def generate(self, prompts, params, use_tqdm):
            calls.setdefault("batches", []).append(len(prompts))
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"{p}#{j}")
                                                   for j in range(sp["n"])]) for p, sp in zip(prompts, params)]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=dict))
    monkeypatch.setattr(vllm_backend, "REQUESTS_PER_CALL", 2)
    requests = [Request([{"role": "user", "content": f"q{i}"}], 1 + i % 2) for i in range(5)]
    out = vllm_backend.generate("/m", requests, Sampling(0.6, 0.95, 64, seed=3), Progress("m", 5, stream=sys.stderr))
    assert calls["llm"] == {"model": "/m", "seed": 3, "dtype": "bfloat16", "tensor_parallel_size": 1}
    assert calls["batches"] == [2, 2, 1]
    assert [len(r) for r in out] == [1, 2, 1, 2, 1]
    assert all(f"q{i}<|im_end|>" in texts[0] for i, texts in enumerate(out))


# --- examples/grpo_trainer/eval_deepmath.sh ---------------------------------------------------------------------


def test_eval_script_finds_the_three_runs_and_the_base_model(tmp_path):
    """The script as a user runs it, with verl-layout checkpoints of the chain model (HF weights saved in
    actor/huggingface, as the recipes' save_contents makes them) and the hf backend."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    base = write_chain_model(tmp_path / "base")
    for optimizer in ("AdamW", "Muon", "Pion"):
        actor = tmp_path / "ckpt" / f"qwen3_1.7b_deepmath_{optimizer}" / "global_step_3" / "actor"
        shutil.copytree(base, actor / "huggingface")
        (actor / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 8}')
        (actor.parents[1] / "latest_checkpointed_iteration.txt").write_text("3")
    for benchmark in paper.BENCHMARKS:
        (tmp_path / "data" / "math_eval").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(_rows(benchmark, ["7", "3"])).to_parquet(tmp_path / "data" / "math_eval" / f"{benchmark}.parquet")
    script = Path(__file__).resolve().parents[1] / "examples" / "grpo_trainer" / "eval_deepmath.sh"
    env = {**os.environ, "PYTHON": sys.executable, "MODEL_PATH": str(base), "CKPT_ROOT": str(tmp_path / "ckpt"),
           "DATA_DIR": str(tmp_path / "data"), "OUT": str(tmp_path / "out")}
    k = ",".join(f"{b}=2" for b in paper.BENCHMARKS)
    run = subprocess.run(["bash", str(script), "--backend", "hf", "--k", k, "--max-new-tokens", "12"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["models"]) == ["base", "adamw", "muon", "pion"]
    assert results["settings"]["model_dirs"]["pion"] == str(
        tmp_path / "ckpt" / "qwen3_1.7b_deepmath_Pion" / "global_step_3" / "actor" / "huggingface")
    assert all(results["models"][m][b]["avg"] == 0.5 for m in results["models"] for b in paper.BENCHMARKS)

    # A missing run is left out and named; the others are still evaluated.
    shutil.rmtree(tmp_path / "ckpt" / "qwen3_1.7b_deepmath_Muon")
    env["OUT"] = str(tmp_path / "two")
    run = subprocess.run(["bash", str(script), "--backend", "hf", "--k", k, "--max-new-tokens", "12"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.startswith(f"eval_deepmath: no Muon run at {tmp_path}/ckpt/qwen3_1.7b_deepmath_Muon, so it "
                                 "is left out: train it with examples/grpo_trainer/run_qwen3_1.7b_muon_deepmath.sh")
    assert list(json.loads((tmp_path / "two" / "results.json").read_text())["models"]) == ["base", "adamw", "pion"]

    for optimizer in ("AdamW", "Pion"):
        shutil.rmtree(tmp_path / "ckpt" / f"qwen3_1.7b_deepmath_{optimizer}")
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and run.stderr.count("so it is left out") == 3
    assert run.stderr.splitlines()[-1] == (f"eval_deepmath: none of the three runs is under {tmp_path}/ckpt: "
                                           "nothing to evaluate beside the base model")


FAKE_VLLM = '''
import os

from transformers import AutoTokenizer


class SamplingParams(dict):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)


class _Completion:
    def __init__(self, text):
        self.text = text


class _Output:
    def __init__(self, n, seed, where):
        self.outputs = [_Completion(("\\\\boxed{7}" if seed % 2 == 0 else "no box") + where) for _ in range(n)]


class LLM:
    def __init__(self, model, seed, dtype, tensor_parallel_size):
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        # Each text says where it was drawn: the devices this process saw and the tensor-parallel size.
        self.where = f" [devices {os.environ.get('CUDA_VISIBLE_DEVICES')} tp {tensor_parallel_size}]"

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm):
        assert all(p.endswith("<|im_start|>assistant\\n") for p in prompts)
        return [_Output(sp["n"], sp["seed"], self.where) for sp in params]
'''


def test_vllm_backend_through_the_cli_in_its_own_process(tmp_path):
    """--backend vllm end to end with a stand-in vllm package (answers by request seed): the CLI starts one
    process per model, which must import vllm and the backend by name."""
    import os
    import subprocess

    (tmp_path / "fake" / "vllm").mkdir(parents=True)
    (tmp_path / "fake" / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    model = write_chain_model(tmp_path / "model")
    pd.DataFrame(_rows("amc23", ["7", "7", "7", "9"])).to_parquet(tmp_path / "a.parquet")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), *sys.path])}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [sys.executable, "-m", "pion_rl.evaluate", "--model", f"m={model}", "--data", str(tmp_path / "a.parquet"),
               "--k", "amc23=3", "--seed", "10"]
    run = subprocess.run([*command, "--devices", "", "--out", str(tmp_path / "out")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # seeds 10, 11, 12, 13: even seeds answer 7 (right for rows 0 and 2), odd ones give no box.
    assert results["models"]["m"]["amc23"]["scores"] == [[1.0] * 3, [0.0] * 3, [1.0] * 3, [0.0] * 3]
    assert results["settings"]["backend"] == "vllm"

    # Four GPUs in two groups of two (tensor parallel 2): the one model's problems are dealt to both groups, each
    # a process seeing only its group; the seeds follow the problem, so the scores are the same.
    run = subprocess.run([*command, "--devices", "0,1,2,3", "--devices-per-model", "2", "--out", str(tmp_path / "dp")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    spread = json.loads((tmp_path / "dp" / "results.json").read_text())
    assert spread["models"] == results["models"]
    with gzip.open(tmp_path / "dp" / "responses.jsonl.gz", "rt") as stream:
        records = [json.loads(line) for line in stream]
    assert [r["problem"] for r in records] == [0, 1, 2, 3]
    assert [{s["text"].split(" [")[1] for s in r["samples"]} for r in records] == [
        {"devices 0,1 tp 2]"}, {"devices 2,3 tp 2]"}, {"devices 0,1 tp 2]"}, {"devices 2,3 tp 2]"}]
    timing = spread["settings"]["timing"]
    assert timing["device_groups"] == ["0,1", "2,3"]
    assert [(j["part"], j["parts"], j["devices"], j["problems"]) for j in timing["jobs"]] == [(1, 2, "0,1", 2),
                                                                                            (2, 2, "2,3", 2)]
    assert "Generation: 2 job(s) on 2 device group(s) (0,1; 2,3)" in (tmp_path / "dp" / "table.md").read_text()


def test_a_directory_that_is_no_model_fails_before_anything_is_written(tmp_path, capsys):
    model = write_chain_model(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    pd.DataFrame(_rows("amc23", ["7"])).to_parquet(tmp_path / "a.parquet")
    code = cli.main(["--model", f"good={model}", "--model", f"bad={tmp_path / 'empty'}", "--data",
                     str(tmp_path / "a.parquet"), "--backend", "hf", "--out", str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out").exists()
    assert "--model bad: " in capsys.readouterr().err


# --- inputs checked before generation (issue 22) -------------------------------------------------------------


def _no_generation(monkeypatch):
    def generate_all(*args, **kwargs):
        raise AssertionError("generation started although an input was bad")

    monkeypatch.setattr(cli, "generate_all", generate_all)


def _one_line_exit(capsys, run) -> str:
    capsys.readouterr()  # what came before (a model's saving progress bar)
    with pytest.raises(SystemExit) as exit_info:
        run()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("python -m pion_rl.evaluate: error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_an_out_that_cannot_be_a_directory_fails_before_generation(tmp_path, capsys, monkeypatch, below):
    """As a user ran it: --out README.md generated everything, then died with FileExistsError."""
    _no_generation(monkeypatch)
    model = write_chain_model(tmp_path / "model")
    pd.DataFrame(_rows("amc23", ["7"])).to_parquet(tmp_path / "a.parquet")
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    out = readme / below if below else readme
    err = _one_line_exit(capsys, lambda: cli.main(["--model", f"m={model}", "--data", str(tmp_path / "a.parquet"),
                                                    "--backend", "hf", "--out", str(out)]))
    assert f"--out {out}: {readme} is a file, not a directory" in err
    assert readme.read_text() == "# notes\n"


def test_a_model_directory_without_a_tokenizer_is_named_before_generation(tmp_path, capsys, monkeypatch):
    """Weights and config but no tokenizer files: transformers builds an empty tokenizer, which used to fail only
    at the prompt, as a traceback about the chat template."""
    import shutil

    _no_generation(monkeypatch)
    model = write_chain_model(tmp_path / "model")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(model / name, bare / name)
    pd.DataFrame(_rows("amc23", ["7"])).to_parquet(tmp_path / "a.parquet")
    capsys.readouterr()
    code = cli.main(["--model", f"good={model}", "--model", f"bare={bare}", "--data", str(tmp_path / "a.parquet"),
                     "--backend", "hf", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"python -m pion_rl.evaluate: error: --model bare: {bare} has no tokenizer (none of ")
    assert "tokenizer.json" in err and not (tmp_path / "out").exists()


def test_devices_with_the_hf_backend_on_a_machine_without_gpus(tmp_path, capsys, monkeypatch):
    """--devices 0 on a CPU machine was reported as "1 device group(s) (0)" while the CPU did the work: naming
    devices is an error there, and a CUDA_VISIBLE_DEVICES naming absent ones leaves the run on this machine."""
    monkeypatch.setattr(cli, "_cuda_device_count", lambda: 0)
    pd.DataFrame(_rows("amc23", ["7"])).to_parquet(tmp_path / "a.parquet")
    common = ["--model", f"m={tmp_path}", "--data", str(tmp_path / "a.parquet"), "--backend", "hf",
              "--out", str(tmp_path / "out")]
    err = _one_line_exit(capsys, lambda: cli.parse_args([*common, "--devices", "0"]))
    assert "--devices 0: torch sees no CUDA device" in err
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert cli.parse_args(common).groups == [()]
    monkeypatch.setattr(cli, "_cuda_device_count", lambda: 2)
    assert cli.parse_args(common).groups == [("0",), ("1",)]


def test_data_that_is_not_verl_rows_names_what_it_lacks(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# not data\n")
    rows = pd.DataFrame(_rows("amc23", ["7"]))
    rows.drop(columns=["reward_model"]).to_parquet(tmp_path / "no_reward.parquet")
    rows.assign(reward_model=[{"style": "rule"}]).to_parquet(tmp_path / "no_truth.parquet")
    for data, expected in [(readme, f"--data {readme} is not a readable parquet file ("),
                           (tmp_path / "no_reward.parquet", "lacks column(s) reward_model (it has "),
                           (tmp_path / "no_truth.parquet", "lacks column(s) reward_model.ground_truth (it has ")]:
        err = _one_line_exit(capsys, lambda: cli.parse_args(["--model", f"m={tmp_path}", "--data", str(data),
                                                              "--backend", "hf", "--out", str(tmp_path / "out")]))
        assert expected in err, err
