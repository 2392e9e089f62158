"""Inactive-token fills: `reuse` is vanilla RAS; `taylor` forecasts each inactive token from its own history."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rasfw import RegionAdaptiveSampler, apply_ras, ras_execution, remove_ras
from rasfw.interfaces import InactiveFill
from rasfw.strategies.fills import ReuseFill, TaylorFill
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import NoReset
from rasfw.testing import check_inactive_fill
from rasfw.testing.tiny import tiny_sd3_loop
from tests.helpers import ras

STEPS = 10  # dense 0-2 (warm-up 3), RAS 3-5, reset 6, RAS 7-9


def generate(pipe) -> torch.Tensor:
    return pipe(batch=2, height=8, width=12, steps=STEPS)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), order=st.sampled_from([1, 2]))
def test_taylor_is_exact_on_polynomials_of_its_order_with_uneven_gaps_per_token(seed, order):
    """Newton's forward polynomial through the last order + 1 outputs: exact on degree-`order` curves."""
    gen = torch.Generator().manual_seed(seed)
    coeffs = torch.randn(order + 1, 2, 5, 3, generator=gen, dtype=torch.float64)  # (k + 1, Bt, N, F)
    gaps = torch.randint(1, 5, (order + 1, 2, 5), generator=gen).double()  # (k + 1, Bt, N)
    steps = 30.0 - gaps.cumsum(0)  # each token its own computation steps, latest first
    now = torch.tensor(30.0, dtype=torch.float64)

    def curve(t: torch.Tensor) -> torch.Tensor:  # (Bt, N) -> (Bt, N, F)
        return sum(coeffs[p] * t.unsqueeze(-1) ** p for p in range(order + 1))

    outputs = [curve(steps[j]) for j in range(order + 1)]
    forecast = TaylorFill(order).forecast(outputs, steps.float(), now.float())
    torch.testing.assert_close(forecast, curve(now.expand(2, 5)), rtol=1e-4, atol=1e-3)  # float32 inside


def test_first_order_misses_a_curve_that_second_order_follows():
    steps = torch.tensor([[[5.0]], [[3.0]], [[2.0]]])  # (3, 1, 1)
    outputs = [(s**2).unsqueeze(-1) for s in steps]  # y = t^2
    now = torch.tensor(7.0)
    assert TaylorFill(2).forecast(outputs, steps, now).item() == pytest.approx(49.0)
    assert TaylorFill(1).forecast(outputs, steps, now).item() == pytest.approx(25.0 + 2 * 8.0)  # slope of (3, 5)


def test_second_order_passes_the_checker():  # the registered fills (first order by default): tests/unit/test_strategies.py
    check_inactive_fill(TaylorFill(2))


class Marker(InactiveFill):
    """Forecasts 7 everywhere and keeps what each call was given (a test double)."""

    order = 1

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def forecast(self, outputs, steps, now):
        self.seen.append(torch.cat([steps, now.expand(1, *steps.shape[1:])]).clone())  # (k + 2, Bt, N)
        return torch.full_like(outputs[0], 7.0)


def test_inactive_rows_get_the_forecast_and_history_steps_follow_each_tokens_computations():
    pipe = tiny_sd3_loop()
    fill = Marker()
    state = apply_ras(pipe, ras(fill=fill, warmup=3, resets=(6,)))
    state.record_selection = True
    outputs = []
    handle = pipe.transformer.register_forward_hook(lambda m, a, out: outputs.append(out[0].clone()))
    generate(pipe)
    handle.remove()
    remove_ras(pipe)
    ras_steps = [i for i, s in enumerate(state.skips) if s > 0]
    assert ras_steps == [3, 4, 5, 7, 8, 9] and len(fill.seen) == len(ras_steps)  # one call per step (CFG rows batched)
    last = torch.full((2, state.num_tokens), -1.0)  # per image: the step each token was last computed at
    before = torch.full((2, state.num_tokens), -1.0)
    seen = iter(fill.seen)
    for i in range(STEPS):
        selected = state.selections[i]
        computed = torch.ones(2, state.num_tokens, dtype=torch.bool)
        if selected is not None:
            steps = next(seen)  # (3, Bt = 4, N): steps[0], steps[1], now; rows [uncond, cond]
            assert torch.equal(steps[0], last.repeat(2, 1)) and torch.equal(steps[1], before.repeat(2, 1))
            assert bool((steps[2] == i).all())
            computed = torch.zeros_like(computed).scatter_(1, selected, True)
            tokens = state.grid.to_tokens(outputs[i]).flatten(2)  # (Bt, N, P*C)
            inactive = ~computed.repeat(2, 1)
            assert bool((tokens[inactive] == 7.0).all()) and not bool((tokens[~inactive] == 7.0).any())
        before = torch.where(computed, last, before)
        last = torch.where(computed, torch.tensor(float(i)), last)


def test_reuse_is_vanilla_ras_and_taylor_changes_the_result():
    pipe = tiny_sd3_loop()
    apply_ras(pipe, ras(warmup=3, resets=(6,)))
    default = generate(pipe)
    remove_ras(pipe)
    results = {}
    for name, fill in {"reuse": ReuseFill(), "taylor1": TaylorFill(1), "taylor2": TaylorFill(2)}.items():
        apply_ras(pipe, ras(fill=fill, warmup=3, resets=(6,)))
        results[name] = generate(pipe)
        remove_ras(pipe)
    assert torch.equal(results["reuse"], default)
    assert not torch.equal(results["taylor1"], default) and not torch.equal(results["taylor2"], results["taylor1"])
    assert all(torch.isfinite(r).all() for r in results.values())


@pytest.mark.parametrize("order", [1, 2])
def test_ratio_one_with_a_forecasting_fill_is_bitwise_dense(order):
    pipe = tiny_sd3_loop()
    dense = generate(pipe)
    apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(1.0, 3), reset=NoReset(), fill=TaylorFill(order)))
    assert torch.equal(generate(pipe), dense)
    remove_ras(pipe)


def test_history_costs_one_output_buffer_per_order_and_is_freed_after_the_generation():
    pipe = tiny_sd3_loop()
    peaks = {}
    for name, fill in {"reuse": ReuseFill(), "taylor1": TaylorFill(1), "taylor2": TaylorFill(2)}.items():
        state = apply_ras(pipe, ras(fill=fill, warmup=3, resets=(6,)))
        sizes = []
        state.step_callbacks.append(lambda s, sizes=sizes: sizes.append(s.memory_bytes()))
        generate(pipe)
        peaks[name] = max(sizes)
        assert state.memory_bytes() == 0 and state.clock is None  # released at the last step
        remove_ras(pipe)
    output = 2 * 2 * 24 * (2 * 2 * 4) * 4  # Bt = 4 rows, N = 24 tokens, F = 16 values, float32
    steps = 2 * 2 * 24 * 4  # one (Bt, N) float32 step row
    assert peaks["taylor1"] - peaks["reuse"] == output + 2 * steps
    assert peaks["taylor2"] - peaks["taylor1"] == output + steps


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TaylorFill(order=3), r"fill.order must be in \[1, 2\]; got 3"),
        (lambda: TaylorFill(order=0), r"fill.order must be in \[1, 2\]; got 0"),
        (lambda: TaylorFill(order="1"), r"fill.order must be an integer"),
        (lambda: RegionAdaptiveSampler(fill=ConstantRatio()), r"fill must be a InactiveFill or a registered name; got ConstantRatio"),
    ],
)
def test_bad_fill_settings_are_one_line(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_an_order_the_warm_up_cannot_feed_is_refused_naming_the_setting():
    pipe = tiny_sd3_loop()
    apply_ras(pipe, ras(fill=TaylorFill(2), warmup=2, resets=(6,)))
    with pytest.raises(ValueError, match=r"fill.order=2 \(TaylorFill\(order=...\)\) needs 3 dense steps before the first RAS step; this schedule has 2"):
        generate(pipe)
    remove_ras(pipe)
    apply_ras(pipe, ras(fill=TaylorFill(2), warmup=3, resets=(6,)))  # the same pipeline runs once the schedule allows it
    assert torch.isfinite(generate(pipe)).all()
    remove_ras(pipe)


def test_forecasting_is_refused_on_a_pipeline_that_switches_transformers():
    from rasfw.pipelines.tiny import tiny_wan_pipeline
    from tests.adapters.test_wan import TwoStage

    pipe = TwoStage(tiny_wan_pipeline(two_stage=True))
    with pytest.raises(ValueError, match="fill=taylor: forecasting reads one model's outputs"):
        apply_ras(pipe, ras(fill=TaylorFill(1), warmup=3, resets=(6,)))
    assert not hasattr(pipe, "_rasfw_attachment")


def test_compile_with_a_forecasting_fill_equals_eager_in_one_graph_per_call_shape():
    pipe = tiny_sd3_loop()
    apply_ras(pipe, ras(fill=TaylorFill(2), warmup=3, resets=(6,)))
    eager = generate(pipe)
    remove_ras(pipe)
    sampler = ras(fill=TaylorFill(2), warmup=3, resets=(6,))
    apply_ras(pipe, sampler, execution="compile", compile_backend="aot_eager")  # fullgraph: a break fails
    first = generate(pipe)
    executor = ras_execution(pipe)
    graphs = executor.graphs
    second = generate(pipe)
    assert executor.graphs == graphs == len(executor.keys)  # dense, capture, one RAS count: nothing after the first run
    remove_ras(pipe)
    torch.testing.assert_close(first, eager, rtol=1e-4, atol=1e-4)
    assert torch.equal(second, first)
