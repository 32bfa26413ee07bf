"""What a numeric optimizer option may be, checked with one clear error (shared by every optimizer here)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class Number:
    """The values a numeric option may take: a finite real (an integer if ``integer``) between ``low`` and
    ``high`` (ends excluded when ``*_open``); a tuple of ``length`` such numbers when ``length`` is set; None
    too when ``optional``."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    length: int | None = None
    optional: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low > -math.inf and self.high < math.inf:
            bounds = f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low > -math.inf:
            bounds = f" {'>' if self.low_open else '>='} {self.low:g}"
        else:
            bounds = ""
        if self.length is not None:
            kind = f"{self.length} {'integers' if self.integer else 'numbers'}" + (" each" if bounds else "")
        return kind + bounds + (" or None" if self.optional else "")

    def check(self, owner: str, key: str, value: Any) -> None:
        """Raise TypeError (not a number) or ValueError (out of range) saying what ``key`` must be."""
        if value is None and self.optional:
            return
        items = [value]
        if self.length is not None:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != self.length:
                raise TypeError(f"{owner}: {key} must be {self.describe()}, got {value!r}")
            items = list(value)
        for item in items:
            if isinstance(item, Tensor) and item.numel() == 1 and not self.integer:
                item = item.item()
            wanted = numbers.Integral if self.integer else numbers.Real
            if isinstance(item, bool) or not isinstance(item, wanted):
                hint = " (a string: give the number itself, without quotes)" if isinstance(item, str) else ""
                raise TypeError(f"{owner}: {key} must be {self.describe()}, got {value!r}{hint}")
            too_low = item <= self.low if self.low_open else item < self.low
            too_high = item >= self.high if self.high_open else item > self.high
            if not math.isfinite(item) or too_low or too_high:
                raise ValueError(f"{owner}: {key} must be {self.describe()}, got {value!r}")
