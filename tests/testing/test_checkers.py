"""rasfw.testing: each checker catches the breakage it names (the built-ins pass them in tests/unit)."""

from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel

from rasfw import InactiveFill, RatioSchedule, RegionMetric, ResetSchedule, StarvationPolicy, register
from rasfw.adapters.sd3 import SD3Adapter
from rasfw.strategies.metrics import StdNoise
from rasfw.strategies.ratios import ConstantRatio
from rasfw.testing import (
    check_inactive_fill,
    check_model_adapter,
    check_ratio_schedule,
    check_region_metric,
    check_reset_schedule,
    check_starvation_policy,
)
from rasfw.testing.tiny import tiny_sd3_loop


def test_an_instance_is_checked_as_given():
    check_ratio_schedule(ConstantRatio(0.25, warmup=3))


# -- broken metrics -------------------------------------------------------------------------------


class FlatShape(RegionMetric):
    def score(self, tokens, grid, generator=None):
        return tokens.float().mean(dim=(-1, -2)).flatten()  # (B * N,): wrong shape


class Double(RegionMetric):
    def score(self, tokens, grid, generator=None):
        return tokens.double().std(dim=-1).mean(dim=-1)  # float64


class InPlace(RegionMetric):
    def score(self, tokens, grid, generator=None):
        return tokens.abs_().mean(dim=(-1, -2))


class Unseeded(RegionMetric):
    def score(self, tokens, grid, generator=None):
        return torch.rand(tokens.shape[:2])  # ignores the generator


class Unvalidated(RegionMetric):
    def __init__(self, power: float = 2.0) -> None:
        self.power = power  # never checked

    def score(self, tokens, grid, generator=None):
        return tokens.float().abs().pow(self.power).mean(dim=(-1, -2))


class WrongError(RegionMetric):
    def __init__(self, power: float = 2.0) -> None:
        self.power = float(power)  # TypeError on a wrong type, not ValueError

    def score(self, tokens, grid, generator=None):
        return tokens.float().abs().mean(dim=(-1, -2))


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (FlatShape, r"returned shape \(\d+,\); expected \(B, N\)"),
        (Double, "returned torch.float64; expected torch.float32"),
        (InPlace, "modified its input tokens in place"),
        (Unseeded, "not deterministic under a generator seeded the same"),
        (Unvalidated, r"Unvalidated\(power=.*\) was accepted; validate 'power'"),
        (WrongError, r"raised TypeError, not a ValueError naming 'power'"),
    ],
)
def test_metric_checker_names_the_breakage(metric, message):
    with pytest.raises(AssertionError, match=message):
        check_region_metric(metric)


def test_bad_params_can_be_given_explicitly():
    with pytest.raises(AssertionError, match="does not take"):
        check_region_metric(StdNoise, bad_params={"scale": -1})


# -- broken ratio, starvation, reset --------------------------------------------------------------


class NoWarmup(RatioSchedule):
    warmup = 4

    def ratio(self, step, num_steps, num_tokens=None):
        return 0.5  # relies on the sampler for warm-up


class ScaledNoWarmup(RatioSchedule):
    warmup = None  # scaled to the schedule (4 of 28), as the built-ins' default

    def ratio(self, step, num_steps, num_tokens=None):
        return 1.0 if step == 0 else 0.5  # keeps one dense step whatever the schedule


class Zero(RatioSchedule):
    def ratio(self, step, num_steps, num_tokens=None):
        return 0.0 if step > 2 else 1.0


class Stateful(RatioSchedule):
    def __init__(self) -> None:
        self.calls = 0

    def ratio(self, step, num_steps, num_tokens=None):
        self.calls += 1
        return 1.0 if step == 0 else 0.5 + 0.5 * (self.calls % 2)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (NoWarmup, "during the schedule's warm-up of 4 steps"),
        (ScaledNoWarmup, r"ratio\(step=1, num_steps=28, num_tokens=12\) returned 0.5 during the schedule's warm-up of 4 steps"),
        (Zero, r"returned 0.0; ratios must lie in \(0, 1\]"),
        (Stateful, "depends on the order it is called in"),
    ],
)
def test_ratio_checker_names_the_breakage(schedule, message):
    with pytest.raises(AssertionError, match=message):
        check_ratio_schedule(schedule)


class Inverted(StarvationPolicy):
    def adjust(self, score, drop_count):
        return score / (1 + drop_count)  # dropping a patch makes it less likely to come back


class Overflowing(StarvationPolicy):
    def adjust(self, score, drop_count):
        return score * torch.exp(drop_count)


class Reordering(StarvationPolicy):
    def adjust(self, score, drop_count):
        return score.flip(1)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (Inverted, "lowers a patch's rank when it was dropped once more"),
        (Overflowing, "NaN or infinite"),
        (Reordering, "changes the ranking when every patch was dropped equally often"),
    ],
)
def test_starvation_checker_names_the_breakage(policy, message):
    with pytest.raises(AssertionError, match=message):
        check_starvation_policy(policy)


class IntFlags(ResetSchedule):
    def is_dense(self, step, num_steps):
        return int(step == 3)


class RefusesWithTypeError(ResetSchedule):
    def is_dense(self, step, num_steps):
        return False

    def validate(self, num_steps):
        raise TypeError("no")


@pytest.mark.parametrize(
    ("schedule", "message"),
    [(IntFlags, r"returned 0, not a bool"), (RefusesWithTypeError, "raised TypeError; refuse a step count with ValueError")],
)
def test_reset_checker_names_the_breakage(schedule, message):
    with pytest.raises(AssertionError, match=message):
        check_reset_schedule(schedule)


class Aliasing(InactiveFill):
    def forecast(self, outputs, steps, now):
        return outputs[0]  # the cache itself: the next scatter would overwrite what the pipeline holds


class Drifting(InactiveFill):
    order = 1

    def forecast(self, outputs, steps, now):
        return outputs[0] + 1.0  # a token that never changed is forecast as another value


class HostSync(InactiveFill):
    order = 1

    def forecast(self, outputs, steps, now):
        if bool((now > steps[0]).all()):  # a branch on tensor values: a host sync inside the call
            return outputs[0].clone()
        return outputs[1].clone()


class Upcasting(InactiveFill):
    def forecast(self, outputs, steps, now):
        return outputs[0].double()


class NegativeOrder(InactiveFill):
    order = -1

    def forecast(self, outputs, steps, now):
        return outputs[0].clone()


@pytest.mark.parametrize(
    ("fill", "message"),
    [
        (Aliasing, "returned one of its inputs"),
        (Drifting, "a token whose outputs never changed is forecast as another value"),
        (HostSync, "does not trace into one graph"),
        (Upcasting, "returned torch.float64; expected the outputs' torch.float32"),
        (NegativeOrder, r"order is -1; expected an integer >= 0"),
    ],
)
def test_fill_checker_names_the_breakage(fill, message):
    with pytest.raises(AssertionError, match=message):
        check_inactive_fill(fill)


# -- the adapter checker --------------------------------------------------------------------------


def test_the_sd3_adapter_passes_the_adapter_checker():
    check_model_adapter(SD3Adapter, tiny_sd3_loop)


def test_adapter_checker_names_an_adapter_that_apply_ras_would_not_pick():
    class Other(SD3Adapter):
        pass

    with pytest.raises(AssertionError, match="drives SD3Transformer2DModel with SD3Adapter, not Other"):
        check_model_adapter(Other, tiny_sd3_loop)


class LeftoverTransformer(SD3Transformer2DModel):
    """An SD3 transformer class only the adapter below claims."""


@register("adapter", "_test_leftover")
class LeavesAnAttribute(SD3Adapter):
    """Removes its hooks but leaves an attribute behind on the patch embedding."""

    @classmethod
    def supports(cls, model):
        return type(model) is LeftoverTransformer

    def remove(self, model):
        super().remove(model)
        model.pos_embed.leftover = True


def test_adapter_checker_names_what_remove_left_behind():
    def build():
        pipe = tiny_sd3_loop()
        pipe.transformer.__class__ = LeftoverTransformer
        return pipe

    with pytest.raises(AssertionError, match=r"remove_ras left attributes of module 'pos_embed' changed: \['leftover'\]"):
        check_model_adapter(LeavesAnAttribute, build)
