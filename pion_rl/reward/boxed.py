"""Extraction of the final answer: the content of the last ``\\boxed`` (or ``\\fbox``) in a text.

One implementation serves the reward (the model's answer) and data preparation (DeepMath's ``final_answer``).
"""

from __future__ import annotations

import re

# An answer longer than this is not a final answer; the cap also bounds the scan on hostile input
# (a million unclosed braces costs at most this many steps).
MAX_ANSWER_CHARS = 1024

_COMMANDS = ("\\boxed", "\\fbox")
# `\boxed 5` (no braces, as in the MATH dataset's solutions): the answer runs to whitespace or `$`.
_UNBRACED_ANSWER = re.compile(r"[ \t]+([^\s$]{1,%d})" % MAX_ANSWER_CHARS)


def last_boxed_answer(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x`` in ``text``, or None.

    "Last" means the command that starts last, so in ``\\boxed{\\boxed{1}}`` it is the inner one. Braces are
    balanced, and LaTeX's escaped ``\\{`` / ``\\}`` (set braces) do not count. None when there is no such
    command, when the last one is not followed by ``{`` or a space (``\\boxedx``), when its brace never closes
    (a truncated response), or when its content exceeds ``MAX_ANSWER_CHARS``. The content is returned verbatim
    (not stripped); an empty ``\\boxed{}`` gives "".
    """
    command, start = max(((c, text.rfind(c)) for c in _COMMANDS), key=lambda found: found[1])
    if start < 0:
        return None
    after = start + len(command)
    if text.startswith("{", after):
        return _braced_content(text, after)
    unbraced = _UNBRACED_ANSWER.match(text, after)
    return unbraced.group(1) if unbraced else None


def _braced_content(text: str, open_brace: int) -> str | None:
    """Content between ``text[open_brace] == "{"`` and its matching ``}``, or None if it does not close within
    ``MAX_ANSWER_CHARS`` characters."""
    depth = 0
    end = min(len(text), open_brace + MAX_ANSWER_CHARS + 2)
    i = open_brace
    while i < end:
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character (`\{`, `\}`, `\\`) is never a group delimiter
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : i]
        i += 1
    return None
