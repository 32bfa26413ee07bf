"""The recipes' preflight: one line per missing piece with its fix, exit 1, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pion_rl.verl_plugin.preflight import REPO_ROOT, find_module, missing_pieces, wandb_can_log

SCRIPT = REPO_ROOT / "examples" / "grpo_trainer" / "run_qwen3_1.7b_pion_deepmath.sh"
PRESENT = {"verl", "verl.trainer.main_ppo", "vllm", "transfer_queue", "flash_attn"}


def _pieces(tmp_path, absent=(), devices=8, pion_rl=True, data=True):
    train, val = tmp_path / "deepmath" / "train.parquet", tmp_path / "math_eval" / "aime24.parquet"
    if data:
        for file in (train, val):
            file.parent.mkdir(parents=True, exist_ok=True)
            _verl_rows().to_parquet(file)
    return missing_pieces(8, [str(train)], [str(val)], find=lambda name: name in PRESENT - set(absent),
                          cuda_devices=lambda: devices, pion_rl_importable=lambda: pion_rl, python="PY")


def test_nothing_missing_is_silent(tmp_path):
    assert _pieces(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"absent": ["verl.trainer.main_ppo"]},
         "verl 0.9.1 is not installed for PY (import verl finds only the checkout's verl/ docs folder): "
         f"PY -m pip install -r {REPO_ROOT}/verl/requirements-gpu.txt"),
        ({"absent": ["verl", "verl.trainer.main_ppo"]},
         f"verl 0.9.1 is not installed for PY (no verl at all): PY -m pip install -r {REPO_ROOT}/verl/requirements-gpu.txt"),
        ({"absent": ["vllm"]}, f"verl's GPU stack lacks vllm: PY -m pip install -r {REPO_ROOT}/verl/requirements-gpu.txt"),
        ({"absent": ["transfer_queue"]},
         f"verl's GPU stack lacks transfer_queue: PY -m pip install -r {REPO_ROOT}/verl/requirements-gpu.txt"),
        ({"absent": ["flash_attn"]}, "verl's GPU stack lacks flash_attn: PY -m pip install --no-build-isolation "
                                     "flash-attn==2.8.3"),
        ({"devices": 2}, "2 CUDA device(s) visible, the run needs N_GPUS=8: run on a node with 8 GPUs, or set N_GPUS "
                         "to this node's count (nvidia-smi -L lists them)"),
        ({"pion_rl": False}, "pion-rl does not import outside this checkout, so Ray workers cannot load it: "
                             f"PY -m pip install -e {REPO_ROOT}"),
    ],
)
def test_each_missing_piece_is_one_line_with_its_fix(tmp_path, kwargs, expected):
    assert _pieces(tmp_path, **kwargs) == [expected]


def test_missing_data_names_the_file_and_the_data_prep_command(tmp_path):
    assert _pieces(tmp_path, data=False) == [
        f"training data {tmp_path}/deepmath/train.parquet is missing: PY {REPO_ROOT}/data_prep/deepmath.py "
        f"--out {tmp_path}/deepmath",
        f"validation set {tmp_path}/math_eval/aime24.parquet is missing: PY {REPO_ROOT}/data_prep/eval_sets.py "
        f"--out {tmp_path}/math_eval --names aime24",
    ]


def test_find_module_finds_submodules_without_importing_them():
    assert find_module("json.decoder") and find_module("email.mime") and not find_module("json.no_such_module")
    assert not find_module("no_such_module_xyz") and not find_module("no_such_module_xyz.sub")
    assert find_module("verl.trainer.main_ppo")  # the venv has the real verl


def _launch(tmp_path, *overrides, python=sys.executable, **env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("DRY_RUN", "MODEL_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    full_env.update({"DATA_DIR": str(tmp_path / "data"), "N_GPUS": "8", "PYTHON": python, **env})
    return subprocess.run(["bash", str(SCRIPT), *overrides], env=full_env, capture_output=True, text=True,
                          timeout=600, cwd=REPO_ROOT)


def test_recipe_on_a_cpu_machine_stops_before_ray_with_one_line_per_missing_piece(tmp_path):
    import torch

    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine has 8 GPUs")
    run = _launch(tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert all(line.startswith("preflight: ") for line in lines), run.stderr
    assert any("CUDA device(s) visible, the run needs N_GPUS=8" in line for line in lines)
    assert sum("is missing:" in line for line in lines) == 6  # train + five validation sets
    assert "Traceback" not in run.stderr and "Ray instance" not in run.stderr  # Ray logs "Started a local Ray instance"


def test_recipe_with_a_python_lacking_verl_says_so_in_one_line(tmp_path):
    # `python -S` does not see site-packages: no verl, no torch. Run from the checkout, where `import verl`
    # would find the checkout's verl/ folder, as a user saw it (the error was "No module named 'verl.trainer'").
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    wrapper.chmod(0o755)
    run = _launch(tmp_path, python=str(wrapper), WANDB_MODE="offline")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"preflight: verl 0.9.1 is not installed for {sys.executable} (import verl finds only the checkout's " \
           "verl/ docs folder)" in run.stderr


def test_dry_run_skips_the_preflight(tmp_path):
    run = _launch(tmp_path, DRY_RUN="1")
    assert run.returncode == 0 and "preflight" not in run.stderr


def test_the_recipes_find_the_checkouts_venv(tmp_path):
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip("no .venv in this checkout (make builds it)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    run = subprocess.run(["bash", "-c", f"source {SCRIPT.parent}/deepmath_recipe.sh && recipe_python"], env=env,
                         capture_output=True, text=True)
    assert Path(run.stdout.strip()) == venv_python


WANDB_LINE = "the run logs to wandb but finds no key"


def test_a_run_logging_to_wandb_without_a_key_is_stopped_before_ray(tmp_path):
    no_key = _pieces(tmp_path) + missing_pieces(8, [], [], find=lambda name: name in PRESENT, cuda_devices=lambda: 8,
                                                pion_rl_importable=lambda: True, wandb=True, wandb_ready=lambda: False)
    assert no_key == ["the run logs to wandb but finds no key: wandb login (or export WANDB_API_KEY=...), or "
                      "WANDB_MODE=offline to log locally, or trainer.logger='[console]'"]
    assert missing_pieces(8, [], [], find=lambda name: name in PRESENT, cuda_devices=lambda: 8,
                          pion_rl_importable=lambda: True, wandb=True, wandb_ready=lambda: True) == []


def test_wandb_credentials_are_a_key_a_netrc_entry_or_an_offline_mode(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    assert not wandb_can_log()
    netrc_file = tmp_path / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    netrc_file.chmod(0o600)
    assert wandb_can_log()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a key for another server does not count
    assert not wandb_can_log()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_can_log()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_can_log()


def test_the_recipe_checks_wandb_only_when_its_loggers_include_it(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": ""}
    assert WANDB_LINE in _launch(tmp_path, **env).stderr
    assert WANDB_LINE not in _launch(tmp_path, "trainer.logger=[console]", **env).stderr
    assert WANDB_LINE in _launch(tmp_path, "trainer.logger=[console,wandb]", **env).stderr


# --- the model ------------------------------------------------------------------------------------------------


def _hub_cache_entry(hf_home: Path, model_id: str) -> None:
    """The layout huggingface_hub's cache keeps a downloaded model's config.json in."""
    repo = hf_home / "hub" / f"models--{model_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")


def _model_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("preflight: model ")]


def test_a_missing_model_is_one_line_in_the_dry_run_and_in_the_preflight(tmp_path):
    missing = "model /nonexistent/model is not a directory on this machine (nor a Hub id such as Qwen/Qwen3-1.7B)"
    dry = _launch(tmp_path, DRY_RUN="1", MODEL_PATH="/nonexistent/model")
    assert dry.returncode == 1 and dry.stdout == "" and "Traceback" not in dry.stderr
    (line,) = dry.stderr.strip().splitlines()
    assert line.startswith(f"pion_rl.verl_plugin.compose: ValueError: {missing}: set MODEL_PATH")
    real = _launch(tmp_path, MODEL_PATH="/nonexistent/model", WANDB_MODE="offline")
    assert real.returncode == 1 and [line[len("preflight: "):] for line in _model_lines(real.stderr)] == [
        f"{missing}: set MODEL_PATH to the model's directory, or to its Hub id to download it"]
    (tmp_path / "empty").mkdir()
    real = _launch(tmp_path, MODEL_PATH=str(tmp_path / "empty"), WANDB_MODE="offline")
    assert [f"preflight: model {tmp_path / 'empty'} is a directory without config.json" in line
            for line in _model_lines(real.stderr)] == [True]


def test_an_uncached_hub_id_while_offline_is_one_line_and_a_cached_one_passes(tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "offline"}
    for env in ({}, {"DRY_RUN": "1"}):  # the recipe's default model, Qwen/Qwen3-1.7B
        run = _launch(tmp_path, **offline, **env)
        assert run.returncode == 1
        assert ("model Qwen/Qwen3-1.7B is not in the Hugging Face cache and HF_HUB_OFFLINE forbids downloading it: "
                "run `hf download Qwen/Qwen3-1.7B` where the Hub is reachable") in run.stderr
    override = _launch(tmp_path, "actor_rollout_ref.model.path=Qwen/Qwen3-0.6B", **offline)
    assert [line.split(" is ")[0] for line in _model_lines(override.stderr)] == ["preflight: model Qwen/Qwen3-0.6B"]
    _hub_cache_entry(tmp_path / "hf", "Qwen/Qwen3-1.7B")
    assert _model_lines(_launch(tmp_path, **offline).stderr) == []
    online = {k: v for k, v in offline.items() if k != "HF_HUB_OFFLINE"}
    assert _model_lines(_launch(tmp_path, MODEL_PATH="Org/not-cached", **online).stderr) == []  # downloaded later


def _verl_rows():
    import pandas as pd

    return pd.DataFrame([{"data_source": "amc23", "prompt": [{"role": "user", "content": "1+1?"}],
                          "reward_model": {"style": "rule", "ground_truth": "2"}}])


def test_data_that_is_not_verl_rows_is_named_by_the_preflight_with_what_it_lacks(tmp_path):
    """As a user ran it: a README as the training file, and a parquet without reward_model, passed the preflight
    and failed after Ray start-up."""
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    no_reward = tmp_path / "amc23.parquet"
    _verl_rows().drop(columns=["reward_model"]).to_parquet(no_reward)
    good = tmp_path / "aime24.parquet"
    _verl_rows().to_parquet(good)
    run = _launch(tmp_path, TRAIN_FILE=str(readme), VAL_FILES=f"{no_reward} {good}", WANDB_MODE="offline")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    data_lines = [line for line in run.stderr.splitlines() if str(tmp_path) in line]
    assert len(data_lines) == 2, run.stderr
    assert data_lines[0].startswith(f"preflight: training data {readme} is not a readable parquet file (")
    assert data_lines[1].startswith(f"preflight: validation set {no_reward} lacks column(s) reward_model (it has "
                                    "data_source, prompt): use a <benchmark>.parquet that ")


# --- GPU counts against the config's parallel sizes; NNODES and the Ray cluster ---------------------------------


@pytest.mark.parametrize(("n_gpus", "message"), [
    ("1", "tensor_model_parallel_size=2 spans 2 GPU(s), which does not divide the run's N_GPUS=1 x NNODES=1 = 1"),
    ("5", "tensor_model_parallel_size=2 spans 2 GPU(s), which does not divide the run's N_GPUS=5 x NNODES=1 = 5"),
    ("abc", "N_GPUS=abc is not a whole number >= 1"),
])
def test_dry_run_rejects_gpu_counts_the_workers_would_reject_in_one_line(tmp_path, n_gpus, message):
    run = _launch(tmp_path, DRY_RUN="1", N_GPUS=n_gpus)
    assert run.returncode == 1 and run.stdout == "", run.stderr[-2000:]
    (line,) = [line for line in run.stderr.splitlines() if message in line]
    assert "Traceback" not in run.stderr


def test_dry_run_shows_nnodes_and_hydra_cfg_works_with_it(tmp_path):
    import yaml

    dry = _launch(tmp_path, DRY_RUN="1", N_GPUS="4", NNODES="3")
    cfg = _launch(tmp_path, "--cfg", "job", "--resolve", DRY_RUN="1", N_GPUS="4", NNODES="3")
    assert dry.returncode == 0 and cfg.returncode == 0, (dry.stderr[-2000:], cfg.stderr[-2000:])
    config = yaml.safe_load(dry.stdout)
    assert (config["trainer"]["nnodes"], config["trainer"]["n_gpus_per_node"]) == (3, 4)
    assert config["ray_kwargs"]["ray_init"]["num_cpus"] is None  # joining a cluster: ray.init must not size it
    assert yaml.safe_load(cfg.stdout) == config


def test_layout_rules_follow_verls_worker_asserts():
    from pion_rl.verl_plugin.preflight import layout_problems

    rollout = {"tensor_model_parallel_size": 2, "data_parallel_size": 1, "pipeline_model_parallel_size": 1}
    ulysses = {"actor_rollout_ref.actor.ulysses_sequence_parallel_size": 1}
    assert layout_problems(8, 1, rollout, ulysses) == [] and layout_problems(1, 2, rollout, ulysses) == []
    assert len(layout_problems(3, 1, rollout, ulysses)) == 1
    wide = {**rollout, "tensor_model_parallel_size": 12}  # a replica over 8-GPU nodes must be whole nodes
    assert len(layout_problems(8, 3, wide, ulysses)) == 1 and layout_problems(4, 3, wide, ulysses) == []
    assert len(layout_problems(8, 1, rollout, {k: 3 for k in ulysses})) == 1


def _node(name, gpus=1.0, pion_rl=True, unreadable=()):
    from pion_rl.verl_plugin.preflight import NodeReport

    return NodeReport(name, gpus, "PY", pion_rl, list(unreadable))


@pytest.mark.parametrize(("reports", "expected"), [
    ("no Ray cluster here", ["no Ray cluster here"]),
    ([_node("a")], ["the Ray cluster has 1 alive node(s), the run needs NNODES=2"]),
    ([_node("a"), _node("b", gpus=0.0)], ["node b has 0 GPU(s) in Ray, the run needs N_GPUS=1"]),
    ([_node("a"), _node("b", pion_rl=False)], ["pion-rl does not import on node b (PY)"]),
    ([_node("a"), _node("b", unreadable=["/data/train.parquet"])], ["/data/train.parquet is not readable on node b"]),
])
def test_each_missing_piece_of_a_two_node_cluster_is_one_line(tmp_path, reports, expected):
    asked = []
    (tmp_path / "t.parquet").write_bytes(b"")
    problems = missing_pieces(1, [str(tmp_path / "t.parquet"), str(tmp_path / "gone.parquet")], [],
                              find=lambda name: True, cuda_devices=lambda: 0, pion_rl_importable=lambda: True,
                              python="PY", cpu=True, nnodes=2, cluster=lambda paths: asked.append(paths) or reports)
    # The nodes are asked about the data the run reads; a file missing here has its one line already.
    assert asked == [[str(tmp_path / "t.parquet")]]
    problems = [p for p in problems if "training data" not in p]
    assert len(problems) == len(expected) and all(p.startswith(e) for p, e in zip(problems, expected)), problems
    assert missing_pieces(1, [], [], find=lambda name: True, cuda_devices=lambda: 0, pion_rl_importable=lambda: True,
                          cpu=True, nnodes=2, cluster=lambda paths: [_node("a"), _node("b")]) == []


def test_nnodes_2_without_a_cluster_is_one_line_and_starts_nothing(tmp_path):
    env = {"RAY_ADDRESS": "127.0.0.1:1", "NNODES": "2", "N_GPUS": "2", "WANDB_MODE": "offline"}
    run = _launch(tmp_path, **env)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if "Ray cluster" in line]
    assert line.startswith("preflight: no Ray cluster answers at RAY_ADDRESS=127.0.0.1:1, and NNODES>1 needs one")
    assert "CUDA device(s)" not in run.stderr  # the cluster's GPUs count, not this machine's
