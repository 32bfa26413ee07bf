"""The light normalisation behind the strict reward: two answers match when their normal forms are equal.

It removes only what never changes the meaning of a LaTeX answer:
- all whitespace and ``$``;
- sizing and spacing commands: ``\\left``, ``\\right``, ``\\!``, ``\\,``, ``\\;``, ``\\:``, ``\\ ``,
  ``\\quad``, ``\\qquad`` (a row break ``\\\\`` stays, also before a space);
- ``\\dfrac`` / ``\\tfrac`` are written ``\\frac``;
- text wrappers ``\\text{..}``, ``\\textbf{..}``, ``\\textrm{..}``, ``\\mathrm{..}``, ``\\mbox{..}`` are
  replaced by their content (so ``\\text{A}`` matches ``A``);
- trailing periods (end of the sentence around the answer).

Units are NOT stripped: ``5\\text{ cm}`` becomes ``5cm`` and does not match ``5``. Deciding which words are
units is the fuzzy matching strict mode exists to avoid; use ``mode="math_verify"`` for that kind of
leniency. Every pattern here is linear-time, so normalising any input is safe.
"""

from __future__ import annotations

import re

# (?![a-zA-Z]) keeps `\leftarrow`, `\rightarrow`, `\quadrilateral`-like longer commands intact. A `\\` (a row
# break) is matched first and kept whole, so its second backslash never starts a spacing command: `\\ 3` is
# a row break before 3, not `\` followed by the space command `\ `.
_SPACING = re.compile(r"(\\\\)|\\(?:left|right|quad|qquad)(?![a-zA-Z])|\\[!,;: ]")
_FRAC_VARIANT = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_WHITESPACE_OR_DOLLAR = re.compile(r"[\s$]+")


def normalize_answer(answer: str) -> str:
    """The normal form of one answer string (see the module docstring for the rules)."""
    answer = _TEXT_WRAPPER.sub(r"\1", answer)
    answer = _SPACING.sub(r"\1", answer)  # group 1 is a kept row break; spacing commands match empty
    answer = _FRAC_VARIANT.sub(r"\\frac", answer)
    answer = _WHITESPACE_OR_DOLLAR.sub("", answer)
    return answer.rstrip(".")
