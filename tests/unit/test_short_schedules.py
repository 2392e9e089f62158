"""Short schedules with the defaults: warm-up and resets scale with the steps (the reference's 4, 12 and 20 of 28),
explicit values stay as given, and an explicit value that does not fit names the setting and the Python argument."""

from __future__ import annotations

import pytest
import torch

from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
from rasfw.strategies._proportions import default_resets, default_warmup
from rasfw.strategies.ratios import ConstantRatio, LinearRatio, ReferenceDynamicRatio, warmup_steps
from rasfw.strategies.resets import FixedReset

TOKENS = 4096  # SD3 at 1024 x 1024 (the reference dynamic schedule's delta of 256 tokens is sized for it)


def dense_steps(sampler: RegionAdaptiveSampler, num_steps: int) -> list[int]:
    """The steps the sampler plans dense (nothing cached)."""
    return [i for i in range(num_steps) if sampler.skip_count(i, num_steps, TOKENS) == 0]


def test_the_default_plan_at_28_steps_is_the_reference_plan():
    default = RegionAdaptiveSampler()
    explicit = RegionAdaptiveSampler(ratio=ConstantRatio(0.5, warmup=4), reset=FixedReset([12, 20]))
    plan = [default.skip_count(i, 28, TOKENS) for i in range(28)]
    assert plan == [explicit.skip_count(i, 28, TOKENS) for i in range(28)]
    assert dense_steps(default, 28) == [0, 1, 2, 3, 12, 20]
    assert default_warmup(28) == 4 and default_resets(28) == (12, 20)


@pytest.mark.parametrize("num_steps", [5, 6, 7, 10, 14, 20])
@pytest.mark.parametrize("ratio", [ConstantRatio, LinearRatio, ReferenceDynamicRatio])
def test_short_schedules_get_a_valid_plan_from_the_defaults(ratio, num_steps):
    sampler = RegionAdaptiveSampler(ratio=ratio(), reset=FixedReset())
    sampler.reset.validate(num_steps)
    warmup = warmup_steps(sampler.ratio.warmup, num_steps)
    resets = sampler.reset.reset_steps(num_steps)
    dense = dense_steps(sampler, num_steps)
    assert warmup >= 1 and dense[:warmup] == list(range(warmup))
    assert len(dense) < num_steps  # at least one RAS step
    assert all(warmup < r < num_steps - 1 for r in resets)  # a RAS step before and after each reset
    assert sorted(set(dense)) == sorted({*range(warmup), *resets})
    assert all(b - a > 1 for a, b in zip(resets[:-1], resets[1:], strict=True))  # never two resets in a row


@pytest.mark.parametrize(
    ("num_steps", "warmup", "resets"),
    [(1, 1, ()), (3, 1, ()), (5, 1, (2,)), (6, 1, (3,)), (7, 1, (3, 5)), (10, 1, (4, 7)), (14, 2, (6, 10)),
     (20, 3, (9, 14)), (30, 4, (13, 21))],
)  # fmt: skip
def test_the_defaults_follow_the_reference_proportions(num_steps, warmup, resets):
    assert default_warmup(num_steps) == warmup and default_resets(num_steps) == resets


def test_explicit_values_stay_exactly_as_given():
    assert FixedReset([3]).reset_steps(5) == (3,) and FixedReset([]).reset_steps(28) == ()
    assert FixedReset([20, 12]).steps == (12, 20)
    no_warmup = ConstantRatio(0.25, warmup=0)
    assert warmup_steps(no_warmup.warmup, 10) == 0 and no_warmup.ratio(1, 10) == 0.25
    assert ConstantRatio(0.25, warmup=7).ratio(6, 10) == 1.0


@pytest.mark.parametrize(
    ("build", "num_steps", "message"),
    [
        (lambda: FixedReset([12, 20]), 10, "reset.steps (FixedReset(steps=...)) must lie in [0, 10) for steps=10; got [12, 20]"),
        (lambda: FixedReset([4, 5]), 5, "reset.steps (FixedReset(steps=...)) must lie in [0, 5) for steps=5; got [4, 5]"),
    ],
)  # fmt: skip
def test_an_explicit_reset_that_does_not_fit_names_the_setting_and_the_python_argument(build, num_steps, message):
    with pytest.raises(ValueError) as info:
        build().validate(num_steps)
    assert str(info.value) == message


def test_a_bad_warmup_names_null_as_allowed():
    with pytest.raises(ValueError, match=r"ratio.warmup must be an integer in \[0, inf\) or null"):
        ConstantRatio(0.5, warmup="four")


def test_the_python_api_runs_a_10_step_schedule_with_the_defaults():
    from rasfw.embedded.models import load_pipeline

    pipe = load_pipeline()
    state = apply_ras(pipe, RegionAdaptiveSampler())
    try:
        image = pipe("a small red circle at the top left", num_inference_steps=10,
                     generator=torch.Generator().manual_seed(0), output_type="pt").images  # fmt: skip
    finally:
        remove_ras(pipe)
    assert torch.isfinite(image).all()
    active = state.active_tokens_per_step
    tokens = max(active)
    assert [i for i, a in enumerate(active) if a == tokens] == [0, 4, 7]  # warm-up 1, resets 4 and 7
    assert len(active) == 10 and min(active) == tokens // 2
