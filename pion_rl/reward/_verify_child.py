"""The worker process behind `pion_rl.reward.symbolic`: one scorer's comparisons, each in a forked process
bounded by the CPU time it uses.

Run as ``python -m pion_rl.reward._verify_child SCORER``, SCORER one of `SCORERS`:

- ``math_verify``: are two bare answers (box contents) equivalent for math-verify?
- ``paper``: does verl's ``math_reward.compute_score(response, ground_truth)`` give 1? (the paper's reward)

Protocol, one JSON line each way: once warm, the worker writes ``"ready"``; then for each request
``[a, b, cpu_s]`` it writes ``true``, ``false``, or ``"timeout"`` when the comparison used ``cpu_s`` seconds
of CPU time and was killed.

Why CPU time: a wall-clock limit makes the verdict depend on machine load (math-verify comparisons took
0.35-0.55 s on a loaded 2-core machine, and correct answers hit a 1 s wall limit in one run of three). Each
comparison runs in a fork of this warm, single-threaded process (a few milliseconds; fork is safe here because
no other thread exists) that arms ``ITIMER_PROF``, the timer of its own CPU time (user + system). At the limit
the kernel sends SIGPROF, whose default action ends the fork even inside C code (a huge integer power), which
math-verify's own SIGALRM timeout cannot interrupt (it is off). A stopped or starved fork uses no CPU time and
keeps its verdict; the caller's wall-clock backstop only catches a worker that never answers.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path

# sympy can be asked to build 10^(10^10); past this a comparison fails with MemoryError (a mismatch) instead
# of taking the node's memory. The worker needs about 100 MB.
ADDRESS_SPACE_LIMIT_BYTES = 1 << 30
TIMEOUT = "timeout"


def math_verify_scorer() -> Callable[[str, str], bool]:
    """math-verify's verdict on two bare answers (no surrounding text), each read as the content of a box;
    warmed up, so that every fork starts warm."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    extraction = (LatexExtractionConfig(), ExprExtractionConfig())

    def equivalent(gold: str, pred: str) -> bool:
        try:
            gold_parsed = parse(f"\\boxed{{{gold}}}", extraction, parsing_timeout=None)
            pred_parsed = parse(f"\\boxed{{{pred}}}", extraction, parsing_timeout=None)
            return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None))
        except Exception:  # includes RecursionError and MemoryError: a failure to compare is a mismatch
            return False

    # math-verify warns once per process that its timeout is off, and on every parse failure: noise here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # One of each kind of comparison: sympy initialises lazily, and the first polynomial, set or interval
    # comparison of a process costs up to a second. Paying it here, before "ready", keeps every fork warm.
    for gold, pred in [("x^2+2x+1", "(x+1)^2"), (r"\{1,2\}", r"\{2,1\}"), ("[0,1)", "[0, 1)"),
                       (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}")]:
        equivalent(gold, pred)
    return equivalent


def paper_scorer() -> Callable[[str, str], bool]:
    """verl's own ``math_reward.compute_score(response, ground_truth) == 1``, the official release's DeepMath
    reward. Its file imports nothing, so it is loaded by path: importing it as a module of the ``verl`` package
    would import verl itself (torch and more: about 5 s and 400 MB per worker)."""
    verl = importlib.util.find_spec("verl")  # finds the installed package without importing it
    if verl is None or verl.origin is None:
        raise ModuleNotFoundError("mode=paper scores with verl's math_reward, but verl is not installed here")
    path = Path(verl.origin).parent / "utils" / "reward_score" / "math_reward.py"
    spec = importlib.util.spec_from_file_location("verl_math_reward", path)
    math_reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(math_reward)
    return lambda response, ground_truth: math_reward.compute_score(response, ground_truth) == 1.0


SCORERS = {"math_verify": math_verify_scorer, "paper": paper_scorer}


def verdict_within(compare: Callable[[str, str], bool], a: str, b: str, cpu_s: float) -> bool | str:
    """``compare(a, b)`` computed in a forked process given ``cpu_s`` seconds of CPU time; `TIMEOUT` if it
    used them up, False if it failed otherwise (an exception, a crash)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            signal.setitimer(signal.ITIMER_PROF, cpu_s)  # SIGPROF's default action ends this fork at the limit
            os.write(write_fd, b"1" if compare(a, b) else b"0")
        finally:
            os._exit(0)  # never back into the worker's loop, whatever happened
    os.close(write_fd)
    try:
        reply = os.read(read_fd, 1)  # b"" once the fork has ended without answering
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if reply:
        return reply == b"1"
    return TIMEOUT if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGPROF else False


def main() -> None:
    [scorer_name] = sys.argv[1:]
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT_BYTES, ADDRESS_SPACE_LIMIT_BYTES))
    # The protocol owns the original stdout. What libraries print there (verl's scorer prints every exception
    # it catches) is dropped; their warnings and errors still reach stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    compare = SCORERS[scorer_name]()
    replies.write(json.dumps("ready") + "\n")
    replies.flush()
    for line in sys.stdin:
        a, b, cpu_s = json.loads(line)
        replies.write(json.dumps(verdict_within(compare, a, b, cpu_s)) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
