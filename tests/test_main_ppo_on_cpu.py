"""verl's real trainer, ``python -m verl.trainer.main_ppo`` with the recipe config, on CPU (pion_rl.verl_plugin.cpu).

The tiny Qwen3 of the demo, warm-started (the demo's cache under outputs/demo, built once), trains on the
demo's synthetic arithmetic through verl's default v1 trainer: FSDP2 over gloo on 2 Ray workers, the hf rollout,
pion-rl's engine, optimizer and reward, verl's checkpoints. Each launch starts its own Ray (about 1.5 min of
the ~2 min a launch takes on 2 cores), so the launches are few and shared between assertions; they are marked
``slow`` (``make test-fast`` leaves them out). The two-node smoke run (``NNODES=2 run_smoke.sh``) runs its two
launches on a local Ray cluster of two nodes, one worker on each, with its first launch killed mid-save.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "examples" / "grpo_trainer" / "run_smoke.sh"
KILL_FIRST_LAUNCH = REPO / "tests" / "kill_first_launch.py"
CPU_ENV = {"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_MODULES": "pion_rl.verl_plugin.cpu"}
# The CPU platform (configs/platform/cpu.yaml, as run_smoke.sh selects it) and a smoke run's schedule.
CPU_OVERRIDES = [
    "platform=cpu", "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.logger=[console]",
    "trainer.save_freq=2",
    # A resumed run bitwise equal to an unbroken one: stable request ids, so the hf rollout samples the same
    # tokens, and each step's samples in an order fixed by their tokens, not by completion.
    "actor_rollout_ref.rollout.full_determinism=true",
    "trainer.v1.sampler.custom_sampler.path=pkg://pion_rl.verl_plugin.cpu.ordered_replay_buffer",
    "trainer.v1.sampler.custom_sampler.name=TokenOrderedReplayBuffer",
]
STEP_LINE = re.compile(r"step:(\d+) - (.*)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MODEL_PATH")}
    env.update(CPU_ENV, PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The demo's warm-started model and problems as verl reads them (run_smoke.sh's inputs)."""
    out = tmp_path_factory.mktemp("inputs")
    subprocess.run([sys.executable, "-m", "pion_rl.demo.export", "--out", str(out), "--cache-dir",
                    str(REPO / "outputs" / "demo")], env=_env(), check=True, timeout=1200)
    return out


def main_ppo(inputs: Path, optimizer: str, run_dir: Path, steps: int, *extra: str, env=None):
    """One launch of verl's trainer; returns ({step: {metric: value}} from the console logger, the output)."""
    command = [
        sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "configs"),
        "--config-name", "qwen3_1.7b_deepmath", f"optimizer={optimizer}",
        f"data.train_files={inputs / 'train.parquet'}", f"data.val_files={inputs / 'heldout.parquet'}",
        f"actor_rollout_ref.model.path={inputs / 'model'}", f"trainer.default_local_dir={run_dir}",
        f"trainer.total_training_steps={steps}", *CPU_OVERRIDES, *extra,
    ]
    run = subprocess.run(command, env=env or _env(), capture_output=True, text=True, timeout=900, cwd=run_dir.parent)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    return _step_metrics(output), output


def _step_metrics(output: str) -> dict[int, dict[str, float]]:
    steps = {}
    for line in output.splitlines():
        match = STEP_LINE.search(line)
        if match:
            pairs = (item.split(":", 1) for item in match.group(2).split(" - ") if ":" in item)
            steps[int(match.group(1))] = {k: _number(v) for k, v in pairs}
    return steps


def _number(text: str) -> float:
    wrapped = re.fullmatch(r"np\.\w+\((.*)\)", text.strip())  # numpy scalars print as np.int32(2)
    try:
        return float(wrapped.group(1) if wrapped else text)
    except ValueError:
        return float("nan")


def _shards(step_dir: Path) -> dict[str, object]:
    actor = step_dir / "actor"
    return {p.name: torch.load(p, map_location="cpu", weights_only=False)
            for p in sorted(actor.glob("*_world_size_2_rank_*.pt")) if not p.name.startswith("extra_state")}


def _assert_trained(metrics: dict[int, dict[str, float]], optimizer: str):
    assert {1, 2} <= set(metrics), sorted(metrics)
    # Warm-started: some sampled answers are right, so GRPO has advantages and the actor a gradient.
    assert max(m["critic/score/mean"] for m in metrics.values()) > 0
    assert max(m["actor/grad_norm"] for m in metrics.values()) > 0
    telemetry = [k for k in metrics[2] if k.startswith("actor/optim/")]
    assert "actor/optim/update_rms" in telemetry and metrics[2]["actor/optim/update_rms"] > 0, telemetry
    if optimizer == "pion":
        assert "actor/optim/pion/generator_norm" in telemetry


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor  # DTensor shards


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(_local(a), _local(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _generations(dump: Path, step: int) -> list[tuple[str, str]]:
    """A step's (prompt, response) texts from verl's rollout dump (trainer.rollout_data_dir), sorted."""
    rows = [json.loads(line) for line in (dump / f"{step}.jsonl").read_text().splitlines()]
    return sorted((row["input"], row["output"]) for row in rows)


@pytest.mark.slow
def test_pion_trains_saves_and_resumes_to_the_weights_of_an_unbroken_run(inputs, tmp_path):
    straight, _ = main_ppo(inputs, "pion", tmp_path / "straight", 3, f"trainer.rollout_data_dir={tmp_path / 'dump'}")
    _assert_trained(straight, "pion")
    assert (tmp_path / "straight" / "global_step_2" / "actor" / "huggingface" / "model.safetensors").is_file()
    # The rollout.n samples of a prompt are drawn with different seeds (verl gives them all one request id).
    samples = _generations(tmp_path / "dump", 1)
    assert len(set(samples)) > len({prompt for prompt, _ in samples}), samples
    # A relaunch from step 2's checkpoint (into another directory) takes only step 3.
    resumed, _ = main_ppo(inputs, "pion", tmp_path / "resumed", 3, "trainer.resume_mode=resume_path",
                          f"trainer.resume_from_path={tmp_path / 'straight' / 'global_step_2'}",
                          f"trainer.rollout_data_dir={tmp_path / 'dump_resumed'}")
    assert sorted(resumed) == [3]
    assert _generations(tmp_path / "dump_resumed", 3) == _generations(tmp_path / "dump", 3)
    a, b = _shards(tmp_path / "straight" / "global_step_3"), _shards(tmp_path / "resumed" / "global_step_3")
    assert sorted(a) == sorted(b) == [f"{kind}_world_size_2_rank_{r}.pt" for kind in ("model", "optim") for r in (0, 1)]
    # Bit for bit: weights, moments, step counts, Pion's alternating side, telemetry; and step 3 did move them.
    before = _shards(tmp_path / "straight" / "global_step_2")
    assert not any(_equal(a[name], before[name]) for name in a)
    for name in a:
        assert _equal(a[name], b[name]), name
    assert resumed[3]["actor/grad_norm"] == straight[3]["actor/grad_norm"]


@pytest.mark.parametrize("target", ["gloo-backend", "unpinned-offload", "rollout-table"])
def test_a_patch_whose_target_changed_stops_the_launch_in_one_line_naming_it(tmp_path, target):
    env = _env(VERL_USE_EXTERNAL_MODULES="break_cpu_patch_target,pion_rl.verl_plugin.cpu",
               BREAK_CPU_PATCH_TARGET=target, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}")
    run = subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "configs"),
                          "--config-name", "qwen3_1.7b_deepmath"], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pion_rl.verl_plugin.cpu.patches.PatchTargetChanged: pion_rl.verl_plugin.cpu patch "
                           f"'{target}' cannot apply: "), last
    assert "Ray" not in run.stderr.split("Traceback")[0]  # it stopped before anything started


def test_patches_apply_only_on_the_cpu_platform():
    code = ("import torch.distributed as d; import pion_rl.verl_plugin.cpu; "
            "from verl.workers.engine.fsdp import transformer_impl as t; "
            "print(hasattr(d.init_process_group, '_pion_rl_patch'), t.CPUOffloadPolicy(pin_memory=True).pin_memory)")
    on_cpu = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    elsewhere = subprocess.run([sys.executable, "-c", code], env=_env(VERL_PLATFORM="nvidia"), capture_output=True,
                               text=True, timeout=300)
    assert on_cpu.stdout.split() == ["True", "False"], on_cpu.stderr[-2000:]
    assert elsewhere.stdout.split() == ["False", "True"], elsewhere.stderr[-2000:]


def _session_processes(session: int) -> list[psutil.Process]:
    """The live processes of session ``session`` (zombies are gone in all but name)."""
    found = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def _kill_sessions(*sessions: int):
    for session in sessions:
        for process in _session_processes(session):
            with contextlib.suppress(psutil.Error):
                process.kill()


@pytest.mark.slow
def test_two_node_smoke_run_relaunches_from_the_last_complete_checkpoint_after_a_kill_mid_save(tmp_path):
    # As a user runs it with no GPU (NNODES=2), with one stand-in: the interpreter the script runs kills the first
    # launch, given a third step, during step 3's save (SIGKILL to its process group and its Ray actors on both
    # nodes), then lets the script go on.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(KILL_FIRST_LAUNCH))} "$@"\n')
    python.chmod(0o755)
    smoke, report = tmp_path / "smoke", tmp_path / "kill.json"
    env = _env(SMOKE_DIR=str(smoke), NNODES="2", PYTHON=str(python), SMOKE_DEVICE="",
               KILL_FIRST_LAUNCH_REPORT=str(report))
    script = subprocess.Popen(["bash", str(SMOKE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        output, _ = script.communicate(timeout=2400)
    finally:  # a failed or hung run leaves nothing behind either
        killed = json.loads(report.read_text()) if report.is_file() else {}
        _kill_sessions(script.pid, *([killed["process_group"]] if killed else []))
    assert script.returncode == 0, output[-4000:]
    # The kill landed mid-save: step 3's directory had begun, verl's tracker still named step 2.
    assert killed["killed_step"] == 3 and killed["tracker"] == "2", killed
    assert "global_step_3/data.pt" not in killed["files"], killed
    # The relaunch took step 3 only, from step 2's checkpoint (run_smoke.sh checks that step 2 was left as it was).
    before, after = output.split("kill_first_launch: SIGKILL")
    assert sorted(_step_metrics(before)) == [1, 2] and sorted(_step_metrics(after)) == [3]
    _assert_trained(_step_metrics(output), "pion")
    checkpoints = smoke / "checkpoints"
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    # FSDP2 over both nodes: one shard per rank of a world of 2.
    for step in (2, 3):
        assert sorted(_shards(checkpoints / f"global_step_{step}")) == [
            f"{kind}_world_size_2_rank_{r}.pt" for kind in ("model", "optim") for r in (0, 1)]
    # verl names a launch's trainer workers <launch prefix>WorkerDict_<placement group>:<local rank>: in each
    # launch, the killed one and the relaunch, the two ranks ran on the two nodes.
    ran = dict(re.findall(r"local_cluster: node (\w+)(?: \(head\))? ran (.*)", output))
    nodes_of: dict[str, list[str]] = {}
    for node, names in ran.items():
        for launch in re.findall(r"(\S+)WorkerDict_\d+:0", names):
            nodes_of.setdefault(launch, []).append(node)
    assert len(ran) == 2 and len(nodes_of) == 2, ran
    assert all(sorted(nodes) == sorted(ran) for nodes in nodes_of.values()), ran
    table = (smoke / "eval" / "table.md").read_text()
    assert "pion" in table and "synthetic_arith" in table
    # Nothing of the test's is left: the script's session (its Ray cluster), the killed launch's, their temp dir.
    (temp_dir,) = re.findall(r"local_cluster: .* \(temp dir (\S+), holder pid", output)
    deadline = time.monotonic() + 60
    while (_session_processes(script.pid) or _session_processes(killed["process_group"])) \
            and time.monotonic() < deadline:
        time.sleep(1)
    assert not _session_processes(script.pid) and not _session_processes(killed["process_group"])
    assert not Path(temp_dir).exists()


def test_run_smoke_touches_no_earlier_result_when_a_check_fails(tmp_path):
    for kept in ("checkpoints/global_step_2/data.pt", "eval/table.md"):
        (tmp_path / kept).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / kept).write_text("earlier run")
    # The GPU smoke run on this GPU-less machine without data: the preflight fails.
    env = _env(SMOKE_DIR=str(tmp_path), SMOKE_DEVICE="gpu", PYTHON=sys.executable, DATA_DIR=str(tmp_path / "nodata"))
    for key in CPU_ENV:
        env.pop(key)
    run = subprocess.run(["bash", str(SMOKE)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert (tmp_path / "checkpoints/global_step_2/data.pt").read_text() == "earlier run"
    assert (tmp_path / "eval/table.md").read_text() == "earlier run"
    # It asks for the data it reads (training set, amc23 for validation and the evaluation), nothing else.
    missing = [line for line in run.stderr.splitlines() if "is missing" in line]
    assert len(missing) == 2 and "deepmath/train.parquet" in missing[0] and "amc23.parquet" in missing[1], missing


def test_run_smoke_on_cpu_refuses_a_model_path_it_cannot_load_instead_of_training_the_demo(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "table.md").write_text("earlier run")
    # Data of the user's too (missing as well): nothing of the demo's is needed, so nothing is exported.
    env = _env(SMOKE_DIR=str(tmp_path), SMOKE_DEVICE="cpu", PYTHON=sys.executable, MODEL_PATH="/nonexistent/model",
               TRAIN_FILE=str(tmp_path / "t.parquet"), VAL_FILES=str(tmp_path / "v.parquet"), WANDB_MODE="offline")
    run = subprocess.run(["bash", str(SMOKE)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "step:1" not in run.stdout
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("preflight: model ")]
    assert line.startswith("preflight: model /nonexistent/model is not a directory on this machine")
    assert (tmp_path / "eval" / "table.md").read_text() == "earlier run"


def test_the_cpu_preflight_asks_for_the_cpu_extra_instead_of_the_gpu_stack(tmp_path):
    from pion_rl.verl_plugin.preflight import missing_pieces

    import pandas as pd

    data = tmp_path / "train.parquet"  # verl rows: the preflight reads the data's schema
    pd.DataFrame([{"data_source": "amc23", "prompt": [{"role": "user", "content": "1+1?"}],
                   "reward_model": {"style": "rule", "ground_truth": "2"}}]).to_parquet(data)
    problems = missing_pieces(2, [str(data)], [], find=lambda module: module != "zmq",
                              cuda_devices=lambda: 0, pion_rl_importable=lambda: True, python="py", cpu=True)
    assert problems == [f"verl's trainer on CPU imports zmq, which is missing: py -m pip install -e '{REPO}[cpu]'"]
    on_gpu = missing_pieces(2, [str(data)], [], find=lambda module: module != "zmq", cuda_devices=lambda: 0,
                            pion_rl_importable=lambda: True, python="py")
    assert len(on_gpu) == 1 and "0 CUDA device(s) visible" in on_gpu[0]
