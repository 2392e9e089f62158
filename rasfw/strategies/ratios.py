"""Ratio schedules: the share of image tokens recomputed at each step."""

from __future__ import annotations

import math

from rasfw.checks import integer, number
from rasfw.interfaces import RatioSchedule
from rasfw.registry import register
from rasfw.strategies._proportions import default_warmup


def _ratio(setting: str, value: object) -> float:
    return number(setting, value, "(0, 1]", lambda v: 0 < v <= 1)


def _warmup(value: object) -> int | None:
    """A validated `warmup`: an integer >= 0, or None (the reference's proportion, see `warmup_steps`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ratio.warmup must be an integer in [0, inf) or null (null: 4 of 28, scaled); got {value!r}")
    return integer("ratio.warmup", value, "[0, inf)", lambda v: v >= 0)


def warmup_steps(warmup: int | None, num_steps: int) -> int:
    """Dense warm-up steps of a `num_steps` schedule: `warmup` as given, or for None the reference's 4 of 28
    scaled to `num_steps` (`round(4 / 28 * num_steps)`, at least 1; 4 at 28 steps).

    Args:
        warmup: a schedule's `warmup` setting.
        num_steps: steps of the schedule.
    """
    return default_warmup(num_steps) if warmup is None else warmup


@register("ratio", "constant")
class ConstantRatio(RatioSchedule):
    """`value` at every step after `warmup` dense steps (the reference implementation's default).

    Args:
        value: share of tokens updated at a RAS step, in (0, 1].
        warmup: number of leading dense steps (RAS starts at step `warmup`); None: the reference's 4 of 28
            scaled to the schedule, `round(4 / 28 * steps)`, at least 1 (4 at 28 steps, 1 at 10).
    """

    def __init__(self, value: float = 0.5, warmup: int | None = None) -> None:
        self.value = _ratio("ratio.value", value)
        self.warmup = _warmup(warmup)

    def ratio(self, step: int, num_steps: int, num_tokens: int | None = None) -> float:
        return 1.0 if step < warmup_steps(self.warmup, num_steps) else self.value


@register("ratio", "linear")
class LinearRatio(RatioSchedule):
    """A linear ramp from `start` at the first RAS step to `end` at the last step.

    Args:
        start: ratio at step `warmup`, in (0, 1].
        end: ratio at the last step, in (0, 1].
        warmup: number of leading dense steps; None: the reference's 4 of 28 scaled to the schedule.
    """

    def __init__(self, start: float = 0.75, end: float = 0.25, warmup: int | None = None) -> None:
        self.start = _ratio("ratio.start", start)
        self.end = _ratio("ratio.end", end)
        self.warmup = _warmup(warmup)

    def ratio(self, step: int, num_steps: int, num_tokens: int | None = None) -> float:
        warmup = warmup_steps(self.warmup, num_steps)
        if step < warmup:
            return 1.0
        span = max(num_steps - 1 - warmup, 1)
        return self.start + (self.end - self.start) * min((step - warmup) / span, 1.0)


@register("ratio", "reference_dynamic")
class ReferenceDynamicRatio(RatioSchedule):
    """The reference implementation's block-wise dynamic skip count.

    RAS steps are split into blocks of `block` steps. The skip count of block `b` (of `B` blocks) is
    `(1 - value) * N + delta * (b - (B - 1) / 2)`: fewer tokens skipped early, more late, with the mean
    kept at `(1 - value) * N`. It is rounded down to a multiple of `multiple` tokens and kept in
    `[0, N - 1]`.

    Args:
        value: mean share of tokens updated at RAS steps, in (0, 1].
        warmup: number of leading dense steps; None: the reference's 4 of 28 scaled to the schedule.
        delta: change of the skip count from one block to the next, in tokens.
        block: steps per block (the reference's `L`).
        multiple: the skip count is rounded down to a multiple of this many tokens.
    """

    def __init__(
        self, value: float = 0.5, warmup: int | None = None, delta: int = 256, block: int = 4, multiple: int = 64
    ) -> None:
        self.value = _ratio("ratio.value", value)
        self.warmup = _warmup(warmup)
        self.delta = integer("ratio.delta", delta, "[0, inf)", lambda v: v >= 0)
        self.block = integer("ratio.block", block, "[1, inf)", lambda v: v >= 1)
        self.multiple = integer("ratio.multiple", multiple, "[1, inf)", lambda v: v >= 1)

    def ratio(self, step: int, num_steps: int, num_tokens: int | None = None) -> float:
        warmup = warmup_steps(self.warmup, num_steps)
        if step < warmup:
            return 1.0
        if num_tokens is None:
            raise ValueError("ratio=reference_dynamic needs the token count")
        blocks = math.ceil(max(num_steps - warmup, 1) / self.block)
        b = (step - warmup) // self.block
        skip = (1 - self.value) * num_tokens + self.delta * (b - (blocks - 1) / 2)
        skip = int(skip // self.multiple) * self.multiple
        skip = min(max(skip, 0), num_tokens - 1)
        return 1.0 - skip / num_tokens
