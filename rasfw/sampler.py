"""RegionAdaptiveSampler: plans each step, selects the active tokens, owns nothing global."""

from __future__ import annotations

import importlib
import math

import torch

from rasfw.backends.base import backend_names
from rasfw.checks import integer, number
from rasfw.interfaces import InactiveFill, RatioSchedule, RegionMetric, ResetSchedule, StarvationPolicy, TokenGrid
from rasfw.registry import KINDS, REGISTRY, STRATEGY_KINDS, register
from rasfw.state import DEFAULT_CONTEXT, ForwardPlan, RegionState
from rasfw.strategies.fills import ReuseFill
from rasfw.strategies.metrics import StdNoise
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset, NoReset
from rasfw.strategies.starvation import ExpStarvation

COUNTS = ("exact", "reference")
"""`sampler.count` choices: how the cached tokens split between the top and the bottom of the ranking."""
KV_DTYPES = {"model": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float8_e4m3fn": torch.float8_e4m3fn}
"""`sampler.kv_dtype` choices: the dtype image keys/values are stored in ("model": the model's own)."""


@register("sampler", "ras")
class RegionAdaptiveSampler:
    """Region-Adaptive Sampling settings: which tokens to recompute at which step.

    The sampler itself is immutable settings; the state of a generation lives in a `RegionState`
    that `apply_ras` creates per pipeline.

    Each strategy argument takes an instance or the name it is registered under, built with its defaults
    (`metric="l2norm"` is `L2Norm()`, as `metric=l2norm` is on the command line); an unknown name raises a
    `ValueError` listing the known ones.

    Args:
        metric: ranks patches from the model output (Eq. 1 of the RAS paper).
        ratio: share of tokens recomputed per step, warm-up included.
        starvation: lifts often-dropped patches.
        reset: forced dense steps.
        fill: what an inactive token's output is at a RAS step: its last computed one (`ReuseFill`, the
            default: vanilla RAS) or a per-token forecast (`TaylorFill`).
        high_ratio: of the tokens to cache, the share taken from the top of the ranking (`h`); the
            rest come from the bottom. This default is the CLI's too (`conf/sampler/ras.yaml` repeats it,
            and a test keeps the two equal): 0 caches the lowest-scoring tokens, which keeps the embedded
            model's object active. The reference implementation's examples use 1 (its default; Lumina-Next,
            `+experiment=lumina_next_reference`) and 0.3 (SD3, `+experiment=sd3_reference`).
        kv_cache: active queries attend to cached keys/values of inactive tokens (Eq. 2).
        kv_dtype: dtype the cached image keys/values are stored in: "model" (the model's dtype),
            "bfloat16", "float16" or "float8_e4m3fn"; attention reads them back in the model's dtype.
        backend: token-operation backend, "torch", "triton" or "auto".
        seed: seed of the per-generation random generator (used by `metric=random`).
        count: "exact" caches exactly the planned number of tokens; "reference" floors both shares,
            `floor(skip * h)` from the top and `floor(skip * (1 - h))` from the bottom, as the reference
            implementation does (it can cache one token fewer than planned).

    Example:
        >>> from rasfw import RegionAdaptiveSampler, apply_ras
        >>> sampler = RegionAdaptiveSampler()          # std metric, 50 %, warm-up 4, resets 12 and 20
        >>> sampler = RegionAdaptiveSampler(metric="l2norm", reset="none")  # strategies by name
        >>> # apply_ras(pipe, sampler); pipe(prompt)
    """

    def __init__(
        self,
        metric: RegionMetric | str | None = None,
        ratio: RatioSchedule | str | None = None,
        starvation: StarvationPolicy | str | None = None,
        reset: ResetSchedule | str | None = None,
        fill: InactiveFill | str | None = None,
        high_ratio: float = 0.0,
        kv_cache: bool = True,
        backend: str = "torch",
        seed: int = 0,
        kv_dtype: str = "model",
        count: str = "exact",
    ) -> None:
        self.metric = _strategy("metric", metric) if metric is not None else StdNoise()
        self.ratio = _strategy("ratio", ratio) if ratio is not None else ConstantRatio()
        self.starvation = _strategy("starvation", starvation) if starvation is not None else ExpStarvation()
        self.reset = _strategy("reset", reset) if reset is not None else FixedReset()
        self.fill = _strategy("fill", fill) if fill is not None else ReuseFill()
        _check_types(self)
        self.high_ratio = number("sampler.high_ratio", high_ratio, "[0, 1]", lambda v: 0 <= v <= 1)
        if not isinstance(kv_cache, bool):
            raise ValueError(f"sampler.kv_cache must be true or false; got {kv_cache!r}")
        self.kv_cache = kv_cache
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"sampler.kv_dtype must be one of {', '.join(KV_DTYPES)}; got {kv_dtype!r}")
        if not kv_cache and kv_dtype != "model":
            raise ValueError(
                f"sampler.kv_dtype={kv_dtype} stores cached keys/values, and sampler.kv_cache=false caches none; "
                "set one of them back (kv_dtype=model or kv_cache=true)"
            )
        self.kv_dtype = kv_dtype
        backends = backend_names()
        if backend not in backends:
            raise ValueError(f"backend must be one of {', '.join(backends)}; got {backend!r}")
        self.backend = backend
        if count not in COUNTS:
            raise ValueError(f"sampler.count must be one of {', '.join(COUNTS)}; got {count!r}")
        self.count = count
        self.seed = integer("seed", seed, f"[{-(2**63)}, {2**64 - 1}]", lambda v: -(2**63) <= v < 2**64)

    # -- planning -------------------------------------------------------------------------------

    def skip_count(self, step: int, num_steps: int, num_tokens: int) -> int:
        """Tokens cached at `step`: the planned count, or with `count="reference"` the sum of its floored
        shares (see `shares`)."""
        return sum(self.shares(self.planned_skip(step, num_steps, num_tokens)))

    def shares(self, skip: int) -> tuple[int, int]:
        """`(high, low)`: of `skip` planned cached tokens, how many come from the top and the bottom of the
        ranking. `high = floor(skip * h)`; `low` is the rest (exact) or `floor(skip * (1 - h))` (reference).

        The same `skip` gives every image the same shares, so the images of a batch keep one active count.
        """
        high = int(math.floor(skip * self.high_ratio))
        if self.count == "reference":  # fidelity to the reference implementation: both shares floored
            return high, int(math.floor(skip * (1.0 - self.high_ratio)))
        return high, skip - high

    def planned_skip(self, step: int, num_steps: int, num_tokens: int) -> int:
        """Tokens the schedule asks to cache at `step`: `int((1 - r) * N)`, 0 at step 0 and at forced dense steps."""
        if step == 0 or self.reset.is_dense(step, num_steps):
            return 0
        r = self.ratio.ratio(step, num_steps, num_tokens)
        if not 0 < r <= 1:
            raise ValueError(f"ratio schedule returned {r} at step {step}; ratios must lie in (0, 1]")
        return min(int(math.floor((1.0 - r) * num_tokens + 1e-6)), num_tokens - 1)

    def begin(self, state: RegionState, num_steps: int) -> None:
        """Start a generation of `num_steps` steps (called from `scheduler.set_timesteps`)."""
        if num_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1; got {num_steps}")
        self.reset.validate(num_steps)
        state.reset(num_steps, self.seed)

    def prepare_forward(
        self, state: RegionState, batch: int, grid: TokenGrid, context: str = DEFAULT_CONTEXT
    ) -> ForwardPlan:
        """Plan the transformer call of the current step for a transformer batch of `batch` rows.

        Runs before the call, on the host: every decision that depends on data was taken in `observe`,
        and the active indices are copied into the fixed `(batch, a)` index buffer of the state.
        """
        if state.skips is None:
            state.grid = grid
            state.kv_dtype = KV_DTYPES[self.kv_dtype]
            n = grid.num_tokens
            state.skips = [self.skip_count(i, state.num_steps, n) for i in range(state.num_steps)]
            state.fill = self.fill
            self._check_fill(state.skips)
        i = state.step
        state.set_clock(i)
        if i >= state.num_steps or state.active is None:
            capture = self._captures(state.skips, i)
            caches = state.context_caches(context) if capture else None
            return _planned(state, ForwardPlan(None, capture, self.kv_cache, context, caches))
        images, active = state.active.shape
        if batch % images:
            raise ValueError(f"transformer batch {batch} is not a multiple of the {images} images being sampled")
        caches = state.context_caches(context)
        if state.calls.get(context) != i - 1:
            # This context was not called at the step before (a call a pipeline makes at some steps only, such as
            # SD3's skip-layer guidance): its caches are not this generation's last, so the call runs dense and
            # fills them; the next step may then recompute its active tokens against them.
            return _planned(state, ForwardPlan(None, True, self.kv_cache, context, caches))
        index = state.index_buffer(batch, active, state.active.device)
        if index is not state.active:
            # Pipelines stack CFG copies along the batch ([uncond..., cond...]): row r is image r % B.
            index.view(batch // images, images, active).copy_(state.active.expand(batch // images, -1, -1))
        return _planned(state, ForwardPlan(index, False, self.kv_cache, context, caches))

    def same_tokens(self, skips: list[int], step: int) -> bool:
        """Whether `step` computes the same tokens as the step before and fills no cache: both dense, and
        `step` is no capture step. A step cache beside RAS (`rasfw.step_caches`) may only carry its state across
        such steps; at any other it must run every block."""
        if not 0 < step < len(skips):
            return False
        return skips[step - 1] == 0 and skips[step] == 0 and not self._captures(skips, step)

    def _captures(self, skips: list[int], step: int) -> bool:
        """Whether the dense call of `step` fills the caches: the step before a RAS step does; with a
        forecasting fill, every dense step before the last RAS step adds to the tokens' history."""
        later = skips[step + 1 :]
        if self.fill.order == 0:
            return bool(later) and later[0] > 0
        return any(s > 0 for s in later)

    def _check_fill(self, skips: list[int]) -> None:
        """A fill of order `k` needs `k + 1` computed outputs of every token before the first RAS step."""
        first = next((i for i, s in enumerate(skips) if s > 0), None)
        if first is not None and first < self.fill.order + 1:
            raise ValueError(
                f"fill.order={self.fill.order} ({type(self.fill).__name__}(order=...)) needs {self.fill.order + 1} dense steps before "
                f"the first RAS step; this schedule has {first} (raise ratio.warmup or lower fill.order)"
            )

    def switch_model(self, state: RegionState, scope: str) -> None:
        """The pipeline moved on to another transformer (`scope`) mid-generation (Wan 2.2's boundary).

        Keys, values and outputs cached by one model are not valid for another, so the current step
        becomes dense: it fills `scope`'s caches, and its planned selection is withdrawn (the drop counts
        it added are taken back). The caches filled so far are freed, unless captured graphs hold them
        (`keep_buffers`).
        """
        i = state.step
        if state.skips is not None and i < len(state.skips):
            state.skips[i] = 0
        if state.active is not None:
            state.drop_count -= 1.0
            state.drop_count.scatter_add_(1, state.active, torch.ones_like(state.active, dtype=torch.float32))
            state.active = None
        state.calls.clear()  # every context is refilled by this dense step
        if not state.keep_buffers:
            state.caches.clear()  # the previous model's caches; `scope`'s own, if any, are stale too
        state.scopes.clear()

    def observe(self, state: RegionState, model_output: torch.Tensor, grid: TokenGrid) -> None:
        """After the model output of the current step: count updates, choose the next step's tokens."""
        images, n = model_output.shape[0], grid.num_tokens
        if state.skips is None:  # the transformer was never called through the hooks
            return
        device = model_output.device
        if state.update_count is None:
            state.update_count = torch.zeros(images, n, dtype=torch.int32, device=device)
            state.drop_count = torch.zeros(images, n, dtype=torch.float32, device=device)
        if state.active is None:
            state.update_count += 1
        else:
            state.update_count.scatter_add_(1, state.active, torch.ones_like(state.active, dtype=torch.int32))
        i = state.step
        state.active = None
        if i + 1 < state.num_steps and state.skips[i + 1] > 0:
            tokens = grid.to_tokens(model_output.float())  # (B, N, P, C)
            memory = {"memory": state.metric_memory} if self.metric.uses_memory else {}
            score = self.metric.score(tokens, grid, state.generator, **memory).float()  # (B, N)
            score = self.starvation.adjust(score, state.drop_count)
            selected = self.select(score, self.planned_skip(i + 1, state.num_steps, n))  # (B, a)
            state.active = state.index_buffer(images, selected.shape[1], device).copy_(selected)
            if state.record_selection:  # between calls, on the host: no graph sees this copy
                state.selections[i + 1] = selected.cpu()
            state.drop_count += 1.0
            state.drop_count.scatter_add_(1, state.active, torch.full_like(state.active, -1.0, dtype=torch.float32))

    def select(self, score: torch.Tensor, skip: int) -> torch.Tensor:
        """Active tokens given `(B, N)` scores and `skip` planned tokens to cache, sorted, `(B, a)`.

        Of the cached tokens, `floor(skip * h)` are the highest-scoring and the rest the lowest-scoring
        (`shares`): `a = N - skip` with `count="exact"` (the default); the reference implementation floors
        both shares, which can cache one token fewer (`count="reference"`). All images share `skip`, so
        they share `a`: the `(B, a)` index buffer stays rectangular.
        """
        n = score.shape[1]
        high, low = self.shares(skip)
        order = torch.sort(score, dim=1, stable=True).indices  # (B, N) ascending
        return torch.sort(order[:, low : n - high], dim=1).values  # (B, a)


@register("sampler", "dense")
class DenseSampler(RegionAdaptiveSampler):
    """Every step dense: the baseline, through the same hooks (bit-for-bit the unmodified pipeline)."""

    def __init__(self, backend: str = "torch", seed: int = 0, **ignored_strategies: object) -> None:
        super().__init__(ratio=ConstantRatio(1.0, 0), reset=NoReset(), backend=backend, seed=seed)


def _planned(state: RegionState, plan: ForwardPlan) -> ForwardPlan:
    """Make `plan` the call in progress; a call that reads or writes caches is recorded per context (the step of
    its previous call stays in `caches.previous`, which the stale-cache checks compare against)."""
    if plan.caches is not None:
        plan.caches.previous = state.calls.get(plan.context)
        state.calls[plan.context] = state.step
    state.forward = plan
    return plan


def _strategy(kind: str, value: object) -> object:
    """`value`, or the strategy registered as `kind`/`value` built with its defaults when `value` is a name.

    Args:
        kind: the strategy kind ("metric", "ratio", ...).
        value: an instance, or a registered name.

    Raises:
        ValueError: `value` is a name nothing is registered under for `kind` (the message lists the known ones).
    """
    return REGISTRY.build(kind, value) if isinstance(value, str) else value


def _check_types(sampler: RegionAdaptiveSampler) -> None:
    for kind in STRATEGY_KINDS:  # the strategy attributes are named after their kinds
        module, name = KINDS[kind].interface.split(":")
        interface = getattr(importlib.import_module(module), name)
        value = getattr(sampler, kind)
        if not isinstance(value, interface):
            raise TypeError(f"{kind} must be a {interface.__name__} or a registered name; got {type(value).__name__}")
