"""A stand-in for the interpreter ``run_smoke.sh`` runs (``PYTHON``): the first launch is lost mid-save.

Every command runs as given with this interpreter, except the first ``-m verl.trainer.main_ppo``: that launch is
asked for one step more than the script asks (``trainer.total_training_steps`` + 1) and runs in a process group
of its own. As soon as that last step's checkpoint directory appears, every process of the launch gets SIGKILL:
its process group (the driver) and, on every node of the local cluster, its Ray actors (verl's trainer loop runs
in one, ``TaskRunner``, and writes the tracker after every file of the step; the actor workers write the shards).
A save takes about a tenth of a second on the tiny model, so the actors are found beforehand. Then the stand-in
exits 0 and the script relaunches, as a user would after a lost node. What it saw goes to
``$KILL_FIRST_LAUNCH_REPORT`` as JSON; that file also marks the first launch as done.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

TRACKER = "latest_checkpointed_iteration.txt"
#: Ray's own processes of a node (and workers not yet given to a job): the cluster's, not the launch's.
CLUSTER_OWN = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _value(args: list[str], key: str) -> str:
    return next(a.split("=", 1)[1] for a in reversed(args) if a.startswith(f"{key}="))


def launch_actors() -> list[psutil.Process]:
    """The Ray actor processes in this session (the local cluster's nodes run in it): the launch's."""
    session, found = os.getsid(0), []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            title = " ".join(process.info["cmdline"] or ()).strip()
            if title.startswith("ray::") and not title.startswith(CLUSTER_OWN) and os.getsid(process.pid) == session:
                found.append(process)
    return found


def kill_during_last_save(args: list[str], report: Path) -> int:
    steps = int(_value(args, "trainer.total_training_steps")) + 1
    args = [a for a in args if not a.startswith("trainer.total_training_steps=")]
    args.append(f"trainer.total_training_steps={steps}")
    run_dir = Path(_value(args, "trainer.default_local_dir").strip("'"))
    saving = run_dir / f"global_step_{steps}"
    tracker = run_dir / TRACKER
    launch = subprocess.Popen([sys.executable, *args], start_new_session=True)
    actors, found_at, armed = [], 0.0, False
    while launch.poll() is None and not saving.is_dir():
        # Looked for until the save before the last completed (every actor is up by then); then only the
        # directory is watched, so that nothing delays the kill.
        if not armed and time.monotonic() - found_at > 1:
            armed = tracker.is_file() and tracker.read_text().strip() == str(steps - 1)
            actors, found_at = launch_actors(), time.monotonic()
        time.sleep(0.005)
    if launch.poll() is not None:
        print(f"kill_first_launch: the launch ended (exit {launch.returncode}) before step {steps}'s save",
              file=sys.stderr)
        return 1
    os.killpg(launch.pid, signal.SIGKILL)
    for process in actors:
        with contextlib.suppress(psutil.Error):
            process.kill()
    launch.wait()
    psutil.wait_procs(actors, timeout=60)
    for process in launch_actors():  # any actor started since the last look
        with contextlib.suppress(psutil.Error):
            process.kill()
    seen = {"killed_step": steps, "process_group": launch.pid, "actors_killed": len(actors),
            "tracker": tracker.read_text().strip() if tracker.is_file() else None,
            "files": sorted(str(p.relative_to(run_dir)) for p in saving.rglob("*") if p.is_file())}
    report.write_text(json.dumps(seen))
    print(f"kill_first_launch: SIGKILL to the launch (its process group and {len(actors)} Ray actors) during step "
          f"{steps}'s save", file=sys.stderr, flush=True)
    return 0


def main() -> int:
    args, report = sys.argv[1:], Path(os.environ["KILL_FIRST_LAUNCH_REPORT"])
    if args[:2] == ["-m", "verl.trainer.main_ppo"] and not report.exists():
        return kill_during_last_save(args, report)
    os.execv(sys.executable, [sys.executable, *args])


if __name__ == "__main__":
    sys.exit(main())
