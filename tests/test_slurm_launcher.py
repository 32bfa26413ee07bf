"""examples/grpo_trainer/slurm_deepmath.sbatch, run as Slurm would run it, with stand-ins for Slurm and Ray.

A folder on PATH holds stand-in ``scontrol``, ``srun``, ``hostname``, ``ray`` and the recipes' interpreter (the
``PYTHON`` the script also takes Ray from); ``PION_RL_DIR`` is a checkout whose recipes are stand-ins beside the
real deepmath_recipe.sh. Every stand-in appends what it was asked to one log, one line per event, with the node
it ran on (srun hands that to what it starts). ``ray start --block`` runs until it is sent SIGTERM, and says so.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "grpo_trainer" / "slurm_deepmath.sbatch"
NODES = ["gpu-a17", "gpu-a18", "gpu-b02"]
#: What `hostname --ip-address` prints on each stand-in node: an IPv6 address first, as some clusters do.
ADDRESSES = {node: f"fd00::{i + 1} 10.1.0.{i + 1}" for i, node in enumerate(NODES)}
HEAD_ADDRESS = "10.1.0.1:6379"

STANDINS = {
    "scontrol": r"""
echo "scontrol $*" >> "$STANDIN_LOG"
[[ "$1 $2" == "show hostnames" ]] && tr ',' '\n' <<<"$STANDIN_NODES"
""",
    # srun's options are all --name=value here; the command starts at the first word that is not one.
    "srun": r"""
node=local
while [[ $1 == --* ]]; do
    [[ $1 == --nodelist=* ]] && node=${1#--nodelist=}
    shift
done
echo "srun $node $*" >> "$STANDIN_LOG"
STANDIN_NODE=$node exec "$@"
""",
    # Each node's addresses come from an exported string of node=addresses lines (bash cannot export arrays).
    "hostname": r"""
grep "^$STANDIN_NODE=" <<<"$STANDIN_ADDRESSES" | cut -d= -f2
""",
    "ray": r"""
[[ " $* " == *" --block "* ]] && trap 'echo "ray-stopped $STANDIN_NODE" >> "$STANDIN_LOG"; exit 0' TERM
echo "ray ${STANDIN_NODE:-local} $*" >> "$STANDIN_LOG"
[[ " $* " == *" --block "* ]] && while :; do sleep 0.05; done
""",
    # The node-count wait: returns once the log shows that many `ray start` processes, as the real one returns
    # once that many nodes are alive.
    "python": r"""
[[ $1 == - ]] || { echo "unexpected python $*" >> "$STANDIN_LOG"; exit 1; }
cat > /dev/null
for _ in $(seq 1200); do  # 60 s
    (( $(grep -c '^ray .* start ' "$STANDIN_LOG") >= $3 )) && { echo "wait-for-nodes $2 $3" >> "$STANDIN_LOG"; exit 0; }
    sleep 0.05
done
echo "wait-for-nodes $2 $3 timed out" >> "$STANDIN_LOG"; exit 1
""",
}

#: A recipe: says where and with what it ran, then exits with STANDIN_RECIPE_EXIT, or with STANDIN_RECIPE_HANG
#: runs until it is sent SIGTERM.
RECIPE = r"""
trap 'echo recipe-stopped >> "$STANDIN_LOG"; exit 143' TERM
echo "recipe $(basename "$0") NNODES=${NNODES:-} N_GPUS=${N_GPUS:-} RAY_ADDRESS=${RAY_ADDRESS:-} args=$*" >> "$STANDIN_LOG"
if [[ -n ${STANDIN_RECIPE_HANG:-} ]]; then
    while :; do sleep 0.05; done
fi
exit "${STANDIN_RECIPE_EXIT:-0}"
"""


def write_script(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body.lstrip())
    path.chmod(0o755)


@pytest.fixture
def allocation(tmp_path):
    """``(env, log)``: the environment of a 3-node job on the stand-ins, and the stand-ins' log."""
    bin_dir, checkout, log = tmp_path / "bin", tmp_path / "checkout", tmp_path / "log"
    bin_dir.mkdir()
    for name, body in STANDINS.items():
        write_script(bin_dir / name, body)
    recipes = checkout / "examples" / "grpo_trainer"
    recipes.mkdir(parents=True)
    (recipes / "deepmath_recipe.sh").symlink_to(REPO / "examples" / "grpo_trainer" / "deepmath_recipe.sh")
    for model in ("qwen3_1.7b", "distilled"):
        for optimizer in ("pion", "muon", "adamw"):
            write_script(recipes / f"run_{model}_{optimizer}_deepmath.sh", RECIPE)
    log.touch()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RAY_", "RECIPE", "N_GPUS", "NNODES", "PION_RL_DIR"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHON=str(bin_dir / "python"), PION_RL_DIR=str(checkout),
        STANDIN_LOG=str(log), STANDIN_NODES=",".join(NODES),
        STANDIN_ADDRESSES="\n".join(f"{node}={ADDRESSES[node]}" for node in NODES),
        SLURM_JOB_NODELIST="gpu-a[17-18],gpu-b02", SLURM_JOB_NUM_NODES="3", SLURM_GPUS_ON_NODE="4",
        SLURM_SUBMIT_DIR=str(tmp_path),
    )
    return env, log


class Job:
    """The script running in a process group of its own: whatever it and the stand-ins leave running is killed
    at the end (a failing test must not hang or leave loops behind)."""

    def __init__(self, env: dict, *args: str, out: Path):
        self.out, self.err = out.with_suffix(".out"), out.with_suffix(".err")
        with self.out.open("w") as stdout, self.err.open("w") as stderr:
            self.process = subprocess.Popen(["bash", str(SCRIPT), *args], env=env, stdout=stdout, stderr=stderr,
                                            start_new_session=True)

    def finish(self, timeout: float = 120) -> int:
        try:
            self.returncode = self.process.wait(timeout=timeout)
            return self.returncode
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    @property
    def stderr(self) -> str:
        return self.err.read_text()


def run(env: dict, *args: str) -> Job:
    job = Job(env, *args, out=Path(env["STANDIN_LOG"]).with_name("job"))
    job.finish()
    return job


def events(log: Path) -> list[str]:
    return log.read_text().splitlines()


def assert_ray_started_and_stopped(lines: list[str], gpus: int = 4) -> None:
    ray_starts = [line for line in lines if line.startswith("ray ")]
    head, workers = ray_starts[0], ray_starts[1:]
    assert head.startswith(f"ray {NODES[0]} start --head ") and " --node-ip-address=10.1.0.1 " in head
    assert " --port=6379 " in head and f" --num-gpus={gpus} " in head and head.endswith(" --block")
    assert sorted(w.split()[1] for w in workers) == NODES[1:]
    assert all(f" start --address={HEAD_ADDRESS} --num-gpus={gpus} --block" in w for w in workers), workers
    # The workers join after the head is up, and the recipe runs once all three are alive.
    assert lines.index(f"wait-for-nodes {HEAD_ADDRESS} 1") < lines.index(workers[0])
    recipe = next(i for i, line in enumerate(lines) if line.startswith("recipe "))
    assert lines.index(f"wait-for-nodes {HEAD_ADDRESS} 3") < recipe
    # Ray is stopped on every node, after the recipe and only then.
    stopped = [line for line in lines if line.startswith("ray-stopped ")]
    assert sorted(line.split()[1] for line in stopped) == sorted(NODES)
    assert all(lines.index(line) > recipe for line in stopped)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_ray_on_every_node_then_the_recipe_with_the_cluster_then_ray_stopped(allocation):
    env, log = allocation
    result = run(env, "trainer.total_epochs=2")
    assert result.returncode == 0, result.stderr
    lines = events(log)
    recipes = [line for line in lines if line.startswith("recipe ")]
    assert recipes == [f"recipe run_qwen3_1.7b_pion_deepmath.sh NNODES=3 N_GPUS=4 RAY_ADDRESS={HEAD_ADDRESS} "
                       f"args=trainer.total_epochs=2"]
    assert_ray_started_and_stopped(lines)


def test_a_failing_recipe_still_stops_ray_and_its_status_is_the_jobs(allocation):
    env, log = allocation
    result = run({**env, "RECIPE": "distilled_muon", "N_GPUS": "8", "STANDIN_RECIPE_EXIT": "3"})
    assert result.returncode == 3
    lines = events(log)
    assert [line.split()[1:3] for line in lines if line.startswith("recipe ")] == [
        ["run_distilled_muon_deepmath.sh", "NNODES=3"]]
    assert_ray_started_and_stopped(lines, gpus=8)


def test_a_cancelled_job_stops_the_recipe_and_ray(allocation):
    env, log = allocation
    job = Job({**env, "STANDIN_RECIPE_HANG": "1"}, out=log.with_name("job"))
    deadline = time.monotonic() + 120
    while not any(line.startswith("recipe ") for line in events(log)) and job.process.poll() is None:
        if time.monotonic() > deadline:
            job.finish(timeout=0)  # kills the job and raises: the recipe never started
        time.sleep(0.05)
    job.process.send_signal(signal.SIGTERM)  # what scancel sends
    assert job.finish(timeout=120) == 143, job.stderr
    lines = events(log)
    assert "recipe-stopped" in lines
    assert_ray_started_and_stopped(lines)


def test_an_unknown_recipe_is_one_line_and_starts_nothing(allocation):
    env, log = allocation
    result = run({**env, "RECIPE": "qwen3_8b_pion"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "RECIPE=qwen3_8b_pion" in result.stderr and "distilled_adamw" in result.stderr
    assert events(log) == []


def test_a_one_node_job_runs_the_recipe_with_its_own_ray(allocation):
    env, log = allocation
    result = run({**env, "STANDIN_NODES": NODES[0], "SLURM_JOB_NODELIST": NODES[0], "SLURM_JOB_NUM_NODES": "1"})
    assert result.returncode == 0, result.stderr
    assert [line for line in events(log) if not line.startswith("scontrol ")] == [
        "recipe run_qwen3_1.7b_pion_deepmath.sh NNODES=1 N_GPUS=4 RAY_ADDRESS= args="]


def test_a_head_that_never_answers_is_one_line_and_ray_is_stopped(allocation, tmp_path):
    # The real node-count wait (the recipes' interpreter, with ray), for a head on this machine at a port where
    # nothing listens: the stand-in head never does.
    env, log = allocation
    write_script(tmp_path / "bin" / "python", f'exec {shlex.quote(sys.executable)} "$@"\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    addresses = "\n".join(f"{node}=127.0.0.1" for node in NODES)
    result = run({**env, "RAY_WAIT_S": "1", "RAY_PORT": str(port), "STANDIN_ADDRESSES": addresses})
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if "slurm_deepmath" in line] == [
        f"slurm_deepmath: no Ray head answers at 127.0.0.1:{port} after 1 s: see this job's log for the head's "
        f"ray start"]
    lines = events(log)
    assert not any(line.startswith("recipe ") for line in lines)
    assert [line.split()[:3] for line in lines if line.startswith("ray")] == [
        ["ray", NODES[0], "start"], ["ray-stopped", NODES[0]]]
