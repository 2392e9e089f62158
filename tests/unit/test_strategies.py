"""Contracts of the built-in strategies, one per interface, and their validation errors."""

from __future__ import annotations

import math

import pytest
import torch

from rasfw import REGISTRY, TokenGrid
from rasfw.strategies.metrics import L2Norm, RandomScore, StdNoise, TemporalDifference
from rasfw.strategies.ratios import ConstantRatio, LinearRatio, ReferenceDynamicRatio
from rasfw.strategies.resets import FixedReset, NoReset, PeriodicReset
from rasfw.strategies.starvation import ExpStarvation, NoStarvation
from rasfw.testing import (
    check_inactive_fill,
    check_ratio_schedule,
    check_region_metric,
    check_reset_schedule,
    check_starvation_policy,
)

GRID = TokenGrid(rows=3, cols=4, patch=2, channels=4)
CHECKS = {
    "metric": check_region_metric,
    "ratio": check_ratio_schedule,
    "starvation": check_starvation_policy,
    "reset": check_reset_schedule,
    "fill": check_inactive_fill,
}


def tokens(seed=0, batch=2):
    return torch.randn(batch, GRID.num_tokens, GRID.patch**2, GRID.channels, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", REGISTRY.names("metric"))
def test_metric_contract(name):
    metric = REGISTRY.build("metric", name)
    gen = torch.Generator().manual_seed(0)
    memory = {"memory": {}} if metric.uses_memory else {}
    for step in range(2):  # a metric with memory compares the second step with the first
        score = metric.score(tokens(step), GRID, gen, **memory)
        assert score.shape == (2, GRID.num_tokens) and score.dtype == torch.float32
        assert torch.isfinite(score).all()
@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in CHECKS for n in REGISTRY.names(k)])
def test_every_registered_strategy_passes_its_checker(kind, name):
    """rasfw.testing: shapes, dtypes, ranges, warm-up, determinism, validation and a tiny generation."""
    CHECKS[kind](REGISTRY.get(kind, name))


def test_std_noise_is_per_pixel_channel_std_averaged_over_the_patch():
    latent = torch.randn(1, 4, 6, 8, generator=torch.Generator().manual_seed(1))
    score = StdNoise().score(GRID.to_tokens(latent), GRID)
    per_pixel = latent.std(dim=1)  # (1, 6, 8), unbiased
    expected = torch.nn.functional.avg_pool2d(per_pixel[:, None], 2).flatten(1)
    torch.testing.assert_close(score, expected)


def test_ranking_is_unchanged_by_scaling_the_output():
    t = tokens(3)
    for metric in (StdNoise(), L2Norm()):
        a, b = metric.score(t, GRID), metric.score(-0.37 * t, GRID)
        assert torch.equal(a.argsort(dim=1), b.argsort(dim=1))


def test_random_metric_follows_the_generator():
    a = RandomScore().score(tokens(), GRID, torch.Generator().manual_seed(5))
    b = RandomScore().score(tokens(), GRID, torch.Generator().manual_seed(5))
    c = RandomScore().score(tokens(), GRID, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_temporal_difference_scores_the_change_and_keeps_the_score_of_tokens_not_recomputed():
    metric, memory = TemporalDifference(), {}
    first = tokens(0)
    assert torch.equal(metric.score(first, GRID, memory=memory), StdNoise().score(first, GRID))  # nothing to compare yet
    second = first.clone()
    second[:, :5] += 0.5  # tokens 0-4 recomputed (changed by exactly 0.5); the others came from the cache
    score = metric.score(second, GRID, memory=memory)
    torch.testing.assert_close(score[:, :5], torch.full((2, 5), 0.5))
    assert torch.equal(score[:, 5:], StdNoise().score(first, GRID)[:, 5:])  # unchanged: the score they had
    third = second.clone()
    third[:, 5:] -= 0.25
    score = metric.score(third, GRID, memory=memory)
    torch.testing.assert_close(score[:, 5:], torch.full((2, GRID.num_tokens - 5), 0.25))
    torch.testing.assert_close(score[:, :5], torch.full((2, 5), 0.5))
    with pytest.raises(ValueError, match="memory"):
        metric.score(first, GRID)


def test_token_grid_validates_its_fields():
    with pytest.raises(ValueError, match="TokenGrid.frames must be an integer >= 1"):
        TokenGrid(2, 2, 2, 4, layout="bcfhw", frames=0)
    with pytest.raises(ValueError, match="TokenGrid.layout must be one of bchw, packed, bcfhw"):
        TokenGrid(2, 2, 2, 4, layout="video")
    with pytest.raises(ValueError, match="need layout 'bcfhw'"):
        TokenGrid(2, 2, 2, 4, frames=3)


def test_token_grid_round_trips_both_layouts():
    latent = torch.randn(2, 4, 6, 8)
    assert torch.equal(GRID.from_tokens(GRID.to_tokens(latent)), latent)
    packed = TokenGrid(3, 4, 2, 4, layout="packed")
    x = torch.randn(2, 12, 16)
    assert torch.equal(packed.from_tokens(packed.to_tokens(x)), x)


def test_constant_and_linear_ratios():
    assert ConstantRatio(0.25, 2).ratio(2, 10) == 0.25
    ramp = LinearRatio(0.8, 0.2, 2)
    assert math.isclose(ramp.ratio(2, 12), 0.8) and math.isclose(ramp.ratio(11, 12), 0.2)


def test_reference_dynamic_keeps_the_mean_and_multiples_of_64():
    schedule = ReferenceDynamicRatio(0.5, warmup=4, delta=256, block=4)
    skips = [round((1 - schedule.ratio(i, 28, 4096)) * 4096) for i in range(4, 28)]
    assert all(s % 64 == 0 for s in skips)
    assert skips == sorted(skips) and skips[0] < skips[-1]  # fewer skipped early, more late
    assert abs(sum(skips) / len(skips) - 2048) <= 64


def test_starvation_contract():
    score = torch.rand(2, 12) + 0.1
    drops = torch.randint(0, 5, (2, 12)).float()
    assert torch.equal(NoStarvation().adjust(score, drops), score)
    adjusted = ExpStarvation(0.1).adjust(score, drops)
    reference = score * torch.exp(0.1 * drops)  # Eq. 1; adjust divides each row by its largest factor
    torch.testing.assert_close(adjusted, reference / torch.exp(0.1 * drops).amax(dim=1, keepdim=True))
    assert torch.equal(adjusted.argsort(dim=1), reference.argsort(dim=1))
    bumped = drops.clone()
    bumped[:, 0] += 1  # one more drop lifts that patch against every other
    before, after = ExpStarvation(0.5).adjust(score, drops), ExpStarvation(0.5).adjust(score, bumped)
    assert torch.all(after[:, 0] / after[:, 1:].T > before[:, 0] / before[:, 1:].T)


def test_reset_contract():
    assert [s for s in range(28) if FixedReset([12, 20]).is_dense(s, 28)] == [12, 20]
    assert [s for s in range(20) if PeriodicReset(every=5, start=4).is_dense(s, 20)] == [9, 14, 19]
    assert not any(NoReset().is_dense(s, 28) for s in range(28))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ConstantRatio(0.0), r"ratio.value must be in \(0, 1\]"),
        (lambda: ConstantRatio(1.5), r"ratio.value must be in \(0, 1\]"),
        (lambda: ConstantRatio("half"), r"ratio.value must be a number in \(0, 1\]"),
        (lambda: ConstantRatio(0.5, -1), r"ratio.warmup must be in \[0, inf\)"),
        (lambda: ExpStarvation(-1), r"starvation.k must be in \[0, 100\]"),
        (lambda: FixedReset([-1]), r"reset.steps must be in \[0, steps\)"),
        (lambda: PeriodicReset(every=0), r"reset.every must be in \[1, inf\)"),
    ],
)
def test_bad_settings_raise_one_clear_line(build, message):
    with pytest.raises(ValueError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def test_reset_steps_beyond_the_schedule_are_rejected():
    with pytest.raises(ValueError, match=r"reset.steps \(FixedReset\(steps=\.\.\.\)\) must lie in \[0, 20\) for steps=20"):
        FixedReset([12, 22]).validate(20)


def test_a_huge_starvation_scale_stays_finite_and_ranks_like_eq_1():
    score = torch.rand(2, 50, generator=torch.Generator().manual_seed(0)) + 0.1
    drops = torch.randint(0, 3, (2, 50), generator=torch.Generator().manual_seed(1)).float()
    adjusted = ExpStarvation(100).adjust(score, drops * 10)  # exp(3000) overflows any float
    assert torch.isfinite(adjusted).all()
    most = drops == drops.amax(dim=1, keepdim=True)
    assert torch.equal(adjusted > 0, most)  # only the most-dropped patches keep a non-zero score
