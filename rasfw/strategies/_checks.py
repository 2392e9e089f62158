"""One-line validation errors that name the setting and what is allowed."""

from __future__ import annotations

import math
from numbers import Real


def number(setting: str, value: object, allowed: str, ok) -> float:
    """Return `value` as a float if it is a real number satisfying `ok`, else raise `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{setting} must be a number in {allowed}; got {value!r}")
    if not ok(float(value)):
        raise ValueError(f"{setting} must be in {allowed}; got {value!r}")
    return float(value)


def integer(setting: str, value: object, allowed: str, ok) -> int:
    """Return `value` as an int if it is an integer satisfying `ok`, else raise `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{setting} must be an integer in {allowed}; got {value!r}")
    if not ok(value):
        raise ValueError(f"{setting} must be in {allowed}; got {value!r}")
    return int(value)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name if it has none)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def nearest_first(word: str, choices) -> list[str]:
    """`choices` ordered by how close their spelling is to `word` (the likeliest meant first), ties by name."""
    import difflib

    return sorted(choices, key=lambda c: (-difflib.SequenceMatcher(None, word, c).ratio(), c))
