"""Where one sampling step's time goes: `torch.profiler` over one step of the bench's synthetic pipeline.

The bench's `profile=true` calls `profile_step` once dense and once per RAS ratio (eager) and prints the table
`markdown` makes: per category of operator the milliseconds of one step (self time, so nothing is counted
twice), and what lies outside every operator (Python: hooks, the processors, the pipeline loop). One step is
the transformer call of step `k`, the selection for step `k + 1` that follows it and the scheduler's update.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch.profiler import ProfilerActivity, profile, record_function

from rasfw.attach import apply_ras, ras_state, remove_ras
from rasfw.pipelines.synthetic import SyntheticPipeline
from rasfw.sampler import RegionAdaptiveSampler
from rasfw.state import RegionState

SELECTION = "rasfw::selection"
"""The profiler range around the sampler's `observe` (metric, starvation, sort, index buffer)."""

CATEGORIES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("matrix products", lambda op: op in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention", lambda op: "scaled_dot_product" in op or "flash_attention" in op),
    ("row moves (gather / scatter / index)", lambda op: any(
        word in op for word in ("index_select", "index_copy", "index_put", "gather", "scatter", "aten::index")
    )),
    ("copies and layout", lambda op: op in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::_to_copy")),
    ("norms", lambda op: "norm" in op),
    ("elementwise and other operators", lambda op: True),
)
"""Operator categories, first match wins; self CPU time is summed per category."""


def profile_step(pipe: SyntheticPipeline, sampler: RegionAdaptiveSampler, steps: int, step: int) -> dict[str, float]:
    """Milliseconds of step `step` of a `steps`-step generation under `sampler`, eager, per category.

    Args:
        pipe: the synthetic pipeline (nothing attached).
        sampler: the sampler (dense or RAS); its `observe` runs inside the `SELECTION` range.
        steps: steps of the generation.
        step: the step profiled (`1 <= step < steps - 1`).

    Returns:
        `{"wall": ..., "selection": ..., <category>: ..., "outside operators": ...}` in milliseconds: `wall` the
        step's wall-clock time under the profiler, `selection` the whole `SELECTION` range (its operators are not
        counted again in the categories), `outside operators` what is left of `wall`.
    """
    check_step(step, steps)
    observe = sampler.observe

    def observed(state: RegionState, *args: Any, **kwargs: Any) -> None:
        with record_function(SELECTION):
            observe(state, *args, **kwargs)

    sampler.observe = observed
    window: dict[str, Any] = {}

    def around(state: RegionState) -> None:  # after each step: start before `step`, stop after it
        if state.step == step:
            window["profiler"] = profile(activities=[ProfilerActivity.CPU])
            window["profiler"].__enter__()
            window["start"] = time.perf_counter()
        elif state.step == step + 1 and "profiler" in window:
            window["wall"] = time.perf_counter() - window["start"]
            window["profiler"].__exit__(None, None, None)

    apply_ras(pipe, sampler, "eager")
    try:
        ras_state(pipe).step_callbacks.append(around)
        pipe(steps)
    finally:
        remove_ras(pipe)
        del sampler.observe
    return _categorised(window["profiler"].events(), 1000 * window["wall"])


def check_step(step: object, steps: int) -> int:
    """`step` if it can be profiled in a `steps`-step generation: an integer in `[1, steps - 1)` (the profiler
    starts at the end of the step before and stops at the end of `step`, before the last).

    Raises:
        ValueError: naming the bench's `profile_step` setting and the allowed range.
    """
    if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step < steps - 1:
        raise ValueError(f"profile_step must be an integer in [1, {steps - 1}) (steps={steps}); got {step!r}")
    return step


def _categorised(events: Any, wall_ms: float) -> dict[str, float]:
    """Self CPU milliseconds per category of `events`, the selection range as a whole."""
    result = {"wall": wall_ms, "selection": 0.0, **{name: 0.0 for name, _ in CATEGORIES}}
    for event in events:
        if event.name == SELECTION:
            result["selection"] += event.cpu_time_total / 1000
            continue
        if _inside_selection(event):
            continue
        name = next(name for name, matches in CATEGORIES if matches(event.name))
        result[name] += event.self_cpu_time_total / 1000
    result["outside operators"] = wall_ms - sum(v for k, v in result.items() if k != "wall")
    return result


def _inside_selection(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == SELECTION:
            return True
        parent = parent.cpu_parent
    return False


def markdown(profiles: dict[str, dict[str, float]]) -> str:
    """A table of `profiles` (column label -> `profile_step` result): milliseconds per category."""
    labels = list(profiles)
    rows = ["wall", "selection", *(name for name, _ in CATEGORIES), "outside operators"]
    lines = ["| ms per step | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    for row in rows:
        cells = [f"{profiles[label][row]:.1f}" for label in labels]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
