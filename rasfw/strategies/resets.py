"""Reset schedules: dense steps in the middle of sampling that reset accumulated error."""

from __future__ import annotations

from collections.abc import Sequence

from rasfw.checks import integer
from rasfw.interfaces import ResetSchedule
from rasfw.registry import register
from rasfw.strategies._proportions import default_resets


@register("reset", "fixed")
class FixedReset(ResetSchedule):
    """Dense steps at fixed step indices (the reference implementation's `error_reset_steps`).

    Args:
        steps: 0-based step indices; each must lie in `[0, num_steps)`. None: the reference's 12 and 20 of 28
            scaled to the schedule (`round(12 / 28 * steps)`, `round(20 / 28 * steps)`), each kept only with
            a RAS step between it and the warm-up or the reset before, and one after it: (12, 20) at 28
            steps, (4, 7) at 10, (2,) at 5, none at 3.
    """

    def __init__(self, steps: Sequence[int] | None = None) -> None:
        self.steps = None if steps is None else _explicit_steps(steps)

    def reset_steps(self, num_steps: int) -> tuple[int, ...]:
        """The forced dense steps of a `num_steps` schedule: `steps` as given, or the scaled defaults.

        Args:
            num_steps: steps of the schedule.
        """
        return default_resets(num_steps) if self.steps is None else self.steps

    def is_dense(self, step: int, num_steps: int) -> bool:
        return step in self.reset_steps(num_steps)

    def validate(self, num_steps: int) -> None:
        bad = [s for s in self.reset_steps(num_steps) if s >= num_steps]
        if bad:
            raise ValueError(f"reset.steps (FixedReset(steps=...)) must lie in [0, {num_steps}) for steps={num_steps}; "
                             f"got {list(self.steps)}")  # fmt: skip


def _explicit_steps(steps: object) -> tuple[int, ...]:
    """Validated explicit `reset.steps`: integers >= 0, each once, sorted (any order is accepted: the schedule
    is the set)."""
    if isinstance(steps, (int, str)) or not isinstance(steps, Sequence):
        steps = [steps]
    steps = [integer("reset.steps", s, "[0, steps)", lambda v: v >= 0) for s in steps]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise ValueError(f"reset.steps lists step {repeated[0]} twice; each step once, in any order; got {steps}")
    return tuple(sorted(steps))


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
