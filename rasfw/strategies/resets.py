"""Reset schedules: dense steps in the middle of sampling that reset accumulated error."""

from __future__ import annotations

from collections.abc import Sequence

from rasfw.interfaces import ResetSchedule
from rasfw.registry import register
from rasfw.strategies._checks import integer


@register("reset", "fixed")
class FixedReset(ResetSchedule):
    """Dense steps at fixed step indices (the reference implementation's `error_reset_steps`).

    Args:
        steps: 0-based step indices; each must lie in `[0, num_steps)`.
    """

    def __init__(self, steps: Sequence[int] = (12, 20)) -> None:
        if isinstance(steps, (int, str)) or not isinstance(steps, Sequence):
            steps = [steps]
        steps = [integer("reset.steps", s, "[0, steps)", lambda v: v >= 0) for s in steps]
        repeated = sorted({s for s in steps if steps.count(s) > 1})
        if repeated:
            raise ValueError(f"reset.steps lists step {repeated[0]} twice; each step once, in any order; got {steps}")
        self.steps = tuple(sorted(steps))  # any order is accepted: the schedule is the set

    def is_dense(self, step: int, num_steps: int) -> bool:
        return step in self.steps

    def validate(self, num_steps: int) -> None:
        bad = [s for s in self.steps if s >= num_steps]
        if bad:
            raise ValueError(f"reset.steps must lie in [0, {num_steps}) for steps={num_steps}; got {list(self.steps)}")


@register("reset", "periodic")
class PeriodicReset(ResetSchedule):
    """A dense step every `every` steps, counted from `start` (which is itself not forced dense).

    Args:
        every: period in steps, >= 1.
        start: first step of the counting (usually the end of warm-up).
    """

    def __init__(self, every: int = 8, start: int = 4) -> None:
        self.every = integer("reset.every", every, "[1, inf)", lambda v: v >= 1)
        self.start = integer("reset.start", start, "[0, inf)", lambda v: v >= 0)

    def is_dense(self, step: int, num_steps: int) -> bool:
        return step > self.start and (step - self.start) % self.every == 0


@register("reset", "none")
class NoReset(ResetSchedule):
    """No forced dense steps: the paper's "without error reset" ablation."""

    def is_dense(self, step: int, num_steps: int) -> bool:
        return False
