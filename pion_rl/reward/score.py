"""The reward of one response: does its last boxed answer match the ground truth?"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from collections.abc import Sequence
from typing import Any

from pion_rl.reward import symbolic
from pion_rl.reward.boxed import MAX_ANSWER_CHARS, last_boxed_answer
from pion_rl.reward.normalize import normalize_answer

logger = logging.getLogger(__name__)

MODES = ("strict", "math_verify", "paper")
# The data sources data_prep and the CPU demo write (all math with a boxed final answer, all scored by the same
# rule). Another source is scored the same way with a one-time warning: a reward wired to the wrong dataset
# should be visible.
DATA_SOURCES = ("zwhe99/DeepMath-103K", "aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench",
                "synthetic_arith")
# Keyword arguments verl 0.9.1's reward managers add to the call when a reward model router is configured.
_VERL_CALL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
_warned_sources: set[str] = set()


class _Occurrences:
    """A count of one kind of trouble in this process, logged at its 1st, 10th, 100th... occurrence, so that it
    shows without flooding the log (verl scores in worker processes: the count lives where the log is)."""

    def __init__(self, message: str) -> None:
        self.message = message  # formatted with the running count and the latest data_source
        self.count = 0
        self._lock = threading.Lock()

    def note(self, data_source: str) -> None:
        with self._lock:
            self.count += 1
            count = self.count
        if math.log10(count).is_integer():
            logger.warning(self.message, count, data_source)


_missing_ground_truths = _Occurrences(
    "%d response(s) so far had a missing or empty ground truth (latest from data_source %r) and scored 0; check "
    "the dataset's reward_model.ground_truth column")
_timeouts = _Occurrences(
    "%d comparison(s) so far used up reward_kwargs.verify_timeout_s of CPU time and counted as no match (latest "
    "from data_source %r); validation shows them as timed_out")


def check_options(*, mode: str = "strict", verify_timeout_s: float = 1.0, **verl_kwargs) -> None:
    """Raise ValueError / TypeError, saying what to change, for options `compute_score` would reject:
    ``mode`` one of :data:`MODES`, ``verify_timeout_s`` a number of CPU seconds > 0, no unknown keyword.

    Takes ``reward.custom_reward_function.reward_kwargs`` as keyword arguments, as verl passes them; the
    recipes' ``DRY_RUN=1`` calls it so a bad option fails before a run is launched, not at its first reward.
    """
    if mode not in MODES:
        raise ValueError(f"unknown reward mode {mode!r}: use one of {MODES} (reward_kwargs.mode)")
    timeout = verify_timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not 0 < timeout < math.inf:
        raise ValueError(
            f"reward_kwargs.verify_timeout_s must be a number of seconds > 0 (the CPU time each math_verify or "
            f"paper comparison may use), got {verify_timeout_s!r}"
        )
    unknown_kwargs = set(verl_kwargs) - _VERL_CALL_KWARGS
    if unknown_kwargs:
        raise TypeError(
            f"compute_score got unknown keyword arguments {sorted(unknown_kwargs)}: the reward accepts mode= "
            f"and verify_timeout_s= (check reward.custom_reward_function.reward_kwargs)"
        )


def missing_ground_truth_count() -> int:
    """How many responses this process scored 0 because their ground truth was missing or empty."""
    return _missing_ground_truths.count


def timeout_count() -> int:
    """How many comparisons this process cut off at ``verify_timeout_s`` of CPU time (each scored no match)."""
    return _timeouts.count


def _ground_truths(ground_truth: Any) -> list[str | float]:
    """The acceptable answers a ground truth gives: a string, a number as a float, each element of a list /
    tuple / array; nothing for None, NaN or an empty string."""
    if ground_truth is None:
        return []
    if isinstance(ground_truth, str):
        return [ground_truth] if ground_truth.strip() else []
    if isinstance(ground_truth, numbers.Real) and not isinstance(ground_truth, bool):
        return [] if math.isnan(ground_truth) else [float(ground_truth)]
    if isinstance(ground_truth, Sequence) or hasattr(ground_truth, "tolist"):  # numpy arrays from parquet
        items = ground_truth.tolist() if hasattr(ground_truth, "tolist") else list(ground_truth)
        if not isinstance(items, list):  # a numpy scalar
            return _ground_truths(items)
        return [answer for item in items for answer in _ground_truths(item)]
    return [str(ground_truth)]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    mode: str = "strict",
    verify_timeout_s: float = 1.0,
    **verl_kwargs,
) -> dict:
    """Score one response: ``{"score": 1.0 or 0.0, "acc": bool, "pred": extracted answer or "",
    "timed_out": bool}``.

    ``pred`` is the content of the LAST ``\\boxed{...}`` of ``solution_str`` (see `last_boxed_answer`), in every
    mode. Then:

    - ``mode="strict"`` (the function's default): correct iff ``pred`` equals ``ground_truth`` after the light
      normalisation of `normalize_answer` (whitespace, ``$``, ``\\left``/``\\right``, spacing commands,
      ``\\dfrac``, ``\\text{}`` wrappers, trailing period). Deterministic, microseconds, no subprocess.
    - ``mode="paper"`` (the recipes' default): exactly the verdict of verl's
      ``verl.utils.reward_score.math_reward.compute_score(solution_str, ground_truth)``, the reward the paper's
      release scores DeepMath with (its own box extraction, Hendrycks MATH normalisation: units, ``\\%``,
      ``^\\circ``, ``x =``, ``1/2`` = ``\\frac12`` = ``0.5``). It runs in a worker process under the CPU-time
      bound below (a few milliseconds a call).
    - ``mode="math_verify"``: correct iff strict says so or math-verify proves the two equivalent
      (``\\frac{1}{2}`` = ``0.5``, ``(x+1)^2`` = ``x^2+2x+1``, ...). It never scores below strict. Warm
      comparisons of ordinary answers take 1 to 100 ms of CPU time.

    In ``paper`` and ``math_verify`` mode each comparison may use ``verify_timeout_s`` seconds of CPU time
    (not wall time: the verdict does not depend on machine load); one that uses them up scores 0, sets
    ``timed_out`` (verl's validation shows it as ``val-aux/<data_source>/timed_out/mean@<n>``) and is counted
    (:func:`timeout_count`, and a logged warning at the 1st, 10th, 100th... occurrence, for training steps,
    whose metrics verl does not take from the reward). The first call of a process (per concurrent thread)
    also starts a worker: 1 to 3 s of imports for math_verify, milliseconds for paper.

    ``ground_truth`` is normally a string. A number is compared in its plain form (27.0 as "27", 0.5 as
    "0.5"); a list (tuple, numpy array) lists acceptable answers, any of which scores 1. A missing ground
    truth (None, NaN, an empty string or list) scores 0 in every mode and is counted
    (:func:`missing_ground_truth_count`, and a logged warning at the 1st, 10th, 100th... occurrence), so data
    errors show.

    verl passes ``reward.custom_reward_function.reward_kwargs`` as keyword arguments, so the override
    ``reward.custom_reward_function.reward_kwargs.mode=math_verify`` selects the mode (no ``+``: the recipe
    config already sets ``mode``). ``extra_info`` and the keyword arguments verl adds for reward models are
    ignored. The four keys are always present (verl stacks ``reward_extra_info`` across samples, key by key);
    ``pred`` feeds verl's majority-vote metrics.

    Never raises on the content of ``solution_str`` or ``ground_truth`` and returns in bounded time for any
    of them (answers longer than ``MAX_ANSWER_CHARS`` count as no answer in strict and math_verify mode).
    Raises only for a configuration error: bad options (see :func:`check_options`), an unknown keyword
    argument, or a scoring worker that cannot start.
    """
    check_options(mode=mode, verify_timeout_s=verify_timeout_s, **verl_kwargs)
    if data_source not in DATA_SOURCES and data_source not in _warned_sources:
        _warned_sources.add(data_source)
        logger.warning(
            "data_source %r is not one of %s; scoring it with the boxed-answer rule", data_source, DATA_SOURCES
        )

    answers = _ground_truths(ground_truth)
    if not answers:
        _missing_ground_truths.note(data_source)
    response = solution_str if isinstance(solution_str, str) else str(solution_str)
    pred = last_boxed_answer(response)
    verdict = symbolic.Verdict(match=False, timed_out=False)
    for answer in answers:
        if mode == "paper":
            verdict = symbolic.compare("paper", response, _plain_text(answer), verify_timeout_s)
        elif pred is not None:
            verdict = _matches(pred, answer, mode, verify_timeout_s)
        if verdict.timed_out:
            _timeouts.note(data_source)
        if verdict.match:
            break
    return {"score": 1.0 if verdict.match else 0.0, "acc": verdict.match, "pred": pred or "",
            "timed_out": verdict.timed_out and not verdict.match}


def _plain_text(ground_truth: str | float) -> str:
    """A ground truth as text: a number in its plain form (27.0 as "27", 0.5 as "0.5")."""
    if isinstance(ground_truth, float):
        return str(int(ground_truth)) if ground_truth.is_integer() else repr(ground_truth)
    return ground_truth


def _matches(pred: str, ground_truth: str | float, mode: str, verify_timeout_s: float) -> symbolic.Verdict:
    """The strict / math_verify verdict on one acceptable answer."""
    normal_pred = normalize_answer(pred)
    # A numeric ground truth matches the same number however it is written ("27", "27.0"); math-verify (if on)
    # then compares its plain form ("27", "0.5") with forms like \frac{1}{2}.
    if isinstance(ground_truth, float) and _as_number(normal_pred) == ground_truth:
        return symbolic.Verdict(match=True, timed_out=False)
    ground_truth = _plain_text(ground_truth)
    if normal_pred and normal_pred == normalize_answer(ground_truth):
        return symbolic.Verdict(match=True, timed_out=False)
    if mode == "math_verify" and normal_pred and len(ground_truth) <= MAX_ANSWER_CHARS:
        return symbolic.compare("math_verify", ground_truth, pred, verify_timeout_s)
    return symbolic.Verdict(match=False, timed_out=False)


def _as_number(answer: str) -> float | None:
    try:
        return float(answer) if len(answer) <= 64 else None
    except ValueError:
        return None
