"""The verifiable reward of pion-rl: 1 if the last ``\\boxed{}`` of a response matches the ground truth.

In verl (0.9.1), point the custom reward at this package::

    reward.custom_reward_function.path=pkg://pion_rl.reward
    reward.custom_reward_function.name=compute_score
    reward.custom_reward_function.reward_kwargs.mode=strict   # optional; the recipes set "paper"

verl's default reward manager (``naive``) calls ``compute_score`` once per response from a thread pool and
turns the returned dict into the reward (``score``) plus per-sample metrics (``acc``, ``pred``, ``timed_out``).
"""

from pion_rl.reward.boxed import MAX_ANSWER_CHARS, last_boxed_answer
from pion_rl.reward.normalize import normalize_answer
from pion_rl.reward.score import (DATA_SOURCES, MODES, check_options, compute_score, missing_ground_truth_count,
                                  timeout_count)

__all__ = ["DATA_SOURCES", "MAX_ANSWER_CHARS", "MODES", "check_options", "compute_score", "last_boxed_answer",
           "missing_ground_truth_count", "normalize_answer", "timeout_count"]
