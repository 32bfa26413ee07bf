"""Answer comparisons that can run long, bounded by the CPU time they use, safe to call from any thread:
math-verify's symbolic equivalence (``mode=math_verify``) and verl's ``math_reward`` (``mode=paper``).

math-verify can hang on legal LaTeX (``\\boxed{9^{9^{9^{9}}}}`` makes sympy evaluate a tower) and verl's
scorer does string work proportional to hostile input; math-verify's own timeout relies on SIGALRM, which
raises off the main thread (verl's reward managers call the reward from a thread pool) and cannot interrupt a
long C-level integer operation anyway. So comparisons run in worker processes (`pion_rl.reward._verify_child`),
which run each one in a fork that the kernel ends when it has used its CPU time: the verdict does not depend
on how loaded the machine is.

Workers are plain subprocesses (not `multiprocessing`, whose children re-import the parent's ``__main__``:
a Ray worker's, a training script's), one kind per scorer, and long-lived: a comparison costs its compute
plus a few milliseconds, a fresh worker its imports (math-verify's and its warm-up: one to two seconds;
verl's scorer: milliseconds), paid once per concurrent caller. Each pool grows to the number of concurrent
callers. A worker that stops answering is killed with its forks (it leads its own process group) and replaced
by the next call.
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
from typing import NamedTuple

# A worker that has not finished importing by then is broken, not slow.
STARTUP_TIMEOUT_S = 60.0

_idle_workers: dict[str, list[_Worker]] = {}
_pool_lock = threading.Lock()


class Verdict(NamedTuple):
    """The outcome of one comparison: a match, and whether it was cut off (a cut-off comparison is no match)."""

    match: bool
    timed_out: bool


def _backstop_s(cpu_s: float) -> float:
    """Wall seconds after which a worker that has not answered a ``cpu_s`` comparison is taken for stopped or
    broken: enough for the comparison to get a thirtieth of a core, plus a minute. Only a worker that has
    lost its way hits it; a slow one is bounded by CPU time in the worker."""
    return 60.0 + 30.0 * cpu_s


class _Worker:
    """One scorer subprocess, spoken to in JSON lines over its stdin / stdout."""

    def __init__(self, scorer: str) -> None:
        self.scorer = scorer
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pion_rl.reward._verify_child", scorer],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,  # its own process group, so `kill` also reaches a comparison in flight
            # The worker imports pion_rl the way this process did, installed or not.
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.ready = False
        self._pending = b""

    def ask(self, a: str, b: str, cpu_s: float) -> bool | str | None:
        """The worker's reply (True, False or "timeout"), or None if the worker itself failed: died, or did not
        answer within the backstop."""
        try:
            if not self.ready:
                self._wait_until_ready()
            self.process.stdin.write((json.dumps([a, b, cpu_s]) + "\n").encode())
            reply = self._read_reply(_backstop_s(cpu_s))
        except OSError:  # the worker died (e.g. killed by the OOM killer): its pipe is broken
            return None
        return reply if reply in (True, False, "timeout") else None

    def _wait_until_ready(self) -> None:
        if self._read_reply(STARTUP_TIMEOUT_S) != "ready":
            self.kill()
            # A broken environment (math-verify or verl missing, pion_rl not importable) must not pass for a run
            # of wrong answers: this is the one failure the reward reports loudly.
            raise RuntimeError(
                f"the {self.scorer} scoring worker did not start (exit code {self.process.returncode}); its error "
                f"is above on stderr. Check that `{sys.executable} -m pion_rl.reward._verify_child {self.scorer}` "
                f"runs."
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


def compare(scorer: str, a: str, b: str, cpu_s: float) -> Verdict:
    """``scorer``'s verdict on ``a``, ``b`` given ``cpu_s`` seconds of CPU time (see `_verify_child` for the
    scorers and their arguments). A comparison that uses up its time, or a worker that stops answering, is
    no match and ``timed_out``; a crash of the comparison is no match. Thread-safe. Wall time is the
    comparison's plus milliseconds, plus a worker's start-up when no idle worker of ``scorer`` is left.
    """
    with _pool_lock:
        idle = _idle_workers.setdefault(scorer, [])
        worker = idle.pop() if idle else _Worker(scorer)
    reply = worker.ask(a, b, cpu_s)
    if reply is None:
        worker.kill()
        return Verdict(match=False, timed_out=True)
    with _pool_lock:
        _idle_workers[scorer].append(worker)
    return Verdict(match=reply is True, timed_out=reply == "timeout")

