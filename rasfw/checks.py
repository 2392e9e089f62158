"""One-line validation errors that name the setting and what is allowed, shared by the core, the pipelines and
the applications: numbers and integers in a range, a device that is there, the first line of an exception,
the nearest spellings of a misspelt name."""

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


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message (its type's name if it has none), cut to `limit`
    characters (ending in "...") when it is longer."""
    line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def nearest_first(word: str, choices) -> list[str]:
    """`choices` ordered by how close their spelling is to `word` (the likeliest meant first), ties by name."""
    import difflib

    return sorted(choices, key=lambda c: (-difflib.SequenceMatcher(None, word, c).ratio(), c))


def device(setting: str, value: object) -> str:
    """`value` as a device name torch can run on here, or one line naming `setting` (a misspelt device, or
    CUDA / MPS on a machine without it)."""
    import torch

    try:
        parsed = torch.device(str(value))
    except (RuntimeError, TypeError):
        raise ValueError(f"{setting}: {value!r} is not a device; use cpu, cuda, cuda:<index> or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(parsed.type, True):
        raise ValueError(f"{setting}={value}: no {parsed.type} device on this machine; use {setting}=cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"{setting}={value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(value)
