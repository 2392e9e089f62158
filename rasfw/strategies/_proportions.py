"""The reference schedule's proportions, scaled to any step count (the defaults of warm-up and resets).

The reference implementation's SD3 example runs 28 steps: 4 dense warm-up steps, then RAS, with error-reset
dense steps at 12 and 20. A schedule of `n` steps keeps those proportions: step `s` of the 28 becomes
`round(s * n / 28)` (halves rounded up). At 28 steps that is exactly the reference plan.
"""

from __future__ import annotations

import math

REFERENCE_STEPS = 28
"""Steps of the reference schedule the proportions are taken from (its SD3 example)."""
REFERENCE_WARMUP = 4
"""Its dense warm-up steps: RAS starts at step 4 of 28."""
REFERENCE_RESETS = (12, 20)
"""Its error-reset dense steps, of 28."""


def scaled(step: int, num_steps: int) -> int:
    """Step `step` of the 28-step reference schedule, moved to a schedule of `num_steps`: `round(step * num_steps / 28)`.

    Args:
        step: a step index of the reference schedule.
        num_steps: steps of the schedule to scale to.
    """
    return math.floor(step * num_steps / REFERENCE_STEPS + 0.5)  # halves up: no banker's rounding


def default_warmup(num_steps: int) -> int:
    """Dense warm-up steps of a `num_steps` schedule: the reference's 4 of 28 scaled, at least 1 and, when the
    schedule has two steps or more, at most `num_steps - 1` (so at least one step is left for RAS).

    Args:
        num_steps: steps of the schedule.
    """
    return max(1, min(scaled(REFERENCE_WARMUP, num_steps), num_steps - 1))


def default_resets(num_steps: int) -> tuple[int, ...]:
    """Error-reset steps of a `num_steps` schedule: the reference's 12 and 20 of 28 scaled.

    A reset is kept only where it separates RAS steps: at least one RAS step between it and the warm-up (or the
    reset before it) and at least one after it. Resets that coincide, or that a short schedule has no room
    for, are dropped: 10 steps give (4, 7), 5 give (2,), 3 give none.

    Args:
        num_steps: steps of the schedule.
    """
    kept: list[int] = []
    last_dense = default_warmup(num_steps) - 1  # the last warm-up step
    for step in (scaled(s, num_steps) for s in REFERENCE_RESETS):
        if last_dense + 1 < step < num_steps - 1:
            kept.append(step)
            last_dense = step
    return tuple(kept)
