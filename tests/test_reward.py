"""pion_rl.reward: the boxed-answer reward, its three modes, its CPU-time bound, and its path through verl."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.utils.reward_score import math_reward

from pion_rl.demo.tokenizer import build_tokenizer
from pion_rl.reward import (MAX_ANSWER_CHARS, check_options, compute_score, last_boxed_answer,
                            missing_ground_truth_count, normalize_answer, symbolic, timeout_count)

DEEPMATH = "zwhe99/DeepMath-103K"  # the data_source data_prep/deepmath.py writes, as the paper's release does
# The CPU time the hostile-input tests give each comparison, and the generous wall-time bound of one call.
HOSTILE_CPU_S = 0.25
TIME_BOUND_S = 2.0


@pytest.fixture(scope="module", autouse=True)
def warm_verify_pool():
    """Start the math-verify forkserver once (about a second, once per process) so timings below measure
    the steady state."""
    assert compute_score(DEEPMATH, r"\boxed{0.5}", r"\frac{1}{2}", mode="math_verify")["score"] == 1.0
    assert compute_score(DEEPMATH, r"\boxed{0.5}", r"\frac{1}{2}", mode="paper")["score"] == 1.0


@pytest.mark.parametrize(
    ("response", "ground_truth", "expected_pred", "expected_score"),
    [
        (r"So the answer is $\boxed{42}$.", "42", "42", 1.0),
        (r"\boxed{ 42 }", "42", " 42 ", 1.0),
        (r"\boxed{\left( 1, 2 \right)}", "(1,2)", r"\left( 1, 2 \right)", 1.0),
        (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", r"\dfrac{1}{2}", 1.0),
        (r"\boxed{\text{B}}", "B", r"\text{B}", 1.0),
        (r"\boxed{3\!\cdot\!5.}", r"3 \cdot 5", r"3\!\cdot\!5.", 1.0),
        (r"\boxed{x \in [0, 1)}", r"x\in[0,1)", r"x \in [0, 1)", 1.0),
        (r"\fbox{7}", "7", "7", 1.0),
        (r"the answer is $\boxed 7$", "7", "7", 1.0),
        (r"\boxed{43}", "42", "43", 0.0),
        (r"\boxed{-1}", "1", "-1", 0.0),
        (r"\boxed{\frac{1}{2}}", "0.5", r"\frac{1}{2}", 0.0),
        (r"\boxed{5\text{ cm}}", "5", r"5\text{ cm}", 0.0),  # units are not stripped (documented)
        (r"\boxed{\leftarrow}", "arrow", r"\leftarrow", 0.0),  # only the \left command goes, not \leftarrow
        ("The answer is 42.", "42", "", 0.0),
        (r"\boxed{}", "", "", 0.0),  # an empty answer never matches, even an empty ground truth
        (r"\boxedx", "x", "", 0.0),
    ],
)
def test_strict_known_matches_and_mismatches(response, ground_truth, expected_pred, expected_score):
    result = compute_score(DEEPMATH, response, ground_truth)
    assert result == {"score": expected_score, "acc": expected_score == 1.0, "pred": expected_pred, "timed_out": False}


MATRIX_SPACED = r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}"
MATRIX_TIGHT = r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"


def test_strict_keeps_a_row_break_followed_by_a_space():
    r"""`\\ 3` is a row break then 3: its second backslash must not start the spacing command `\ `."""
    assert normalize_answer(MATRIX_SPACED) == normalize_answer(MATRIX_TIGHT) == MATRIX_TIGHT
    assert compute_score(DEEPMATH, f"\\boxed{{{MATRIX_SPACED}}}", MATRIX_TIGHT)["score"] == 1.0
    assert compute_score(DEEPMATH, f"\\boxed{{{MATRIX_TIGHT}}}", MATRIX_SPACED)["score"] == 1.0
    assert normalize_answer(r"a \\\ b") == r"a\\b"  # a row break, then the space command: only the latter goes


def test_the_last_boxed_answer_counts():
    two_answers = r"First guess \boxed{1}. On reflection, \boxed{2}."
    assert compute_score(DEEPMATH, two_answers, "2")["score"] == 1.0
    assert compute_score(DEEPMATH, two_answers, "1")["score"] == 0.0
    # A response cut off inside its last box has no final answer, whatever came before.
    truncated = r"First guess \boxed{1}. On reflection, \boxed{\frac{1}{"
    assert compute_score(DEEPMATH, truncated, "1") == {"score": 0.0, "acc": False, "pred": "", "timed_out": False}
    # \fbox and \boxed compete on position.
    assert last_boxed_answer(r"\boxed{1} \fbox{2}") == "2"
    assert last_boxed_answer(r"\fbox{1} \boxed{2}") == "2"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"\boxed{\frac{a}{b^{2}}} rest", r"\frac{a}{b^{2}}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{x \} y}", r"x \} y"),  # an escaped brace does not close the box
        (r"\boxed{a \\ b}", r"a \\ b"),  # an escaped backslash does not escape the brace after it
        (r"\boxed{\boxed{1}}", "1"),  # the last command to start is the inner one
        ("\\boxed{" + "{" * 40 + "x" + "}" * 40 + "}", "{" * 40 + "x" + "}" * 40),
        ("\\boxed{" + "a" * MAX_ANSWER_CHARS + "}", "a" * MAX_ANSWER_CHARS),
        ("\\boxed{" + "a" * (MAX_ANSWER_CHARS + 1) + "}", None),
        (r"no box at all", None),
    ],
)
def test_boxed_extraction_balances_braces(text, answer):
    assert last_boxed_answer(text) == answer


@pytest.mark.parametrize(
    ("pred", "ground_truth"),
    [
        (r"\frac{1}{2}", "0.5"),
        ("0.50", r"\dfrac12"),
        ("(x+1)^2", "x^2+2x+1"),
        (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"),
        (r"\{2, 1\}", r"\{1,2\}"),
    ],
)
def test_math_verify_mode_accepts_equivalent_forms_strict_does_not(pred, ground_truth):
    response = f"Hence $\\boxed{{{pred}}}$."
    assert compute_score(DEEPMATH, response, ground_truth)["score"] == 0.0
    assert compute_score(DEEPMATH, response, ground_truth, mode="math_verify") == {
        "score": 1.0,
        "acc": True,
        "pred": pred,
        "timed_out": False,
    }


@pytest.mark.parametrize(
    ("response", "ground_truth", "strict_score"),
    [
        (r"\boxed{42}", "42", 1.0),
        (r"\boxed{\text{B}}", "B", 1.0),
        (r"\boxed{3}", "2", 0.0),
        (r"\boxed{x^2}", "x^3", 0.0),
        (r"\boxed{\frac{1}{3}}", "0.33", 0.0),
        ("0.5", "0.5", 0.0),  # no box: math_verify mode does not look outside the last box either
    ],
)
def test_math_verify_mode_agrees_with_strict_on_matches_and_true_mismatches(response, ground_truth, strict_score):
    assert compute_score(DEEPMATH, response, ground_truth)["score"] == strict_score
    assert compute_score(DEEPMATH, response, ground_truth, mode="math_verify")["score"] == strict_score


# Where the paper's reward (verl's math_reward, Hendrycks MATH normalisation) and strict disagree, as measured
# against the official release: (answer in the box, ground truth, strict, paper).
PAPER_VS_STRICT = [
    (r"5 \text{ cm}", "5", 0.0, 1.0),  # units
    (r"1/2", r"\frac{1}{2}", 0.0, 1.0),
    (r"x = 42", "42", 0.0, 1.0),
    (r"k=3", "3", 0.0, 1.0),
    ("42", "x = 42", 0.0, 1.0),  # a dropped left-hand side
    (r"30^\circ", "30", 0.0, 1.0),
    (r"30^{\circ}", "30", 0.0, 1.0),
    (r"\frac12", r"\frac{1}{2}", 0.0, 1.0),
    (r"\sqrt2", r"\sqrt{2}", 0.0, 1.0),
    ("0.5", "1/2", 0.0, 1.0),
    (r"\$5", "5", 0.0, 1.0),
    (r"50\%", "50", 0.0, 1.0),
    ("42.", "42", 1.0, 0.0),  # a trailing period
    (r"\text{Yes}", "Yes", 1.0, 0.0),
    (r"1\,000", "1000", 1.0, 0.0),
]
# More responses on which paper mode must give verl's verdict, whatever it is.
PAPER_MORE = [
    (r"\boxed{\fbox{7}}", "7"),
    (r"\fbox{7}", "7"),  # verl finds the \fbox but cannot unwrap it: 0
    (r"the answer is $\boxed 7$", "7"),
    (r"\boxed 7 and later \boxed{8}", "8"),  # verl's unbraced-box rule wins wherever a `\boxed ` appears
    (r"First \boxed{1}, then \boxed{2}.", "2"),
    (r"First \boxed{1}, then \boxed{2}.", "1"),
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left( 1, 2 \right)}", "(1,2)"),
    (r"\boxed{.5}", "0.5"),
    (r"\boxed{(x+1)^2}", "x^2+2x+1"),
    (r"\boxed{0.50}", r"\frac12"),
    (r"\boxed{\{2, 1\}}", r"\{1,2\}"),
    (r"\boxed{x \} y}", r"x \} y"),
    (r"\boxed{\frac{1}{", "1"),
    (r"no box at all, 42", "42"),
    (f"\\boxed{{{MATRIX_SPACED}}}", MATRIX_TIGHT),
    (r"\boxed{5\text{ cm} \text{ more}}", "5"),  # two "\text{ ": verl's unit rule fails, then compares raw
    (r"\boxed{\tfrac{3}{4}}", r"\dfrac34"),
]


@pytest.mark.parametrize(("answer", "ground_truth", "strict", "paper"), PAPER_VS_STRICT)
def test_paper_mode_scores_where_strict_does_not_and_back(answer, ground_truth, strict, paper):
    response = f"So $\\boxed{{{answer}}}$"
    assert compute_score(DEEPMATH, response, ground_truth)["score"] == strict
    assert compute_score(DEEPMATH, response, ground_truth, mode="paper")["score"] == paper


@pytest.mark.parametrize(("response", "ground_truth"),
                         [(f"So $\\boxed{{{a}}}$", g) for a, g, *_ in PAPER_VS_STRICT] + PAPER_MORE)
def test_paper_mode_is_verls_math_reward(response, ground_truth):
    result = compute_score(DEEPMATH, response, ground_truth, mode="paper")
    assert result["score"] == math_reward.compute_score(response, ground_truth)
    assert result["acc"] == (result["score"] == 1.0) and result["timed_out"] is False
    assert result["pred"] == (last_boxed_answer(response) or "")  # the same extraction in every mode


def test_paper_mode_keeps_the_missing_ground_truth_accounting():
    """verl scores an empty box against an empty ground truth 1; a missing ground truth is a data error here."""
    assert math_reward.compute_score(r"\boxed{}", "") == 1.0
    before = missing_ground_truth_count()
    assert compute_score(DEEPMATH, r"\boxed{}", "", mode="paper")["score"] == 0.0
    assert missing_ground_truth_count() == before + 1
    # Numbers and lists: each acceptable answer, in its plain form, goes to verl's scorer.
    assert compute_score(DEEPMATH, r"\boxed{27}", 27.0, mode="paper")["score"] == 1.0
    assert compute_score(DEEPMATH, r"\boxed{\frac12}", 0.5, mode="paper")["score"] == 1.0
    assert compute_score(DEEPMATH, r"\boxed{3 \text{ cm}}", ["2", "3"], mode="paper")["score"] == 1.0


def _readme_mode_table() -> list[list[str]]:
    """The docs' table of where the three modes differ: [answer, ground truth, strict, paper, math_verify]."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    header = "| answer in the box | ground truth | strict | paper | math_verify |"
    lines = doc.split(header, 1)[1].splitlines()[2:]  # past the header's line and its separator
    rows = []
    for line in lines:
        if not line.strip().startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_readme_table_of_modes_is_what_the_modes_score():
    rows = _readme_mode_table()
    assert len(rows) >= 6
    for answer, ground_truth, *scores in rows:
        response = f"\\boxed{{{answer}}}"
        measured = [compute_score(DEEPMATH, response, ground_truth, mode=mode)["score"]
                    for mode in ("strict", "paper", "math_verify")]
        assert measured == [float(score) for score in scores], (answer, ground_truth)
    # It shows each mode above each other somewhere, except strict above math_verify (which never scores below it).
    strict, paper, math_verify = zip(*[[float(x) for x in row[2:]] for row in rows])
    for above, below in ((paper, strict), (strict, paper), (paper, math_verify), (math_verify, paper),
                         (math_verify, strict)):
        assert any(a > b for a, b in zip(above, below))


HOSTILE = {
    "10 MB without a box": ("x" * 10_000_000, "1"),
    "10 MB after the box": (r"\boxed{1}" + "y" * 10_000_000, "2"),
    "a million unclosed braces": ("\\boxed{" + "{" * 1_000_000, "1"),
    "a huge closed box": ("\\boxed{" + "9" * 5_000_000 + "}", "9"),
    "deeply nested balanced braces": ("\\boxed{" + "{" * 200_000 + "}" * 200_000 + "}", "1"),
    "a power tower": (r"\boxed{9^{9^{9^{9}}}}", "1"),
    "a ten-billion-digit number": (r"\boxed{10^{10^{10}}}", "5"),
    "a factorial of a huge number": (r"\boxed{(10^{10})!}", "2"),
    "malformed LaTeX": (r"\boxed{\frac{\sqrt{}{\begin{pmatrix}&&\\\end{}^^_}", "1"),
    "unicode and a lone surrogate": ("\\boxed{\u0663\ud800\U0001f600}", "3"),
    "a huge ground truth": (r"\boxed{1}", "1" * 5_000_000 + "2"),
    "not a string": (None, "1"),
}


@pytest.mark.parametrize("mode", ["strict", "math_verify", "paper"])
@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_inputs_score_zero_fast(case, mode):
    response, ground_truth = HOSTILE[case]
    start = time.perf_counter()
    result = compute_score(DEEPMATH, response, ground_truth, mode=mode, verify_timeout_s=HOSTILE_CPU_S)
    elapsed = time.perf_counter() - start
    assert result["score"] == 0.0 and result["acc"] is False
    assert len(result["pred"]) <= MAX_ANSWER_CHARS
    assert elapsed < TIME_BOUND_S, f"{case} took {elapsed:.2f} s"


def test_pool_recovers_after_a_timeout():
    """A killed worker is replaced: the next comparison is answered correctly, and quickly."""
    assert compute_score(DEEPMATH, r"\boxed{9^{9^{9^{9}}}}", "1", mode="math_verify",
                         verify_timeout_s=HOSTILE_CPU_S)["score"] == 0.0
    start = time.perf_counter()
    assert compute_score(DEEPMATH, r"\boxed{\frac{1}{4}}", "0.25", mode="math_verify")["score"] == 1.0
    assert time.perf_counter() - start < 0.5


def _process_states(group: int) -> list[str]:
    """The states (R, S, Z, ...) of the live processes in a process group, from /proc."""
    states = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == group:  # fields: state, ppid, pgrp, ...
            states.append(fields[0])
    return states


def test_a_stuck_worker_is_killed_with_the_comparison_it_runs(monkeypatch):
    """If a worker itself stops answering (here: stopped with its comparison), the caller still returns at the
    wall-clock backstop, counts a timeout, and no process is left behind."""
    worker = symbolic._idle_workers["math_verify"][-1]  # the one the next call takes (the fixture started one)
    monkeypatch.setattr(symbolic, "_backstop_s", lambda cpu_s: 0.5)
    os.killpg(worker.process.pid, signal.SIGSTOP)  # stopped: it would never answer
    start = time.perf_counter()
    assert symbolic.compare("math_verify", "1", "1", 1.0) == symbolic.Verdict(match=False, timed_out=True)
    assert time.perf_counter() - start < 1.5
    assert worker.process.returncode is not None  # killed, group and all (SIGKILL also ends stopped processes)
    deadline = time.perf_counter() + 5
    while set(_process_states(group=worker.process.pid)) - {"Z"} and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert set(_process_states(group=worker.process.pid)) <= {"Z"}
    monkeypatch.undo()
    assert symbolic.compare("math_verify", "0.5", r"\frac{1}{2}", 1.0) == symbolic.Verdict(match=True, timed_out=False)


def _forks_of(worker) -> list[int]:
    """The pids of the comparison forks a worker runs (its process group, less itself), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == worker.process.pid and int(stat.parent.name) != worker.process.pid:
            pids.append(int(stat.parent.name))
    return pids


def test_a_comparison_slow_in_wall_time_but_cheap_in_cpu_time_keeps_its_verdict():
    """A loaded machine, simulated: the fork computing a 0.25 s (CPU) comparison is stopped for 1.5 s of wall
    time, well past its 1 s budget. The budget is CPU time, which a stopped process does not use, so the correct
    answer still scores 1 (a wall-clock limit scored it 0)."""
    x = "x"
    expanded = " + ".join(f"{c} {x}^{{{30 - k}}}" for k, c in enumerate(_binomial_row(30, 2)))
    response, ground_truth = f"\\boxed{{(x+2)^{{30}}}}", expanded
    stopped = []
    for _ in range(5):  # until a fork is caught computing (it runs about 0.25 s, so nearly always at once)
        worker = symbolic._idle_workers["math_verify"][-1]
        result = {}
        call = threading.Thread(target=lambda: result.update(
            compute_score(DEEPMATH, response, ground_truth, mode="math_verify", verify_timeout_s=1.0)))
        start = time.perf_counter()
        call.start()
        while call.is_alive() and not stopped:
            for pid in _forks_of(worker):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            time.sleep(0.002)
        if stopped:
            time.sleep(1.5)
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        call.join()
        if stopped:
            break
    assert stopped, "no comparison fork was caught running"
    assert time.perf_counter() - start > 1.5  # slower in wall time than its 1 s CPU budget
    assert result == {"score": 1.0, "acc": True, "pred": "(x+2)^{30}", "timed_out": False}


def _binomial_row(n: int, b: int) -> list[int]:
    """Coefficients of (x + b)^n, highest power first."""
    from math import comb

    return [comb(n, k) * b**k for k in range(n + 1)]


def test_a_comparison_that_uses_up_its_cpu_time_scores_zero_and_is_counted(caplog):
    huge_box = "\\boxed{" + "9" * 3_000_000 + "}"  # verl's extraction walks it character by character
    before = timeout_count()
    with caplog.at_level("WARNING", logger="pion_rl.reward.score"):
        result = compute_score(DEEPMATH, huge_box, "9", mode="paper", verify_timeout_s=0.02)
    assert result == {"score": 0.0, "acc": False, "pred": "", "timed_out": True}
    assert timeout_count() == before + 1
    # Given the time, the same comparison finishes, with verl's verdict.
    assert compute_score(DEEPMATH, huge_box, "9" * 3_000_000, mode="paper", verify_timeout_s=30)["score"] == 1.0


def test_math_verify_mode_works_off_the_main_thread():
    """verl calls the reward from a thread pool, where SIGALRM-based timeouts cannot work."""
    cases = [
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        (r"\boxed{(x+1)^2}", "x^2+2x+1", 1.0),
        (r"\boxed{9^{9^{9^{9}}}}", "1", 0.0),
        (r"\boxed{3}", "2", 0.0),
    ]

    def score_all_from_threads():
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(lambda c: compute_score(DEEPMATH, c[0], c[1], mode="math_verify",
                                                         verify_timeout_s=HOSTILE_CPU_S)["score"], cases))

    assert score_all_from_threads() == [expected for _, _, expected in cases]  # starts a worker per thread
    start = time.perf_counter()
    assert score_all_from_threads() == [expected for _, _, expected in cases]
    # Two threads through four calls, one of which uses up its 0.25 s of CPU time.
    assert time.perf_counter() - start < TIME_BOUND_S


def test_configuration_errors_are_loud_and_verl_kwargs_are_accepted():
    with pytest.raises(ValueError, match="unknown reward mode 'fuzzy'"):
        compute_score(DEEPMATH, r"\boxed{1}", "1", mode="fuzzy")
    with pytest.raises(TypeError, match="mdoe"):
        compute_score(DEEPMATH, r"\boxed{1}", "1", mdoe="math_verify")
    result = compute_score(
        DEEPMATH, r"\boxed{1}", "1", extra_info={"index": 3}, reward_router_address=None, reward_model_tokenizer=None
    )
    assert result["score"] == 1.0


@pytest.mark.parametrize("options, message", [
    ({"verify_timeout_s": -1}, r"verify_timeout_s must be a number of seconds > 0 .*got -1"),
    ({"verify_timeout_s": 0}, r"verify_timeout_s must be a number of seconds > 0"),
    ({"verify_timeout_s": "1"}, r"verify_timeout_s must be a number of seconds > 0 .*got '1'"),
    ({"mode": "bogus"}, r"unknown reward mode 'bogus': use one of \('strict', 'math_verify', 'paper'\)"),
])
def test_bad_options_are_a_clear_error_at_the_call(options, message):
    with pytest.raises(ValueError, match=message):
        check_options(**options)
    # The reward itself checks them before any work (no worker traceback, no silent 0).
    with pytest.raises(ValueError, match=message):
        compute_score(DEEPMATH, r"\boxed{1}", "1", **{"mode": "math_verify", **options})
    check_options(mode="math_verify", verify_timeout_s=0.5)  # valid options pass


@pytest.mark.parametrize("ground_truth", [None, "", "   ", float("nan"), [], np.array([], dtype=object)])
def test_a_missing_ground_truth_scores_zero_and_is_counted(ground_truth, caplog):
    before = missing_ground_truth_count()
    # "None" is what str(None) made of a missing ground truth: it must not match.
    for response in (r"\boxed{None}", r"\boxed{nan}", r"\boxed{}", r"\boxed{[]}"):
        assert compute_score(DEEPMATH, response, ground_truth)["score"] == 0.0
    assert missing_ground_truth_count() == before + 4


@pytest.mark.parametrize("counter, trouble, message", [
    ("_missing_ground_truths", (r"\boxed{1}", None, "strict"),
     "100 response(s) so far had a missing or empty ground truth (latest from data_source {source!r})"),
    ("_timeouts", ("\\boxed{" + "9" * 3_000_000 + "}", "9", "paper"),
     "100 comparison(s) so far used up reward_kwargs.verify_timeout_s of CPU time and counted as no match "
     "(latest from data_source {source!r})"),
])
def test_troubles_are_logged_at_the_1st_10th_100th_occurrence(counter, trouble, message, caplog, monkeypatch):
    from pion_rl.reward import score

    monkeypatch.setattr(getattr(score, counter), "count", 98)  # as if 98 had happened in this process
    response, ground_truth, mode = trouble
    with caplog.at_level("WARNING", logger="pion_rl.reward.score"):
        compute_score("amc23", response, ground_truth, mode=mode, verify_timeout_s=0.02)  # the 99th: quiet
        assert caplog.text == ""
        compute_score("amc23", response, ground_truth, mode=mode, verify_timeout_s=0.02)  # the 100th: logged
    assert message.format(source="amc23") in caplog.text


@pytest.mark.parametrize("response, ground_truth, score", [
    (r"\boxed{27}", 27.0, 1.0),
    (r"\boxed{27.0}", 27, 1.0),
    (r"\boxed{27}", np.int64(27), 1.0),
    (r"\boxed{0.5}", np.float64(0.5), 1.0),
    (r"\boxed{28}", 27.0, 0.0),
    (r"\boxed{27.5}", 27, 0.0),
    (r"\boxed{3}", ["2", "3"], 1.0),  # a list gives the acceptable answers
    (r"\boxed{3}", np.array(["2", "3"], dtype=object), 1.0),  # as parquet hands a list column over
    (r"\boxed{3}", (2, 3.0), 1.0),
    (r"\boxed{4}", ["2", "3"], 0.0),
])
def test_numeric_and_list_ground_truths_compare_as_a_user_expects(response, ground_truth, score):
    assert compute_score(DEEPMATH, response, ground_truth)["score"] == score


def test_numeric_ground_truth_meets_math_verify_equivalents():
    assert compute_score(DEEPMATH, r"\boxed{\frac{1}{2}}", 0.5)["score"] == 0.0
    assert compute_score(DEEPMATH, r"\boxed{\frac{1}{2}}", 0.5, mode="math_verify")["score"] == 1.0


# --- through verl 0.9.1's own reward path -------------------------------------------------------------------

# (response, ground truth, strict score, math_verify score, paper score)
VERL_SAMPLES = [
    (r"Adding, we get $\boxed{12}$.", "12", 1.0, 1.0, 1.0),
    (r"So it is \boxed{\frac{1}{2}}.", "0.5", 0.0, 1.0, 1.0),
    (r"I think \boxed{5 \text{ cm}}", "5", 0.0, 1.0, 1.0),
    ("no final answer", "3", 0.0, 0.0, 0.0),
]


def _rollout_batch(tokenizer) -> DataProto:
    """A DataProto shaped like a rollout: left-padded prompts, right-padded responses of different lengths."""
    prompt_len, response_len = 8, 64
    prompts, responses, masks = [], [], []
    for text, *_ in VERL_SAMPLES:
        prompt_ids = tokenizer.encode("Q?", add_special_tokens=False)
        response_ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        assert len(response_ids) <= response_len
        pad = tokenizer.pad_token_id
        prompts.append([pad] * (prompt_len - len(prompt_ids)) + prompt_ids)
        responses.append(response_ids + [pad] * (response_len - len(response_ids)))
        masks.append(
            [0] * (prompt_len - len(prompt_ids)) + [1] * (len(prompt_ids) + len(response_ids))
            + [0] * (response_len - len(response_ids))
        )
    n = len(VERL_SAMPLES)
    return DataProto.from_dict(
        tensors={
            "prompts": torch.tensor(prompts),
            "responses": torch.tensor(responses),
            "attention_mask": torch.tensor(masks),
        },
        non_tensors={
            "data_source": np.array([DEEPMATH] * n, dtype=object),
            "reward_model": np.array(
                [{"style": "rule", "ground_truth": gt} for _, gt, *_ in VERL_SAMPLES], dtype=object
            ),
            "extra_info": np.array([{"split": "test", "index": i} for i in range(n)], dtype=object),
        },
    )


@pytest.mark.parametrize("mode", ["strict", "math_verify", "paper"])
def test_reward_through_verl_reward_loop_worker(tmp_path, mode):
    """verl 0.9.1's main_ppo scores rollouts in RewardLoopWorker -> load_reward_manager -> the registered
    `naive` manager, which loads our function from reward.custom_reward_function (with its reward_kwargs)
    and calls it from a thread pool. Here the same worker class runs in-process on CPU."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager import NaiveRewardManager
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    config = OmegaConf.create(
        {
            "actor_rollout_ref": {"model": {"path": str(tmp_path / "tokenizer"), "tokenizer_path": None}},
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://pion_rl.reward",
                    "name": "compute_score",
                    "reward_kwargs": {"mode": mode},
                },
                "reward_manager": {"source": "register", "name": "naive"},
                "reward_model": {"enable": False},
            },
        }
    )
    worker = RewardLoopWorker(config)
    assert isinstance(worker.reward_manager, NaiveRewardManager)

    data = _rollout_batch(tokenizer)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))

    column = {"strict": 2, "math_verify": 3, "paper": 4}[mode]
    expected = [sample[column] for sample in VERL_SAMPLES]
    assert [out["reward_score"] for out in outputs] == expected
    assert [out["reward_extra_info"]["pred"] for out in outputs] == ["12", r"\frac{1}{2}", r"5 \text{ cm}", ""]
    assert [out["reward_extra_info"]["acc"] for out in outputs] == [s == 1.0 for s in expected]

    # What RewardLoopManager.compute_rm_score does with the outputs: the score at each response's last
    # token, and the extra info stacked key by key (which needs the same keys in every sample).
    rm_scores = NaiveRewardManager.assemble_rm_scores(data, [out["reward_score"] for out in outputs])
    last_token = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].sum(-1) - 1
    assert torch.equal(rm_scores.sum(-1), torch.tensor(expected))
    assert torch.equal(rm_scores[torch.arange(len(expected)), last_token], torch.tensor(expected))
    infos = [out["reward_extra_info"] for out in outputs]
    stacked = {key: np.array([info[key] for info in infos]) for key in infos[0]}
    assert set(stacked) == {"score", "acc", "pred", "timed_out"}

    # Validation metrics consume acc (a mean) and pred (majority votes) per data source; timed_out becomes
    # val-aux/<data_source>/timed_out/mean@<n>, where a run's timeouts show.
    metrics = process_validation_metrics([DEEPMATH] * len(infos), ["same-prompt"] * len(infos), stacked)
    acc_metrics = metrics[DEEPMATH]["acc"]
    assert acc_metrics[f"mean@{len(infos)}"] == pytest.approx(np.mean(expected))
    assert any(name.startswith("maj@") for name in acc_metrics)
    assert metrics[DEEPMATH]["timed_out"][f"mean@{len(infos)}"] == 0.0


def test_check_options_rejects_what_compute_score_rejects_before_any_scoring():
    from pion_rl.reward import check_options

    check_options(mode="math_verify", verify_timeout_s=2)  # the recipe's options pass
    for bad, error in (({"mode": "bogus"}, ValueError), ({"verify_timeout_s": -1}, ValueError),
                       ({"verify_timeout_s": "1"}, ValueError), ({"timeout": 1}, TypeError)):
        with pytest.raises(error) as checked:
            check_options(**bad)
        with pytest.raises(error) as scored:
            compute_score(DEEPMATH, "\\boxed{1}", "1", **bad)
        assert str(checked.value) == str(scored.value)
