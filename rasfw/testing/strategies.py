"""Contract checks for the strategy interfaces: metric, ratio, starvation, reset and inactive fill.

Each `check_*` takes a class (built with its defaults) or an instance and raises `AssertionError` with a
message saying what broke. Each one checks, in this order: the parameters (every constructor parameter,
given a value of the wrong type, raises a `ValueError` naming it), the interface contract (shapes, dtypes,
ranges, warm-up, determinism) and a tiny generation with the strategy composed into a sampler.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch

from rasfw.interfaces import InactiveFill, RatioSchedule, RegionMetric, ResetSchedule, StarvationPolicy, TokenGrid
from rasfw.strategies.ratios import warmup_steps

__all__ = [
    "check_inactive_fill",
    "check_ratio_schedule",
    "check_region_metric",
    "check_reset_schedule",
    "check_starvation_policy",
]

GRIDS = (
    TokenGrid(rows=3, cols=4, patch=2, channels=4),  # SD3-style (B, C, H, W) latents
    TokenGrid(rows=2, cols=5, patch=2, channels=4, layout="packed"),  # Flux-style packed latents
    TokenGrid(rows=4, cols=4, patch=1, channels=3),
    TokenGrid(rows=2, cols=3, patch=2, channels=4, layout="bcfhw", frames=3),  # Wan-style video latents
)
STEP_COUNTS = (1, 8, 28)
TOKEN_COUNTS = (12, 256, 4096)


class _WrongType:
    """A value no strategy parameter accepts."""

    def __repr__(self) -> str:
        return "<a value of the wrong type>"


def check_region_metric(metric: type[RegionMetric] | RegionMetric, bad_params: Mapping[str, Any] | None = None) -> None:
    """Check a `RegionMetric`: `(B, N)` finite float32 scores on every layout, inputs left untouched,
    the same scores from the same seeded generator, validated parameters, and a tiny generation.

    Args:
        metric: the class (built with its defaults) or an instance.
        bad_params: an invalid value per constructor parameter; by default every parameter is given a
            value of the wrong type.

    Raises:
        AssertionError: the metric breaks the contract; the message says how.
    """
    metric = _instance(metric, RegionMetric, bad_params)
    name = type(metric).__name__
    for grid in GRIDS:
        for batch in (1, 3):
            tokens = _tokens(grid, batch, seed=batch)
            before = tokens.clone()
            score = _score(metric, tokens, grid)
            where = f"{name}.score on {batch} image(s) of a {grid.rows}x{grid.cols} {grid.layout} grid"
            _expect(isinstance(score, torch.Tensor), f"{where} returned {type(score).__name__}, not a tensor")
            _expect(tuple(score.shape) == (batch, grid.num_tokens), f"{where} returned shape {tuple(score.shape)}; expected (B, N) = {(batch, grid.num_tokens)}")
            _expect(score.dtype == torch.float32, f"{where} returned {score.dtype}; expected torch.float32")
            _expect(bool(torch.isfinite(score).all()), f"{where} returned NaN or infinite scores")
            _expect(torch.equal(tokens, before), f"{where} modified its input tokens in place")
            again = _score(metric, tokens, grid)
            _expect(torch.equal(score, again), f"{where} is not deterministic under a generator seeded the same")
    _compose("metric", metric)


def check_ratio_schedule(schedule: type[RatioSchedule] | RatioSchedule, bad_params: Mapping[str, Any] | None = None) -> None:
    """Check a `RatioSchedule`: every ratio a real number in (0, 1], 1 during its own warm-up (the sampler
    does not add one), the same value whatever order steps are asked in, validated parameters, and a tiny
    generation whose planned active-token counts follow the schedule.

    Args:
        schedule: the class (built with its defaults) or an instance.
        bad_params: an invalid value per constructor parameter; by default every parameter is given a
            value of the wrong type.

    Raises:
        AssertionError: the schedule breaks the contract; the message says how.
    """
    schedule = _instance(schedule, RatioSchedule, bad_params)
    name = type(schedule).__name__
    setting = getattr(schedule, "warmup", 0)
    for num_steps in STEP_COUNTS:
        warmup = warmup_steps(setting, num_steps) if setting is None or isinstance(setting, int) else None  # None: scaled
        for n in TOKEN_COUNTS:
            values = [schedule.ratio(i, num_steps, n) for i in range(num_steps)]
            for i, r in enumerate(values):
                where = f"{name}.ratio(step={i}, num_steps={num_steps}, num_tokens={n})"
                _expect(isinstance(r, Real) and not isinstance(r, bool), f"{where} returned {r!r}, not a number")
                _expect(0 < r <= 1, f"{where} returned {r}; ratios must lie in (0, 1]")
                if isinstance(warmup, int) and i < warmup:
                    _expect(r == 1, f"{where} returned {r} during the schedule's warm-up of {warmup} steps; "
                                    "warm-up is the schedule's job: return 1.0 there")  # fmt: skip
            backwards = [schedule.ratio(i, num_steps, n) for i in reversed(range(num_steps))][::-1]
            _expect(backwards == values, f"{name}.ratio depends on the order it is called in (num_steps={num_steps})")
    state = _compose("ratio", schedule)
    n = state.num_tokens
    for i, active in enumerate(state.active_tokens_per_step[1:], start=1):
        expected = n - min(int(math.floor((1 - schedule.ratio(i, state.num_steps, n)) * n + 1e-6)), n - 1)
        if i not in _RESET_STEPS:
            _expect(active == expected, f"the sampler planned {active} active tokens at step {i}; "
                                        f"{name} asks for {expected} of {n}")  # fmt: skip


def check_starvation_policy(
    policy: type[StarvationPolicy] | StarvationPolicy, bad_params: Mapping[str, Any] | None = None
) -> None:
    """Check a `StarvationPolicy`: `(B, N)` finite scores of the score's dtype, even after thousands of
    drops; inputs left untouched; equal drop counts keep the ranking; one more drop never lowers a patch's
    rank; validated parameters; and a tiny generation.

    Args:
        policy: the class (built with its defaults) or an instance.
        bad_params: an invalid value per constructor parameter; by default every parameter is given a
            value of the wrong type.

    Raises:
        AssertionError: the policy breaks the contract; the message says how.
    """
    policy = _instance(policy, StarvationPolicy, bad_params)
    name = type(policy).__name__
    gen = torch.Generator().manual_seed(0)
    for batch, n in ((1, 12), (3, 256)):
        score = torch.rand(batch, n, generator=gen) + 0.1  # (B, N), distinct positive scores
        for drops in (torch.zeros(batch, n), torch.randint(0, 6, (batch, n), generator=gen).float(),
                      torch.randint(0, 5000, (batch, n), generator=gen).float()):  # fmt: skip
            where = f"{name}.adjust on {batch}x{n} scores with drop counts up to {int(drops.max())}"
            s, d = score.clone(), drops.clone()
            out = policy.adjust(s, d)
            _expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (batch, n), f"{where} returned shape {tuple(getattr(out, 'shape', ()))}; expected {(batch, n)}")
            _expect(out.dtype == score.dtype, f"{where} returned {out.dtype}; expected the score's {score.dtype}")
            _expect(bool(torch.isfinite(out).all()), f"{where} returned NaN or infinite scores")
            _expect(torch.equal(s, score) and torch.equal(d, drops), f"{where} modified its inputs in place")
            _expect(torch.equal(policy.adjust(score, drops), out), f"{where} is not deterministic")
        equal = policy.adjust(score, torch.full((batch, n), 3.0))
        _expect(torch.equal(equal.argsort(dim=1), score.argsort(dim=1)), f"{name}.adjust changes the ranking when every patch was dropped equally often")
        drops = torch.randint(0, 4, (batch, n), generator=gen).float()
        bumped = drops.clone()
        bumped[:, 0] += 1
        before, after = _rank(policy.adjust(score, drops))[:, 0], _rank(policy.adjust(score, bumped))[:, 0]
        _expect(bool((after >= before).all()), f"{name}.adjust lowers a patch's rank when it was dropped once more")
    _compose("starvation", policy)


def check_reset_schedule(schedule: type[ResetSchedule] | ResetSchedule, bad_params: Mapping[str, Any] | None = None) -> None:
    """Check a `ResetSchedule`: `is_dense` returns a bool for every step of every schedule `validate`
    accepts (it may refuse one with a `ValueError`, nothing else), the same answer whatever the call order,
    validated parameters, and a tiny generation whose forced dense steps are dense.

    Args:
        schedule: the class (built with its defaults) or an instance.
        bad_params: an invalid value per constructor parameter; by default every parameter is given a
            value of the wrong type.

    Raises:
        AssertionError: the schedule breaks the contract; the message says how.
    """
    schedule = _instance(schedule, ResetSchedule, bad_params)
    name = type(schedule).__name__
    accepted = []
    for num_steps in (*STEP_COUNTS, 50):
        try:
            schedule.validate(num_steps)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001 - the contract allows ValueError only
            raise AssertionError(f"{name}.validate({num_steps}) raised {type(exc).__name__}; refuse a step count with ValueError") from exc
        accepted.append(num_steps)
        flags = [schedule.is_dense(i, num_steps) for i in range(num_steps)]
        for i, flag in enumerate(flags):
            _expect(isinstance(flag, bool), f"{name}.is_dense({i}, {num_steps}) returned {flag!r}, not a bool")
        backwards = [schedule.is_dense(i, num_steps) for i in reversed(range(num_steps))][::-1]
        _expect(backwards == flags, f"{name}.is_dense depends on the order it is called in (num_steps={num_steps})")
    _expect(bool(accepted), f"{name}.validate refuses every step count tried ({', '.join(map(str, (*STEP_COUNTS, 50)))})")
    steps = max(accepted)
    state = _compose("reset", schedule, steps=steps)
    n = state.num_tokens
    for i, active in enumerate(state.active_tokens_per_step):
        if schedule.is_dense(i, steps):
            _expect(active == n, f"{name} forces step {i} dense but the sampler planned {active} of {n} tokens")


def check_inactive_fill(fill: type[InactiveFill] | InactiveFill, bad_params: Mapping[str, Any] | None = None) -> None:
    """Check an `InactiveFill`: a non-negative integer `order`; `forecast` returns a new `(Bt, N, F)` tensor
    of the outputs' dtype, finite, deterministic, inputs untouched; a token whose outputs never changed is
    forecast unchanged; it traces into one graph (`torch.compile(fullgraph=True)`: no host synchronisation,
    no branch on tensor values); validated parameters; and a tiny generation with the fill in a sampler.

    Args:
        fill: the class (built with its defaults) or an instance.
        bad_params: an invalid value per constructor parameter; by default every parameter is given a
            value of the wrong type.

    Raises:
        AssertionError: the fill breaks the contract; the message says how.
    """
    fill = _instance(fill, InactiveFill, bad_params)
    name = type(fill).__name__
    order = fill.order
    _expect(isinstance(order, int) and not isinstance(order, bool) and order >= 0, f"{name}.order is {order!r}; expected an integer >= 0")
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        outputs = [torch.randn(2, 12, 8, generator=gen).to(dtype) for _ in range(order + 1)]  # each (Bt, N, F)
        gaps = torch.randint(1, 4, (order + 1, 2, 12), generator=gen).float()  # (k + 1, Bt, N)
        steps = 20.0 - gaps.cumsum(0)  # strictly decreasing along the history, per token
        now = torch.tensor(20.0)
        before = [o.clone() for o in outputs], steps.clone()
        where = f"{name}.forecast on {dtype} outputs of order {order}"
        out = fill.forecast(outputs, steps, now)
        _expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 12, 8), f"{where} returned shape {tuple(getattr(out, 'shape', ()))}; expected (Bt, N, F) = (2, 12, 8)")
        _expect(out.dtype == dtype, f"{where} returned {out.dtype}; expected the outputs' {dtype}")
        _expect(bool(torch.isfinite(out).all()), f"{where} returned NaN or infinite values")
        _expect(all(out.data_ptr() != o.data_ptr() for o in outputs), f"{where} returned one of its inputs; return a new tensor")
        _expect(all(torch.equal(o, b) for o, b in zip(outputs, before[0], strict=True)) and torch.equal(steps, before[1]),
                f"{where} modified its inputs in place")  # fmt: skip
        _expect(torch.equal(fill.forecast(outputs, steps, now), out), f"{where} is not deterministic")
        still = [outputs[0].clone() for _ in outputs]
        torch.testing.assert_close(fill.forecast(still, steps, now), outputs[0], msg=f"{where}: a token whose outputs never changed is forecast as another value")
    compiled = torch.compile(fill.forecast, fullgraph=True, backend="eager", dynamic=False)
    try:
        traced = compiled(outputs, steps, now)
    except Exception as exc:  # noqa: BLE001 - any failure to trace is the finding
        raise AssertionError(f"{name}.forecast does not trace into one graph (a host sync or a branch on tensor values?): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc  # fmt: skip
    torch.testing.assert_close(traced, out, msg=f"{name}.forecast gives other values once traced")
    warmup = order + 1  # every token's history is full at the first RAS step
    state = _compose("fill", fill, steps=warmup + 6, warmup=warmup)
    _expect(state.active_tokens_per_step[:warmup] == [state.num_tokens] * warmup, f"the first {warmup} steps with fill={name} were not dense")


# -- shared ---------------------------------------------------------------------------------------

_RESET_STEPS = (5,)  # the forced dense step of the composed sampler, unless the reset schedule is checked


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _instance(strategy: Any, interface: type, bad_params: Mapping[str, Any] | None) -> Any:
    """Check the class's parameters, and return `strategy` as an instance (a class is built with defaults)."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    _expect(issubclass(cls, interface), f"{cls.__name__} does not subclass {interface.__name__}")
    _expect(not getattr(cls, "__abstractmethods__", None),
            f"{cls.__name__} leaves abstract methods unimplemented: {', '.join(sorted(getattr(cls, '__abstractmethods__', ())))}")  # fmt: skip
    _check_params(cls, bad_params)
    if not isinstance(strategy, type):
        return strategy
    try:
        return cls()
    except Exception as exc:  # noqa: BLE001 - any failure of the defaults is the finding
        raise AssertionError(f"{cls.__name__}() with its defaults raised {type(exc).__name__}: {exc}") from exc


def _check_params(cls: type, bad_params: Mapping[str, Any] | None) -> None:
    """Every constructor parameter given a bad value raises a `ValueError` whose message names it."""
    names = [
        p.name for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]  # fmt: skip
    bad = dict(bad_params) if bad_params is not None else dict.fromkeys(names, _WrongType())
    for param, value in bad.items():
        _expect(param in names, f"bad_params names {param!r}, which {cls.__name__}() does not take")
        try:
            cls(**{param: value})
        except ValueError as exc:
            _expect(param in str(exc), f"{cls.__name__}({param}={value!r}) raised ValueError without naming '{param}': {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - the contract asks for ValueError
            raise AssertionError(f"{cls.__name__}({param}={value!r}) raised {type(exc).__name__}, not a ValueError naming '{param}'") from exc
        raise AssertionError(f"{cls.__name__}({param}={value!r}) was accepted; validate '{param}' and raise ValueError naming it")


def _score(metric: RegionMetric, tokens: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """`metric.score` with a generator seeded 0; a metric with memory (`uses_memory`) scores a first step
    and then this one, from a fresh memory each time."""
    if not metric.uses_memory:
        return metric.score(tokens, grid, torch.Generator().manual_seed(0))
    memory: dict = {}
    metric.score(tokens * 0.5, grid, torch.Generator().manual_seed(0), memory=memory)
    return metric.score(tokens, grid, torch.Generator().manual_seed(0), memory=memory)


def _tokens(grid: TokenGrid, batch: int, seed: int) -> torch.Tensor:
    shape = (batch, grid.num_tokens, grid.patch_values, grid.channels)  # (B, N, P, C)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _rank(score: torch.Tensor) -> torch.Tensor:
    """Rank of each patch within its image (0 = lowest score)."""
    return score.argsort(dim=1).argsort(dim=1)


def _compose(kind: str, strategy: Any, steps: int = 8, warmup: int = 2):
    """Run a tiny two-image generation with `strategy` in the sampler; return the run's `RegionState`."""
    from rasfw.attach import apply_ras, remove_ras
    from rasfw.sampler import RegionAdaptiveSampler
    from rasfw.strategies.ratios import ConstantRatio
    from rasfw.strategies.resets import FixedReset
    from rasfw.testing.tiny import tiny_sd3_loop

    resets = [s for s in _RESET_STEPS if warmup < s < steps]
    parts = {"ratio": ConstantRatio(0.5, warmup), "reset": FixedReset(resets), kind: strategy}
    name = type(strategy).__name__
    pipe = tiny_sd3_loop()
    state = apply_ras(pipe, RegionAdaptiveSampler(**parts))
    state.record_selection = True
    try:
        latents = pipe(batch=2, height=8, width=12, steps=steps)
    except Exception as exc:  # noqa: BLE001 - any failure inside the sampler is the finding
        raise AssertionError(f"a tiny generation with {kind}={name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        remove_ras(pipe)
    _expect(bool(torch.isfinite(latents).all()), f"a tiny generation with {kind}={name} produced NaN or infinite values")
    n = state.num_tokens
    for i, selected in enumerate(state.selections):
        if selected is not None:
            _expect(selected.shape[1] == state.active_tokens_per_step[i], f"step {i}: {selected.shape[1]} tokens selected, "
                                                                         f"{state.active_tokens_per_step[i]} planned")  # fmt: skip
            _expect(all(len(set(row.tolist())) == selected.shape[1] for row in selected) and int(selected.max()) < n,
                    f"step {i}: the selection with {kind}={name} repeats tokens or leaves the grid")  # fmt: skip
    return state
