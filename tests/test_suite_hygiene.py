"""What `make test` promises about itself: no leftovers in the shared temp dir, hang guards that a loaded
machine never reaches, and the slowest tests named."""

import inspect
import subprocess
import sys
import tempfile
from pathlib import Path

from gloo_ranks import HANG_GUARD_S, run_on_ranks
from suite_tempdir import private_tempdir

REPO = Path(__file__).resolve().parents[1]


def test_verl_checkpoint_locks_land_in_a_private_temp_dir_that_is_removed(tmp_path):
    # verl's checkpoint manager creates folders through local_mkdir_safe, which leaves ckpt_<hash>.lock in
    # the temp dir; run it in a child process as the ranks do.
    checkpoint = tmp_path / "global_step_1"
    code = f"from verl.utils.fs import local_mkdir_safe; local_mkdir_safe({str(checkpoint)!r})"
    with private_tempdir() as folder:
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=600)
        assert checkpoint.is_dir()
        assert len(list(folder.glob("ckpt_*.lock"))) == 1, sorted(p.name for p in folder.iterdir())
    assert not folder.exists()


def test_the_suite_runs_in_its_own_temp_dir_and_so_do_gloo_ranks():
    system_tmp = Path("/tmp").resolve()
    mine = Path(tempfile.gettempdir()).resolve()
    assert mine != system_tmp and mine.name.startswith("pionrl-")
    assert {Path(p).resolve() for p in run_on_ranks(tempfile.gettempdir, 2)} == {mine}


def test_the_rank_hang_guard_has_ten_minutes_of_headroom_and_no_caller_shortens_it():
    assert inspect.signature(run_on_ranks).parameters["timeout"].default == HANG_GUARD_S >= 600
    callers = [path for path in Path(__file__).parent.glob("test_*.py") if "run_on_ranks(" in path.read_text()]
    assert callers and all("timeout=" not in path.read_text().split("run_on_ranks(", 1)[1] for path in callers
                           if path.name != Path(__file__).name)


def test_make_test_prints_the_slowest_tests():
    plan = subprocess.run(["make", "-n", "-C", str(REPO), "test", "VENV=/nonexistent-venv"], capture_output=True,
                          text=True, timeout=600, check=True).stdout
    (pytest_line,) = [line for line in plan.splitlines() if "-m pytest" in line]
    assert "--durations=15" in pytest_line.split()
