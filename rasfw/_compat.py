"""Every private API of another library rasfw uses, in one place.

Each function here wraps one non-public name of Hydra, diffusers or torch, so that a release that moves it
breaks one small function (and its test) rather than code spread over the package. Nothing here holds state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

# -- Hydra --------------------------------------------------------------------------------------------


def hydra_args_parser() -> Any:
    """Hydra's own command-line parser (`hydra._internal.utils.get_args_parser`): splits overrides from flags."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def hydra_overrides_parser(config_module: str) -> Any:
    """Hydra's override parser with a config loader over `pkg://<config_module>`, so sweeps over groups
    (`glob(*)`) list their options as Hydra's sweeper does (`hydra._internal.config_loader_impl`)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(f"pkg://{config_module}"))
    return OverridesParser.create(config_loader=loader)


# -- diffusers ----------------------------------------------------------------------------------------


def diffusers_hook_state() -> tuple[type, type]:
    """`(BaseState, StateManager)` of `diffusers.hooks.hooks`: how a stateful hook receives the cache context."""
    from diffusers.hooks.hooks import BaseState, StateManager

    return BaseState, StateManager


def hook_registry(module: Any) -> Any:
    """The diffusers `HookRegistry` on `module` (its private `_diffusers_hook` attribute), or None where it has none."""
    return getattr(module, "_diffusers_hook", None)


def hook_order(module: Any) -> list[str]:
    """The names of the diffusers hooks on `module`, outermost last (the registry's private `_hook_order`)."""
    return list(getattr(hook_registry(module), "_hook_order", []))


def drop_hook_registry(module: Any) -> None:
    """Delete the (empty) diffusers `HookRegistry` of `module`, so it is as before any hook was registered."""
    vars(module).pop("_diffusers_hook", None)


def is_stateful(hook: Any) -> bool:
    """Whether a diffusers hook keeps state across calls (its private `_is_stateful` flag; diffusers resets such
    hooks after each call and hands them the cache context)."""
    return bool(getattr(hook, "_is_stateful", False))


def hooks_changed(module: Any) -> None:
    """Hooks were added or removed below `module`: diffusers' `cache_context` must find them anew (newer releases
    cache which submodules carry hooks, `invalidate_child_registries_cache`; older ones do not)."""
    invalidate = getattr(hook_registry(module), "invalidate_child_registries_cache", None)
    if invalidate is not None:
        invalidate()


def reset_stateful_hooks(model: Any) -> None:
    """Reset every stateful diffusers hook of `model`, as diffusers' pipelines do after each call (the private
    `CacheMixin._reset_stateful_cache`); nothing for a model without it."""
    reset = getattr(model, "_reset_stateful_cache", None)
    if reset is not None:
        reset()


def remove_hook_relinking(registry: Any, name: str) -> None:
    """`registry.remove_hook(name)`, keeping the hook registered after it working.

    diffusers re-links the next hook by pointing its `forward` at the forward before the removed one; for a hook
    with its own `new_forward` (First Block Cache's head-block hook) that `forward` is the hook's own entry, and its
    `original_forward` still calls the removed hook: the next hook would silently stop running. Here its entry
    stays and its `original_forward` gets the forward before the removed hook's (the registry's private
    `_hook_order` and `_fn_refs`).
    """
    order = registry._hook_order
    index = order.index(name)
    following = registry._fn_refs[index + 1] if index + 1 < len(order) else None
    entry = following.forward if following is not None else None
    registry.remove_hook(name, recurse=False)
    if following is not None and following.original_forward is not None:
        following.original_forward, following.forward = following.forward, entry


def layerwise_compute_dtype(module: Any) -> Any:
    """The compute dtype of diffusers' layerwise casting on `module` (`enable_layerwise_casting` stores its weights
    in a low-precision dtype and casts them per forward, through a `LayerwiseCastingHook` in the module's private
    `_diffusers_hook` registry), or None where the module has none."""
    from diffusers.hooks.layerwise_casting import LayerwiseCastingHook

    hooks = getattr(hook_registry(module), "hooks", {})
    return next((h.compute_dtype for h in hooks.values() if isinstance(h, LayerwiseCastingHook)), None)


# -- torch.compile ------------------------------------------------------------------------------------


def inductor_modes() -> list[str]:
    """The `torch.compile` modes of the inductor backend (`torch._inductor.list_mode_options`)."""
    from torch._inductor import list_mode_options

    return list(list_mode_options())


def compile_backends(all_tags: bool = False) -> list[str]:
    """Registered `torch.compile` backend names (`torch._dynamo.list_backends`); `all_tags`: debug ones too."""
    from torch._dynamo import list_backends

    return list(list_backends(exclude_tags=())) if all_tags else list(list_backends())


def compile_backend(name: str, mode: str | None) -> Callable[[Any, list[Any]], Any]:
    """The compiler function of backend `name` (with an inductor `mode`, inductor's `compile_fx` with that
    mode's options), as dynamo calls it: `(graph_module, example_inputs) -> callable`."""
    if mode is not None:
        import torch._inductor
        from torch._inductor.compile_fx import compile_fx

        options = torch._inductor.list_mode_options(mode)
        return lambda graph, inputs: compile_fx(graph, inputs, config_patches=options)
    from torch._dynamo import lookup_backend

    return lookup_backend(name)


@contextlib.contextmanager
def recompile_limit(limit: int) -> Iterator[None]:
    """Dynamo's recompile limits for the calls inside (`torch._dynamo.config.patch`): `limit` graphs per frame."""
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=limit, accumulated_recompile_limit=4 * limit):
        yield
