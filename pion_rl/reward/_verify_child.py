"""The worker process behind `pion_rl.reward.symbolic`: answers "are these two answers equivalent?" with
math-verify, each comparison in a forked process that is killed at its deadline.

Run as ``python -m pion_rl.reward._verify_child``. Protocol, one JSON line each way: once warm, the worker
writes ``"ready"``; then for each request ``[gold, pred, timeout_s]`` it writes ``true`` or ``false``.

math-verify's own timeout uses SIGALRM, which only works on a main thread and cannot interrupt C code (a
huge integer power), so it is off. Instead every comparison runs in a fork of this warm, single-threaded
process (a few milliseconds; fork is safe here because no other thread exists) and the fork is SIGKILLed at
the deadline: the worker itself never blocks longer than ``timeout_s``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import signal
import sys

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# sympy can be asked to build 10^(10^10); past this a comparison fails with MemoryError (a mismatch) instead
# of taking the node's memory. The worker needs about 100 MB.
ADDRESS_SPACE_LIMIT_BYTES = 1 << 30

_EXTRACTION = (LatexExtractionConfig(), ExprExtractionConfig())
# One of each kind of comparison: sympy initialises lazily, and the first polynomial, set or interval
# comparison of a process costs up to a second. Paying it here, before "ready", keeps every fork warm.
_WARM_UP = [
    ("x^2+2x+1", "(x+1)^2"),
    (r"\{1,2\}", r"\{2,1\}"),
    ("[0,1)", "[0, 1)"),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),
]


def equivalent(gold: str, pred: str) -> bool:
    """math-verify's verdict on two bare answers (no surrounding text), each read as the content of a box."""
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", _EXTRACTION, parsing_timeout=None)
        pred_parsed = parse(f"\\boxed{{{pred}}}", _EXTRACTION, parsing_timeout=None)
        return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # includes RecursionError and MemoryError: a failure to compare is a mismatch
        return False


def equivalent_within(gold: str, pred: str, timeout_s: float) -> bool:
    """`equivalent` computed in a forked process; False if that process has not answered after ``timeout_s``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.write(write_fd, b"1" if equivalent(gold, pred) else b"0")
        os._exit(0)
    os.close(write_fd)
    try:
        answered = select.select([read_fd], [], [], timeout_s)[0]
        verdict = os.read(read_fd, 1) == b"1" if answered else False
    finally:
        os.close(read_fd)
        os.kill(pid, signal.SIGKILL)  # a no-op on a fork that has already exited (a zombie until reaped)
        os.waitpid(pid, 0)
    return verdict


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT_BYTES, ADDRESS_SPACE_LIMIT_BYTES))
    # math-verify warns once per process that its timeout is off, and on every parse failure: noise here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # The protocol owns the original stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for gold, pred in _WARM_UP:
        equivalent(gold, pred)
    replies.write(json.dumps("ready") + "\n")
    replies.flush()
    for line in sys.stdin:
        gold, pred, timeout_s = json.loads(line)
        replies.write(json.dumps(equivalent_within(gold, pred, timeout_s)) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
