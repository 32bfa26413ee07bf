"""What both generation backends share: the request, the sampling settings, the prompt text, progress.

A request is one problem: its chat messages and the number of samples to draw (the benchmark's k).
Backends return, per request, the list of its k response texts.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    messages: list[dict]  # the row's chat prompt, e.g. [{"role": "user", "content": "..."}]
    n: int  # samples to draw
    index: int = 0  # position in the whole evaluation: seeds its samples, whichever job draws them


@dataclass(frozen=True)
class Sampling:
    """Nucleus sampling at ``temperature`` (0 = greedy), no top-k, at most ``max_new_tokens`` per response.
    ``seed`` makes a run repeatable on the same machine and software."""

    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


def chat_prompts(tokenizer: Any, requests: list[Request]) -> list[str]:
    """Each request's prompt as the model sees it: its chat template with the assistant turn opened."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the model's tokenizer has no chat template, and evaluation prompts are chat messages: "
                         "evaluate a chat model (its template in chat_template.jinja or tokenizer_config.json)")
    return [tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests]


class Progress:
    """Problems done, samples per second and elapsed time on stderr, at most every ``every_s`` seconds."""

    def __init__(self, label: str, total_problems: int, every_s: float = 5.0, stream=None):
        self.label, self.total, self.every_s = label, total_problems, every_s
        self.stream = stream  # None: sys.stderr at print time (a Progress travels to a child process)
        self.started = self.last = time.perf_counter()
        self.problems = self.samples = 0

    def update(self, problems: int, samples: int) -> None:
        self.problems += problems
        self.samples += samples
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.problems >= self.total:
            self.last = now
            elapsed = now - self.started
            print(f"{self.label}: {self.problems}/{self.total} problems, {self.samples / max(elapsed, 1e-9):.1f} "
                  f"samples/s, {elapsed:.0f} s", file=self.stream or sys.stderr, flush=True)
