"""Symbolic answer equivalence (math-verify) with a hard time limit, safe to call from any thread.

math-verify can hang on legal LaTeX (``\\boxed{9^{9^{9^{9}}}}`` makes sympy evaluate a tower), and its own
timeout relies on SIGALRM, which raises off the main thread (verl's reward managers call the reward from a
thread pool) and cannot interrupt a long C-level integer operation anyway. So comparisons run in worker
processes (`pion_rl.reward._verify_child`), which run each one in a fork killed at its deadline.

Workers are plain subprocesses (not `multiprocessing`, whose children re-import the parent's ``__main__``:
a Ray worker's, a training script's) and long-lived: a comparison costs its compute plus a few
milliseconds, a fresh worker one to two seconds of imports and warm-up, paid once per concurrent caller.
The pool grows to the number of concurrent callers. A worker that stops answering is killed with its
forks (it leads its own process group) and replaced by the next call.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

# A worker that has not finished importing math-verify by then is broken, not slow.
STARTUP_TIMEOUT_S = 60.0
# The worker enforces each comparison's timeout itself; the parent only guards against a stuck worker.
_REPLY_MARGIN_S = 5.0

_idle_workers: list[_Worker] = []
_pool_lock = threading.Lock()


class _Worker:
    """One math-verify subprocess, spoken to in JSON lines over its stdin / stdout."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pion_rl.reward._verify_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,  # its own process group, so `kill` also reaches a comparison in flight
            # The worker imports pion_rl the way this process did, installed or not.
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.ready = False
        self._pending = b""

    def ask(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """The worker's verdict (False if the comparison overran ``timeout_s``), or None if the worker itself
        failed: died, or did not answer well after the deadline."""
        try:
            if not self.ready:
                self._wait_until_ready()
            self.process.stdin.write((json.dumps([gold, pred, timeout_s]) + "\n").encode())
            verdict = self._read_reply(timeout_s + _REPLY_MARGIN_S)
        except OSError:  # the worker died (e.g. killed by the OOM killer): its pipe is broken
            return None
        return verdict if isinstance(verdict, bool) else None

    def _wait_until_ready(self) -> None:
        if self._read_reply(STARTUP_TIMEOUT_S) != "ready":
            self.kill()
            # A broken environment (math-verify missing, pion_rl not importable) must not pass for a run of
            # wrong answers: this is the one failure the reward reports loudly.
            raise RuntimeError(
                f"the math-verify worker did not start (exit code {self.process.returncode}); its error is "
                f"above on stderr. Check that `{sys.executable} -m pion_rl.reward._verify_child` runs."
            )
        self.ready = True

    def _read_reply(self, timeout_s: float):
        """The next JSON line from the worker, or None at the deadline or end of file."""
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


def equivalent(gold: str, pred: str, timeout_s: float) -> bool:
    """True iff math-verify proves ``pred`` equal to ``gold`` within ``timeout_s`` seconds of compute.

    Both are bare answers (e.g. ``\\frac{1}{2}`` and ``0.5``), not whole responses. A timeout or a crash of
    the comparison is a mismatch. Thread-safe. Wall time is ``timeout_s`` plus milliseconds, plus a
    worker's start-up when this is the first call with no idle worker.
    """
    with _pool_lock:
        worker = _idle_workers.pop() if _idle_workers else _Worker()
    verdict = worker.ask(gold, pred, timeout_s)
    if verdict is None:
        worker.kill()
        return False
    with _pool_lock:
        _idle_workers.append(worker)
    return verdict
