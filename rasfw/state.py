"""Per-run state of one pipeline with RAS applied. Created by `apply_ras`, reset every generation.

Graph safety: every tensor a transformer call reads or writes (the active-index buffers, the key/value
caches, the output cache) is allocated here, outside the call, once per generation shape, and written in
place. A compiled graph or a captured CUDA graph therefore always sees the same addresses; only the
contents of the index buffers change from step to step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from rasfw.backends.torch_ref import scatter_rows

if TYPE_CHECKING:
    from rasfw.backends.base import TokenBackend
    from rasfw.interfaces import InactiveFill, TokenGrid

DEFAULT_CONTEXT = "default"
"""Cache context of a transformer call made outside `transformer.cache_context(name)`."""

_FP8 = {torch.float8_e4m3fn: 448.0}  # largest finite value: values are clamped before the cast
_NEVER = -1.0e6  # the step a history slot was "computed" at before it holds an output: far in the past


@dataclass
class KVCache:
    """The keys and values one attention module attends to at a RAS call.

    `key` / `value` are *joint* buffers `(Bt, S, W)` in the model's dtype, the image tokens at rows
    `image` and the text (context) tokens, if the module attends to any, at the other rows. Attention
    reads them as they are: nothing is concatenated per layer. With a `kv_dtype` other than the model's,
    the image rows persist in `stored_key` / `stored_value` `(Bt, N, W)` in that dtype, and `key` / `value`
    are scratch buffers shared by every module of the same shape, filled from the stored rows per call.
    """

    key: torch.Tensor
    value: torch.Tensor
    image: slice
    stored_key: torch.Tensor | None = None
    stored_value: torch.Tensor | None = None
    written_at: int | None = None  # the step its attention module last wrote it (eager calls; see `StaleCacheError`)

    def write_image(self, role: str, rows: torch.Tensor, index: torch.Tensor | None) -> None:
        """Store image `role` ("key" or "value") rows `(Bt, a, W)` at token rows `index` `(Bt, a)`.

        `index=None` stores all `N` image rows (a dense call that captures the cache).
        """
        joint, stored = getattr(self, role), getattr(self, f"stored_{role}")
        if stored is not None:
            _store(stored, rows, index)
            joint[:, self.image].copy_(stored)  # dequantise all rows, then overwrite the fresh ones exactly
        _store(joint[:, self.image], rows, index)

    def project_image(self, role: str, linear: torch.nn.Module, x: torch.Tensor, index: torch.Tensor | None,
                      backend: TokenBackend) -> None:
        """`write_image(role, linear(x), index)`, fused into one projection-scatter kernel where possible: a plain
        `nn.Linear` whose forward no hook wraps (layerwise casting or leaf-level offloading act in the forward)."""
        plain = type(linear) is torch.nn.Linear and "forward" not in vars(linear)
        if index is not None and getattr(self, f"stored_{role}") is None and plain:
            backend.linear_scatter(x, linear.weight, linear.bias, index, getattr(self, role)[:, self.image])
            return
        self.write_image(role, linear(x), index)

    def write_text(self, key: torch.Tensor, value: torch.Tensor, text: slice) -> None:
        """Write this call's text keys/values `(Bt, T, W)` into their rows of the joint buffers."""
        self.key[:, text].copy_(key)
        self.value[:, text].copy_(value)


def _skipped(name: str, step: int, context: str) -> str:
    return (
        f"RAS: attention module {name} did not run at step {step} in cache context '{context}' (something skipped it), "
        "so its key/value cache is stale for the next RAS step"
    )


def _store(dst: torch.Tensor, src: torch.Tensor, index: torch.Tensor | None) -> None:
    """`dst[b, index[b, j]] = src[b, j]` in place (`dst.copy_(src)` when `index` is None), in `dst`'s dtype."""
    limit = _FP8.get(dst.dtype)
    if limit is not None:
        src = src.clamp(-limit, limit)
    src = src.to(dst.dtype)
    if index is None:
        dst.copy_(src)
        return
    if limit is not None:  # scatter has no float8 kernel: move the bytes
        dst, src = dst.view(torch.uint8), src.view(torch.uint8)
    scatter_rows(dst, index, src)


@dataclass
class CallCaches:
    """The caches of one cache context (`cond`, `uncond`, or `default`).

    Attributes:
        output: `(Bt, N, F)` the transformer's last computed output per token (before unpatchify).
        kv: per attention module (by qualified name), its key/value cache.
        history: for a forecasting fill of order `k`, `k` buffers `(Bt, N, F)`: `history[j]` the output
            computed `j + 1` computations before `output`, per token.
        computed_at: `(k + 1, Bt, N)` float32 step indices of `output` and `history`; `None` unless the
            fill forecasts (`InactiveFill.forecasts`).
        output_at: the step the output projection last wrote `output` (eager calls; see `StaleCacheError`).
        previous: the step of this context's call before the one in progress (`None`: none this generation).
    """

    output: torch.Tensor | None = None
    kv: dict[str, KVCache] = field(default_factory=dict)
    history: list[torch.Tensor] = field(default_factory=list)
    computed_at: torch.Tensor | None = None
    output_at: int | None = None
    previous: int | None = None

    def outputs(self) -> list[torch.Tensor]:
        """`[output, *history]`: a token's computed outputs, latest first."""
        return [self.output, *self.history]

    def record(self, clock: torch.Tensor, index: torch.Tensor | None, rows: torch.Tensor, backend: TokenBackend) -> None:
        """Store freshly computed `rows` as the tokens' latest outputs, shifting their history by one.

        Args:
            clock: 0-d float32, the current step.
            index: `(Bt, a)` the tokens `rows` belong to; `None`: `rows` is the whole grid `(Bt, N, F)`.
            rows: `(Bt, a, F)` (or `(Bt, N, F)`) computed outputs.
            backend: the token backend that moves rows.
        """
        outputs, steps = self.outputs(), self.computed_at
        for j in range(len(outputs) - 1, 0, -1):  # oldest first, so each slot is read before it is overwritten
            if index is None:
                outputs[j].copy_(outputs[j - 1])
                steps[j].copy_(steps[j - 1])
            else:
                backend.scatter(outputs[j], index, backend.gather(outputs[j - 1], index))
                steps[j].scatter_(1, index, steps[j - 1].gather(1, index))
        if index is None:
            self.output.copy_(rows)
            steps[0].copy_(clock.expand_as(steps[0]))
        else:
            backend.scatter(self.output, index, rows)
            steps[0].scatter_(1, index, clock.expand(index.shape))


@dataclass
class ForwardPlan:
    """What one transformer call must do.

    Attributes:
        index: `(Bt, a)` active token indices per transformer-batch row (a fixed buffer of the state), or
            `None` for a dense call.
        capture: dense call whose keys/values and outputs the following RAS step will reuse.
        kv_cache: at a RAS call, whether active queries also attend to cached keys/values of the
            inactive tokens (Eq. 2 of the RAS paper). Off: inactive tokens drop out of attention.
        context: the cache context of the call (`transformer.cache_context(name)`).
        caches: the buffers of that context; `None` at a dense call that neither reads nor writes them.
    """

    index: torch.Tensor | None = None
    capture: bool = False
    kv_cache: bool = True
    context: str = DEFAULT_CONTEXT
    caches: CallCaches | None = None

    @property
    def dense(self) -> bool:
        return self.index is None

    @property
    def key(self) -> tuple:
        """The part of the call's shape key that the plan decides (see `rasfw.execution`)."""
        if self.index is None:
            return ("capture", self.kv_cache, self.context) if self.capture else ("dense",)
        return ("ras", self.index.shape[1], self.kv_cache, self.context)


class StaleCacheError(RuntimeError):
    """A RAS call would read a key/value or output cache that was not written at the call before it.

    Every cache records the step it was last written at (`KVCache.written_at`, `CallCaches.output_at`). At a
    RAS call the inactive tokens' keys, values and outputs are read from the caches, so each must have been
    written at the previous call of the same cache context (the capture step or the RAS step before): a
    module that something skipped there (a step cache, a hook that returns early) would hand stale rows to
    attention. rasfw raises this instead of sampling a silently wrong image; `module` names the module.
    """

    def __init__(self, message: str, module: str = "") -> None:
        super().__init__(message)
        self.module = module


@dataclass
class RegionState:
    """Everything one generation needs; nothing here is shared between pipelines.

    Attributes:
        num_steps: steps of the current generation (from `scheduler.set_timesteps`).
        step: index of the current step.
        skips: planned number of cached (skipped) tokens per step; 0 means a dense step.
        active: `(B, a)` active tokens of the current step per image (a fixed buffer), `None` when dense.
        drop_count: `(B, N)` how often each patch has been cached (`D` of Eq. 1).
        update_count: `(B, N)` how often each patch was recomputed (for the heat map).
        caches: per cache context, the key/value and output caches.
        forward: the plan of the transformer call in progress.
        generator: random numbers for strategies that need them, seeded per generation.
        grid: the token grid of the current generation (`grid_shape` is its `(frames, rows, cols)`).
        kv_dtype: dtype the image keys/values are stored in; `None`: the model's dtype.
        keep_buffers: keep the buffers between generations (captured CUDA graphs hold their addresses).
        calls: per cache context, the last step at which a call read or wrote its caches.
        call_order: per cache context name, `(step, calls so far at that step)` (see `call_context`).
        scopes: the transformers (by attribute name) called so far in this generation.
        metric_memory: what a metric with `uses_memory` keeps from step to step of this generation.
        record_selection: keep a CPU copy of every step's active tokens in `selections` (for pictures of
            the selection over time; off by default: it copies from the device once per RAS step).
        selections: with `record_selection`, per step the `(B, a)` active tokens, `None` at dense steps.
        step_callbacks: called with the state at the end of each `scheduler.step` (the scheduler's update done,
            `step` already advanced; e.g. to record what each step held, or to profile one step).
        fill: the sampler's inactive-token fill for this generation (set at its first call).
        clock: 0-d float32 tensor, the current step, at a fixed address (forecasting fills read it inside
            the call); `None` unless the fill forecasts.
        check_writes: record the step every cache is written at and refuse to read a stale one
            (`StaleCacheError`); on with eager execution (a compiled or captured graph runs every module).
        passthrough: the generation in progress is not this pipeline's (a `from_pipe` sibling sharing its
            transformer and scheduler), or no generation is: the transformer and scheduler run as without RAS.
        step_caches: diffusers step-cache hooks `(module, hook)` found on the transformer at the start of the
            generation; they forget their state whenever the next step computes other tokens than the last.
    """

    num_steps: int = 0
    step: int = 0
    skips: list[int] | None = None
    active: torch.Tensor | None = None
    drop_count: torch.Tensor | None = None
    update_count: torch.Tensor | None = None
    caches: dict[str, CallCaches] = field(default_factory=dict)
    forward: ForwardPlan = field(default_factory=ForwardPlan)
    generator: torch.Generator = field(default_factory=torch.Generator)
    grid: TokenGrid | None = None
    kv_dtype: torch.dtype | None = None
    keep_buffers: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    call_order: dict[str, tuple[int, int]] = field(default_factory=dict)
    scopes: set[str] = field(default_factory=set)
    metric_memory: dict = field(default_factory=dict)
    record_selection: bool = False
    selections: list[torch.Tensor | None] = field(default_factory=list)
    step_callbacks: list[Callable[[RegionState], None]] = field(default_factory=list)
    fill: InactiveFill | None = None
    clock: torch.Tensor | None = None
    check_writes: bool = False
    passthrough: bool = False
    step_caches: list[tuple[torch.nn.Module, object]] = field(default_factory=list)
    _indices: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    _scratch: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    def reset(self, num_steps: int, seed: int) -> None:
        """Forget the previous generation and prepare for one of `num_steps` steps."""
        self.num_steps = num_steps
        self.step = 0
        self.skips = None
        self.active = None
        self.drop_count = None
        self.update_count = None
        self.grid = None
        self.calls.clear()
        self.call_order.clear()
        self.scopes.clear()
        self.metric_memory.clear()
        self.selections = [None] * num_steps if self.record_selection else []
        self.forward = ForwardPlan()
        self.generator.manual_seed(seed)

    def call_context(self, context: str) -> str:
        """The cache context of a transformer call made in `context` at the current step: `context` for the
        step's first call there, `context#k` for its k-th. A pipeline that calls the transformer k times a step
        without `transformer.cache_context` (Flux img2img's true CFG: the prompt, then the negative prompt) makes
        the same k calls in the same order every step, so the k-th call of every step keeps caches of its own."""
        step, count = self.call_order.get(context, (-1, 0))
        count = count + 1 if step == self.step else 1
        self.call_order[context] = (self.step, count)
        return context if count == 1 else f"{context}#{count}"

    def verify_step(self) -> None:
        """After the transformer calls of the current step: every context called with caches wrote them.

        Raises:
            StaleCacheError: a context's output projection, or an attention module that wrote its cache at
                the context's previous call, did not run at this step (something skipped it).
        """
        if not self.check_writes:
            return
        step = self.step
        for context, called in self.calls.items():
            caches = self.caches.get(context)
            if called != step or caches is None:
                continue
            if caches.output_at != step:
                raise StaleCacheError(
                    f"RAS: the transformer's output projection did not run at step {step} in cache context '{context}' "
                    "(something returned the transformer's output without running it), so its output cache is stale",
                    "proj_out",
                )
            for name, kv in caches.kv.items():
                if kv.written_at is not None and kv.written_at != step and kv.written_at == caches.previous:
                    raise StaleCacheError(_skipped(name, step, context), name)

    def release_caches(self) -> None:
        """Free the key/value and output caches (after the last step); statistics stay readable.

        With `keep_buffers` (captured CUDA graphs read and write them) they stay until `remove_ras`.
        """
        self.forward = ForwardPlan()
        if not self.keep_buffers:
            self.free()

    def free(self) -> None:
        """Free every buffer, whatever `keep_buffers` says."""
        self.caches.clear()
        self._indices.clear()
        self._scratch.clear()
        self.metric_memory.clear()
        self.active = None
        self.clock = None
        self.forward = ForwardPlan()

    # -- fixed-address buffers --------------------------------------------------------------------

    def index_buffer(self, rows: int, count: int, device: torch.device) -> torch.Tensor:
        """The `(rows, count)` int64 index buffer: one per shape, reused by every call of that shape."""
        buffer = self._indices.get((rows, count))
        if buffer is None or buffer.device != device:
            buffer = self._indices[(rows, count)] = torch.zeros(rows, count, dtype=torch.int64, device=device)
        return buffer

    def context_caches(self, context: str) -> CallCaches:
        """The caches of `context`, created empty on first use."""
        return self.caches.setdefault(context, CallCaches())

    def set_clock(self, step: int) -> None:
        """Write `step` into the clock buffer in place (no-op until a forecasting fill allocates it)."""
        if self.clock is not None:
            self.clock.fill_(float(step))

    def output_cache(self, caches: CallCaches, shape: tuple[int, int, int], dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
        """`caches.output`, a `(Bt, N, F)` buffer, allocated once per generation shape; with a forecasting
        fill of order `k`, also its `k` history buffers, their step indices and the clock."""
        out = caches.output
        if out is None or tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
            out = caches.output = torch.zeros(shape, dtype=dtype, device=device)
            forecasts = self.fill is not None and self.fill.forecasts
            order = self.fill.order if forecasts else 0
            caches.history = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(order)]
            never = _NEVER * torch.arange(1, order + 2, dtype=torch.float32, device=device)  # (k + 1,)
            caches.computed_at = never.view(-1, 1, 1).repeat(1, *shape[:2]) if forecasts else None  # (k + 1, Bt, N)
        if caches.computed_at is not None and (self.clock is None or self.clock.device != device):
            self.clock = torch.full((), float(self.step), dtype=torch.float32, device=device)
        return out

    def kv_cache(self, caches: CallCaches, name: str, shape: tuple[int, int, int], image: slice, value_width: int,
                 dtype: torch.dtype, device: torch.device) -> KVCache:
        """The key/value cache of module `name`: joint buffers `(Bt, S, W)` with image rows `image`.

        Allocated on the first call of a generation shape and reused after; `value_width` may differ from
        the key width `W` (grouped-query layouts keep both equal, but nothing here assumes it).
        """
        cache = caches.kv.get(name)
        key_shape, value_shape = shape, (*shape[:2], value_width)
        if cache is not None and tuple(cache.key.shape) == key_shape and cache.key.dtype == dtype:
            return cache
        rows = image.stop - image.start
        kv_dtype = self.kv_dtype if self.kv_dtype not in (None, dtype) else None
        if kv_dtype is None:
            cache = KVCache(
                torch.zeros(key_shape, dtype=dtype, device=device), torch.zeros(value_shape, dtype=dtype, device=device), image
            )
        else:
            cache = KVCache(
                self._shared(key_shape, dtype, device, "key"),
                self._shared(value_shape, dtype, device, "value"),
                image,
                torch.zeros((shape[0], rows, shape[2]), dtype=kv_dtype, device=device),
                torch.zeros((shape[0], rows, value_width), dtype=kv_dtype, device=device),
            )
        caches.kv[name] = cache
        return cache

    def _shared(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, role: str) -> torch.Tensor:
        key = (role, tuple(shape), dtype, str(device))
        if key not in self._scratch:
            self._scratch[key] = torch.zeros(shape, dtype=dtype, device=device)
        return self._scratch[key]

    @property
    def grid_shape(self) -> tuple[int, int, int] | None:
        """`(frames, rows, cols)` of the current generation's token grid (`None` before its first call)."""
        return None if self.grid is None else self.grid.shape

    @property
    def num_tokens(self) -> int:
        """Image (or video) tokens of the current generation (0 before its first transformer call)."""
        return 0 if self.grid is None else self.grid.num_tokens

    @property
    def active_tokens_per_step(self) -> list[int]:
        """Tokens recomputed per image at each planned step."""
        if self.skips is None or self.grid is None:
            return []
        return [self.num_tokens - s for s in self.skips]

    @property
    def kv(self) -> dict[str, KVCache]:
        """All key/value caches, keyed `"<context>/<module>"` (empty once a generation has ended)."""
        return {f"{context}/{name}": kv for context, caches in self.caches.items() for name, kv in caches.kv.items()}

    def memory_bytes(self) -> int:
        """Bytes held by the caches and buffers of this state right now."""
        tensors = [c.output for c in self.caches.values() if c.output is not None]
        tensors += [t for c in self.caches.values() for t in (*c.history, c.computed_at) if t is not None]
        for cache in (kv for caches in self.caches.values() for kv in caches.kv.values()):
            tensors += [t for t in (cache.stored_key, cache.stored_value) if t is not None]
            if cache.stored_key is None:
                tensors += [cache.key, cache.value]
        tensors += list(self._scratch.values()) + list(self._indices.values())
        return sum(t.numel() * t.element_size() for t in tensors)
