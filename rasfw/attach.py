"""`apply_ras` / `remove_ras`: attach a sampler to a pipeline's transformer and scheduler.

The transformer gets named, removable diffusers hooks (`HookRegistry` / `ModelHook`, name `rasfw`): one
on the transformer itself that plans each call and runs it through the chosen executor, and the
adapter's hooks and attention processors inside it (the hook classes: `rasfw.adapters.hooks`). The scheduler (not a module) gets instance-level
`set_timesteps` / `step` wrappers; removal puts back exactly what was there before.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from rasfw._compat import hook_registry, hooks_changed
from rasfw.backends.base import TokenBackend, resolve_backend
from rasfw.execution.base import Executor, build_executor
from rasfw.interfaces import ModelAdapter
from rasfw.ownership import calling_pipeline, owner_ref
from rasfw.registry import REGISTRY
from rasfw.sampler import RegionAdaptiveSampler
from rasfw.state import RegionState, StaleCacheError

_ATTR = "_rasfw_attachment"
_MISSING = object()


_SCHEDULER_METHODS = ("set_timesteps", "set_begin_index", "step")
"""Scheduler methods `apply_ras` wraps per instance (`set_begin_index` where the scheduler has one)."""

TRANSFORMERS = ("transformer", "transformer_2")
"""Pipeline attributes that hold a transformer RAS drives (Wan 2.2 switches to `transformer_2` at a boundary)."""


@dataclass
class _Part:
    """One transformer RAS is applied to, with its own adapter, executor and hook."""

    scope: str  # the pipeline attribute it came from ("transformer", "transformer_2")
    transformer: torch.nn.Module
    adapter: ModelAdapter
    executor: Executor
    hooked: Any  # rasfw.adapters.hooks.Hooked: the transformer's hook, as registered
    hook: Any = None  # rasfw.adapters.hooks.TransformerHook


@dataclass
class _Attachment:
    parts: list[_Part]  # the objects RAS was applied to (the pipeline's attributes may change later)
    scheduler: Any
    sampler: RegionAdaptiveSampler
    backend: TokenBackend
    state: RegionState
    scheduler_attrs: dict[str, Any]  # instance attributes the wrapped scheduler methods had before (or _MISSING)
    owner: Any = None  # weak reference to the pipeline (rasfw.ownership), or None
    pipe_attrs: dict[str, Any] = field(default_factory=dict)  # the pipeline's wrapped methods before (or _MISSING)


def apply_ras(
    pipe: Any, sampler: RegionAdaptiveSampler | None = None, execution: str | Executor = "eager", **options: Any
) -> RegionState:
    """Make `pipe` sample with Region-Adaptive Sampling; `pipe(...)` is then called as usual.

    Works on any object with `.transformer` (a supported DiT) and `.scheduler` (a diffusers-style
    scheduler with `set_timesteps` and `step`), such as diffusers' `StableDiffusion3Pipeline`. A pipeline
    with a second transformer in `.transformer_2` (Wan 2.2, which switches to it at a boundary timestep)
    gets RAS on both; the first step on the other transformer is dense, because keys, values and outputs
    cached by one model are not valid for the other (see `docs/models/wan.md`).

    Args:
        pipe: the pipeline to modify in place.
        sampler: the RAS settings; the reference defaults when omitted.
        execution: how each transformer call runs: "eager" (default, bit-exact), "compile"
            (`torch.compile(fullgraph=True)`, one graph per call shape) or "cudagraph" (one captured CUDA
            graph per call shape; CUDA only), or an `Executor` instance (one transformer only).
        **options: options of the executor (e.g. `compile_backend="aot_eager"` for "compile").

    Returns:
        The pipeline's `RegionState` (read it after a call for per-step statistics).

    Raises:
        TypeError: the pipeline has no transformer/scheduler or its transformer is not supported.
        ValueError: RAS is already applied to this pipeline, its transformer or its scheduler; or the
            execution mode is unknown or cannot run on the transformer's device.

    Example:
        >>> import torch
        >>> from diffusers import StableDiffusion3Pipeline
        >>> from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
        >>> pipe = StableDiffusion3Pipeline.from_pretrained("stabilityai/stable-diffusion-3-medium-diffusers")
        >>> apply_ras(pipe, RegionAdaptiveSampler(), execution="compile")
        >>> image = pipe("a cat", num_inference_steps=28).images[0]
        >>> remove_ras(pipe)
    """
    from rasfw.adapters.hooks import HOOK_NAME, TransformerHook, attach_hook, refuse_user_compile
    from rasfw.step_caches import followed_step_caches

    sampler = sampler if sampler is not None else RegionAdaptiveSampler()
    if not isinstance(sampler, RegionAdaptiveSampler):
        raise TypeError(f"sampler must be a RegionAdaptiveSampler; got {type(sampler).__name__}")
    transformers, scheduler = _parts(pipe)
    for scope, transformer in transformers.items():
        refuse_user_compile(transformer, f"pipe.{scope} is already compiled (torch.compile(...) or .compile())")
    if hasattr(pipe, _ATTR):
        raise ValueError("RAS is already applied to this pipeline; call remove_ras(pipe) first")
    for transformer in transformers.values():
        registry = hook_registry(transformer)
        if registry is not None and registry.get_hook(HOOK_NAME) is not None:
            raise ValueError("RAS is already applied to this transformer (through another pipeline); remove it there first")
    if len({id(t) for t in transformers.values()}) < len(transformers):
        raise ValueError("the pipeline's transformer and transformer_2 are one module; RAS needs them distinct")
    if getattr(getattr(scheduler, "step", None), "_rasfw", False):
        raise ValueError("RAS is already applied to this scheduler (through another pipeline); remove it there first")
    if sampler.fill.forecasts and len(transformers) > 1:
        raise ValueError(
            f"fill={REGISTRY.name_of('fill', type(sampler.fill))}: forecasting reads one model's outputs, and this "
            "pipeline switches to transformer_2 mid-generation; use fill=reuse (ReuseFill) with it"
        )
    if isinstance(execution, Executor) and len(transformers) > 1:
        raise ValueError("execution: a pipeline with two transformers needs an execution mode by name (one executor each)")
    for transformer in transformers.values():
        followed_step_caches(transformer)  # refuses a step cache RAS cannot follow, before anything changes
    device = _device(transformers["transformer"])
    executors = {scope: build_executor(execution, **options) for scope in transformers}
    for scope, transformer in transformers.items():
        executors[scope].check(_device(transformer))
    adapter_classes = {scope: find_adapter(transformer) for scope, transformer in transformers.items()}
    for cls in adapter_classes.values():
        cls.check_pipeline(pipe)  # a pipeline the adapter cannot sample (Flux Kontext), before anything changes
    adapters = {scope: cls() for scope, cls in adapter_classes.items()}
    backend = resolve_backend(sampler.backend, device)
    state = RegionState(keep_buffers=any(e.keeps_buffers for e in executors.values()))
    state.check_writes = all(e.name == "eager" for e in executors.values())  # graphs run every module they hold
    parts: list[_Part] = []
    try:
        for scope, transformer in transformers.items():
            adapter, executor = adapters[scope], executors[scope]
            adapter.install(transformer, state, backend)
            hook = TransformerHook(sampler, adapter, state, executor, scope)
            try:
                hooked = attach_hook(transformer, hook)
            except BaseException:
                adapter.remove(transformer)
                raise
            hooks_changed(transformer)
            parts.append(_Part(scope, transformer, adapter, executor, hooked, hook))
    except BaseException:  # the second transformer was refused: leave the first as it was
        _detach(parts)
        raise
    attachment = _Attachment(parts, scheduler, sampler, backend, state, {}, owner_ref(pipe))
    _take_scheduler(attachment, scheduler)
    for part in parts:
        part.hook.follow = functools.partial(_before_call, attachment)
    _wrap_end_of_call(pipe, attachment)
    object.__setattr__(pipe, _ATTR, attachment)
    return state


def _take_scheduler(attachment: _Attachment, scheduler: Any) -> None:
    """Wrap `scheduler`'s methods for `attachment` (what it had before is kept for removal)."""
    attachment.scheduler = scheduler
    attachment.scheduler_attrs = {
        name: vars(scheduler).get(name, _MISSING) for name in _SCHEDULER_METHODS if hasattr(scheduler, name)
    }
    part = attachment.parts[0]
    _wrap_scheduler(scheduler, attachment, part.transformer, part.adapter)


def _restore_scheduler(attachment: _Attachment) -> None:
    scheduler = attachment.scheduler
    for name, value in attachment.scheduler_attrs.items():
        if value is _MISSING:
            vars(scheduler).pop(name, None)  # the class method shows through again
        else:
            setattr(scheduler, name, value)


def _before_call(attachment: _Attachment) -> None:
    """Before every transformer call: follow a swapped scheduler; at a generation's first call, refuse a
    guidance scale that is not a finite number (the pipeline would sample NaNs, with or without RAS)."""
    _follow_scheduler(attachment)
    state = attachment.state
    pipe = attachment.owner() if attachment.owner is not None else None
    if pipe is None or state.skips is not None or state.passthrough:
        return
    guidance = vars(pipe).get("_guidance_scale")
    if isinstance(guidance, (int, float)) and not math.isfinite(guidance):
        raise ValueError(f"guidance_scale must be a finite number; got {guidance}")


def _follow_scheduler(attachment: _Attachment) -> None:
    """If the owner's `scheduler` was replaced since `apply_ras`, move the wrappers to the new one and start the
    generation from its timesteps (set before this first call)."""
    pipe = attachment.owner() if attachment.owner is not None else None
    current = vars(pipe).get("scheduler", attachment.scheduler) if pipe is not None else attachment.scheduler
    if current is attachment.scheduler or current is None:
        return
    timesteps = getattr(current, "timesteps", None)
    if not hasattr(current, "step") or not hasattr(current, "set_timesteps") or timesteps is None:
        raise ValueError(
            f"pipe.scheduler was replaced after apply_ras by a {type(current).__name__} without timesteps set; "
            "RAS follows a scheduler whose set_timesteps ran before the transformer's first call"
        )
    _restore_scheduler(attachment)
    _take_scheduler(attachment, current)
    state = attachment.state
    state.passthrough = False
    begin = getattr(current, "begin_index", None) or 0
    attachment.sampler.begin(state, len(timesteps) - int(begin))


def _wrap_end_of_call(pipe: Any, attachment: _Attachment) -> None:
    """diffusers' pipelines call `self.maybe_free_model_hooks()` last in every call, interrupted or not: from
    then on no generation is in progress, and its caches are freed at once."""
    original = getattr(pipe, "maybe_free_model_hooks", None)
    if original is None or attachment.owner is None:
        return
    attachment.pipe_attrs["maybe_free_model_hooks"] = vars(pipe).get("maybe_free_model_hooks", _MISSING)
    state = attachment.state

    @functools.wraps(original)
    def maybe_free_model_hooks(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            if not state.passthrough:
                state.release_caches()
                state.passthrough = True

    maybe_free_model_hooks._rasfw = True
    object.__setattr__(pipe, "maybe_free_model_hooks", maybe_free_model_hooks)


def _wrap_scheduler(scheduler: Any, attachment: _Attachment, transformer: torch.nn.Module, adapter: ModelAdapter) -> None:
    """Instance-level wrappers of the scheduler's `set_timesteps`, `set_begin_index` (where it has one) and
    `step`, each marked `_rasfw` so that `remove_ras` can tell they are still its own."""
    from rasfw.adapters.hooks import skippers

    sampler, state = attachment.sampler, attachment.state
    original_set_timesteps, original_step = scheduler.set_timesteps, scheduler.step

    @functools.wraps(original_set_timesteps)  # pipelines inspect its signature (FluxPipeline: sigmas=)
    def set_timesteps(*args, **kwargs):
        result = original_set_timesteps(*args, **kwargs)
        owner = attachment.owner() if attachment.owner is not None else None
        state.passthrough = calling_pipeline(scheduler, owner) is not None  # a from_pipe sibling's generation
        if state.passthrough:
            state.release_caches()
        else:
            sampler.begin(state, len(scheduler.timesteps))
        return result

    wrappers = {"set_timesteps": set_timesteps}
    if hasattr(scheduler, "set_begin_index"):
        original_set_begin_index = scheduler.set_begin_index

        @functools.wraps(original_set_begin_index)
        def set_begin_index(begin_index: int = 0, *args, **kwargs):
            """img2img (`strength`) and inpainting pipelines start at `begin_index` of the timesteps: the generation
            then has `len(timesteps) - begin_index` steps, and the RAS schedule is planned over those."""
            result = original_set_begin_index(begin_index, *args, **kwargs)
            if not state.passthrough and state.step == 0 and state.skips is None:  # before the first transformer call of the generation
                sampler.begin(state, len(scheduler.timesteps) - int(begin_index))
            return result

        wrappers["set_begin_index"] = set_begin_index

    @functools.wraps(original_step)
    def step(*args, **kwargs):
        if state.passthrough:
            return original_step(*args, **kwargs)
        model_output = args[0] if args else kwargs["model_output"]
        sample = args[2] if len(args) > 2 else kwargs["sample"]
        try:
            state.verify_step()
            sampler.observe(state, model_output, adapter.grid(sample))
        except StaleCacheError as exc:
            state.release_caches()
            raise StaleCacheError(f"{exc}{skippers(transformer, exc.module)}", exc.module) from None
        except BaseException:  # an error or Ctrl-C ends the generation: do not hold its caches
            state.release_caches()
            raise
        try:
            result = original_step(*args, **kwargs)
        except BaseException:
            state.release_caches()
            raise
        state.step = scheduler_step(scheduler, state.step + 1)
        _forget_step_caches(sampler, state)
        if state.step >= state.num_steps:
            state.release_caches()  # the generation is over: do not hold the K/V cache until the next one
        for callback in state.step_callbacks:
            callback(state)
        return result

    wrappers["step"] = step
    for name, wrapper in wrappers.items():
        wrapper._rasfw = True
        setattr(scheduler, name, wrapper)


def scheduler_step(scheduler: Any, counted: int) -> int:
    """The generation's next step, after `scheduler.step` returned: the scheduler's `step_index` less its
    `begin_index`, so that RAS's step is the scheduler's (a pipeline that skips steps, or starts inside the
    timesteps without `set_begin_index`, cannot desynchronise the two); `counted` for a scheduler that keeps no
    step index.

    Args:
        scheduler: the pipeline's scheduler.
        counted: the step counted by calls to `scheduler.step`.
    """
    index = getattr(scheduler, "step_index", None)
    if not isinstance(index, int):
        return counted
    return index - int(getattr(scheduler, "begin_index", None) or 0)


def _forget_step_caches(sampler: RegionAdaptiveSampler, state: RegionState) -> None:
    """Before the next step: the step caches beside RAS forget their state unless it computes the same tokens
    as the step just done and fills no cache (`RegionAdaptiveSampler.same_tokens`; see `rasfw.step_caches`)."""
    if not state.step_caches or state.skips is None or state.step >= state.num_steps:
        return
    if not sampler.same_tokens(state.skips, state.step):
        for module, hook in state.step_caches:
            hook.reset_state(module)


def _check_removable(attachment: _Attachment) -> None:
    """Refuse, before anything is changed, to restore what someone replaced after `apply_ras`."""
    from rasfw.adapters.hooks import check_unwrappable

    for name in attachment.scheduler_attrs:
        current = vars(attachment.scheduler).get(name)
        if not getattr(current, "_rasfw", False):
            raise ValueError(
                f"remove_ras: scheduler.{name} was replaced after apply_ras (now {_describe(current)}); put rasfw's "
                "back or remove that wrapper first; nothing was removed"
            )
    for part in attachment.parts:
        check_unwrappable(part.hooked, part.scope)
        part.adapter.check_removable(part.transformer)


def _describe(value: Any) -> str:
    return "the class's own method" if value is None else getattr(value, "__qualname__", type(value).__name__)


def remove_ras(pipe: Any) -> None:
    """Undo `apply_ras`: the pipeline, its transformer and scheduler are as they were before.

    Raises:
        ValueError: RAS is not applied to this pipeline.
    """
    attachment = getattr(pipe, _ATTR, None)
    if attachment is None:
        raise ValueError("RAS is not applied to this pipeline; nothing to remove")
    _check_removable(attachment)
    _detach(attachment.parts)
    _restore_scheduler(attachment)
    for name, value in attachment.pipe_attrs.items():
        if value is _MISSING:
            vars(pipe).pop(name, None)
        else:
            object.__setattr__(pipe, name, value)
    attachment.state.free()
    object.__delattr__(pipe, _ATTR)


def _detach(parts: list[_Part]) -> None:
    from rasfw.adapters.hooks import detach_hook

    for part in parts:
        detach_hook(part.hooked)
        part.adapter.remove(part.transformer)
        hooks_changed(part.transformer)
        part.executor.release()


def ras_state(pipe: Any) -> RegionState:
    """The `RegionState` of a pipeline with RAS applied."""
    return _attachment(pipe).state


def ras_backend(pipe: Any) -> TokenBackend:
    """The token backend a pipeline with RAS applied runs on (after `backend=auto` is resolved)."""
    return _attachment(pipe).backend


def ras_execution(pipe: Any, transformer: str = "transformer") -> Executor:
    """The executor of a pipeline with RAS applied (its `describe()` gives the mode and the graph count).

    `transformer` names the pipeline attribute ("transformer_2" for Wan 2.2's second model).
    """
    for part in _attachment(pipe).parts:
        if part.scope == transformer:
            return part.executor
    raise ValueError(f"transformer must be one of {', '.join(p.scope for p in _attachment(pipe).parts)}; got {transformer!r}")


def _attachment(pipe: Any) -> _Attachment:
    attachment = getattr(pipe, _ATTR, None)
    if attachment is None:
        raise ValueError("RAS is not applied to this pipeline")
    return attachment


def find_adapter(transformer: torch.nn.Module) -> type[ModelAdapter]:
    """The registered adapter class that supports `transformer`'s class."""
    adapters = REGISTRY.items("adapter")
    for _, cls in adapters:
        if cls.supports(transformer):
            return cls
    supported = ", ".join(getattr(cls, "model_class_name", name) for name, cls in adapters)
    raise TypeError(f"apply_ras does not support transformer {type(transformer).__name__}; supported: {supported}")


def _parts(pipe: Any) -> tuple[dict[str, torch.nn.Module], Any]:
    """The pipeline's transformers by attribute (`transformer` first) and its scheduler."""
    transformers = {name: getattr(pipe, name, None) for name in TRANSFORMERS}
    transformers = {name: t for name, t in transformers.items() if t is not None}
    scheduler = getattr(pipe, "scheduler", None)
    if "transformer" not in transformers or scheduler is None:
        raise TypeError(f"apply_ras needs a pipeline with .transformer and .scheduler; got {type(pipe).__name__}")
    return transformers, scheduler


def _device(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
