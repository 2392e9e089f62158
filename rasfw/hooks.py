"""`apply_ras` / `remove_ras`: attach a sampler to a pipeline's transformer and scheduler."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from rasfw.backends.base import TokenBackend, resolve_backend
from rasfw.interfaces import ModelAdapter
from rasfw.registry import REGISTRY
from rasfw.sampler import RegionAdaptiveSampler
from rasfw.state import RegionState

_ATTR = "_rasfw_attachment"


@dataclass
class _Attachment:
    sampler: RegionAdaptiveSampler
    adapter: ModelAdapter
    backend: TokenBackend
    state: RegionState
    handle: torch.utils.hooks.RemovableHandle


def apply_ras(pipe: Any, sampler: RegionAdaptiveSampler | None = None) -> RegionState:
    """Make `pipe` sample with Region-Adaptive Sampling; `pipe(...)` is then called as usual.

    Works on any object with `.transformer` (a supported DiT) and `.scheduler` (a diffusers-style
    scheduler with `set_timesteps` and `step`), such as diffusers' `StableDiffusion3Pipeline`.

    Args:
        pipe: the pipeline to modify in place.
        sampler: the RAS settings; the reference defaults when omitted.

    Returns:
        The pipeline's `RegionState` (read it after a call for per-step statistics).

    Raises:
        TypeError: the pipeline has no transformer/scheduler or its transformer is not supported.
        ValueError: RAS is already applied to this pipeline.

    Example:
        >>> import torch
        >>> from diffusers import StableDiffusion3Pipeline
        >>> from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
        >>> pipe = StableDiffusion3Pipeline.from_pretrained("stabilityai/stable-diffusion-3-medium-diffusers")
        >>> apply_ras(pipe, RegionAdaptiveSampler())
        >>> image = pipe("a cat", num_inference_steps=28).images[0]
        >>> remove_ras(pipe)
    """
    sampler = sampler if sampler is not None else RegionAdaptiveSampler()
    if not isinstance(sampler, RegionAdaptiveSampler):
        raise TypeError(f"sampler must be a RegionAdaptiveSampler; got {type(sampler).__name__}")
    transformer, scheduler = _parts(pipe)
    if hasattr(pipe, _ATTR):
        raise ValueError("RAS is already applied to this pipeline; call remove_ras(pipe) first")
    adapter = find_adapter(transformer)()
    backend = resolve_backend(sampler.backend, _device(transformer))
    state = RegionState()
    adapter.install(transformer, state, backend)

    def before_forward(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        sampler.prepare_forward(state, hidden.shape[0], adapter.grid(hidden))

    handle = transformer.register_forward_pre_hook(before_forward, with_kwargs=True)
    original_set_timesteps, original_step = scheduler.set_timesteps, scheduler.step

    @functools.wraps(original_set_timesteps)  # pipelines inspect its signature (FluxPipeline: sigmas=)
    def set_timesteps(*args, **kwargs):
        result = original_set_timesteps(*args, **kwargs)
        sampler.begin(state, len(scheduler.timesteps))
        return result

    @functools.wraps(original_step)
    def step(*args, **kwargs):
        model_output = args[0] if args else kwargs["model_output"]
        sample = args[2] if len(args) > 2 else kwargs["sample"]
        sampler.observe(state, model_output, adapter.grid(sample))
        state.step += 1
        if state.step >= state.num_steps:
            state.release_caches()  # the generation is over: do not hold the K/V cache until the next one
        return original_step(*args, **kwargs)

    scheduler.set_timesteps, scheduler.step = set_timesteps, step
    object.__setattr__(pipe, _ATTR, _Attachment(sampler, adapter, backend, state, handle))
    return state


def remove_ras(pipe: Any) -> None:
    """Undo `apply_ras`: the pipeline, its transformer and scheduler are as they were before.

    Raises:
        ValueError: RAS is not applied to this pipeline.
    """
    attachment = getattr(pipe, _ATTR, None)
    if attachment is None:
        raise ValueError("RAS is not applied to this pipeline; nothing to remove")
    transformer, scheduler = _parts(pipe)
    attachment.handle.remove()
    attachment.adapter.remove(transformer)
    del scheduler.set_timesteps, scheduler.step  # the class methods show through again
    object.__delattr__(pipe, _ATTR)


def ras_state(pipe: Any) -> RegionState:
    """The `RegionState` of a pipeline with RAS applied."""
    return _attachment(pipe).state


def ras_backend(pipe: Any) -> TokenBackend:
    """The token backend a pipeline with RAS applied runs on (after `backend=auto` is resolved)."""
    return _attachment(pipe).backend


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


def _parts(pipe: Any) -> tuple[torch.nn.Module, Any]:
    transformer = getattr(pipe, "transformer", None)
    scheduler = getattr(pipe, "scheduler", None)
    if transformer is None or scheduler is None:
        raise TypeError(f"apply_ras needs a pipeline with .transformer and .scheduler; got {type(pipe).__name__}")
    return transformer, scheduler


def _device(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
