"""Step caches from diffusers (`cache=first_block`, `cache=taylorseer`, ...): the peers RAS is measured against.

RAS saves work across space (which tokens a step recomputes); a step cache saves work across time (which
steps, or which blocks at a step, reuse an earlier result). Each option here is one of diffusers' own
caching hooks, applied through the transformer's `enable_cache` (diffusers' `CacheMixin`) with diffusers'
config class and its parameter names, and removed with `disable_cache`. Nothing here reimplements a cache.
A pipeline must open `transformer.cache_context(name)` around each transformer call, as diffusers' own
pipelines do (the embedded pipeline does).

**Beside RAS.** Both diffusers caches keep state per token position: First Block Cache compares the first
block's residual with the one of the step before, TaylorSeer extrapolates each block's output from earlier
steps. That state is valid only while a step computes the same tokens, in the same order, as the step
before. RAS computes a new token set at every RAS step, and its capture steps (the dense step before a RAS
step) must run every block, since they fill the key/value caches. `apply_ras` therefore finds these hooks on
the transformer at the start of every generation, whoever attached them (`cache=` here, or diffusers'
`transformer.enable_cache(...)`), and makes them forget their state before any step that is not a dense,
non-capture step following a dense step (`RegionAdaptiveSampler.same_tokens`): the cache then acts on runs
of dense steps (the warm-up before the capture step) and every other step runs all its blocks. Other
stateful diffusers hooks are refused before the first step (`followed_step_caches`). The image is never built from another token's cached
state; how much the pair saves over RAS alone is measured in `docs/experiments.md`.
"""

from __future__ import annotations

from typing import Any

import torch

from rasfw._compat import hook_registry, hooks_changed, is_stateful
from rasfw.checks import integer, number
from rasfw.registry import register


class StepCache:
    """A diffusers caching technique, or none. Subclasses name diffusers' config class, its `apply_*`
    function and the parameters, as diffusers names them.

    One object drives one transformer at a time: `apply` records the hooks diffusers added, `remove`
    takes exactly those off again.
    """

    name: str = ""
    config_class: str = ""  # in diffusers.hooks, e.g. "FirstBlockCacheConfig"
    apply_function: str = ""  # in diffusers.hooks, e.g. "apply_first_block_cache"

    def __init__(self) -> None:
        self._added: list[tuple[str, str]] = []

    def params(self) -> dict[str, Any]:
        """The parameters, as diffusers names them (they are also what `summary.json` records)."""
        return {}

    def apply(self, transformer: torch.nn.Module) -> None:
        """Attach the cache to `transformer` through diffusers' `apply_*` function (nothing for `none`)."""
        if not self.config_class:
            return
        if self._added:
            raise ValueError(f"cache={self.name} is already applied; remove it first")
        config_cls, apply = _diffusers_api(self.name, self.config_class, self.apply_function)
        before = _hook_names(transformer)
        apply(self._target(transformer), config_cls(**self._config_kwargs()))
        self._added = sorted(_hook_names(transformer) - before)
        hooks_changed(transformer)

    def remove(self, transformer: torch.nn.Module) -> None:
        """Take off the hooks `apply` added; the transformer is as it was before."""
        for module_name, hook_name in self._added:
            hook_registry(transformer.get_submodule(module_name)).remove_hook(hook_name, recurse=False)
        self._added = []
        hooks_changed(transformer)

    def reset(self, transformer: torch.nn.Module) -> None:
        """Forget what the cache's hooks hold (what diffusers' pipelines do after each call)."""
        for module_name, hook_name in self._added:
            module = transformer.get_submodule(module_name)
            hook = hook_registry(module).get_hook(hook_name)
            if is_stateful(hook):
                hook.reset_state(module)

    def _target(self, transformer: torch.nn.Module) -> torch.nn.Module:
        """The module diffusers' `apply_*` function is given (the transformer itself by default)."""
        return transformer

    def _config_kwargs(self) -> dict[str, Any]:
        return self.params()


FOLLOWED_HOOKS = ("FBCHeadBlockHook", "TaylorSeerCacheHook")
"""diffusers' stateful step-cache hooks RAS follows: reset (diffusers' `reset_state`) whenever the next step
computes other tokens than the last, so each only ever compares or extrapolates one token set."""


def followed_step_caches(transformer: torch.nn.Module) -> list[tuple[torch.nn.Module, Any]]:
    """`(module, hook)` of every step-cache hook on `transformer` that RAS follows (`FOLLOWED_HOOKS`).

    Raises:
        ValueError: another stateful diffusers hook is on the transformer (FasterCache, MagCache, Pyramid
            Attention Broadcast, ...): its state is per token position and RAS cannot follow it.
    """
    followed = []
    for name, module in transformer.named_modules():
        for hook_name, hook in getattr(hook_registry(module), "hooks", {}).items():
            if hook_name == "rasfw" or not is_stateful(hook):
                continue
            if type(hook).__name__ not in FOLLOWED_HOOKS:
                raise ValueError(
                    f"apply_ras: {name or 'the transformer'} carries the stateful hook '{hook_name}' "
                    f"({type(hook).__name__}), which keeps per-token state RAS cannot follow; remove it "
                    "(transformer.disable_cache()) or use First Block Cache or TaylorSeer"
                )
            followed.append((module, hook))
    return followed


def _hook_names(model: torch.nn.Module) -> set[tuple[str, str]]:
    """`(module name, hook name)` of every diffusers hook under `model`."""
    found = set()
    for name, module in model.named_modules():
        found.update((name, hook) for hook in getattr(hook_registry(module), "hooks", {}))
    return found


def _diffusers_api(name: str, config_class: str, apply_function: str) -> tuple[type, Any]:
    """`diffusers.hooks.<config_class>` and `.<apply_function>`, or one line naming the installed release."""
    import diffusers
    import diffusers.hooks

    found = getattr(diffusers.hooks, config_class, None), getattr(diffusers.hooks, apply_function, None)
    if None in found:
        raise ValueError(
            f"cache={name}: the installed diffusers {diffusers.__version__} has no {config_class}/{apply_function}; "
            "upgrade diffusers or pick another cache (none, first_block, taylorseer)"
        )
    return found


@register("cache", "none")
class NoCache(StepCache):
    """No step cache: every step runs the blocks it is given."""

    name = "none"


@register("cache", "first_block")
class FirstBlockCache(StepCache):
    """diffusers' First Block Cache: when the first block's residual changes by less than `threshold`
    (relative L1) since the last computed step, the remaining blocks reuse their cached residual.

    Args:
        threshold: diffusers' `FirstBlockCacheConfig.threshold`.
    """

    name = "first_block"
    config_class = "FirstBlockCacheConfig"
    apply_function = "apply_first_block_cache"

    def __init__(self, threshold: float = 0.05) -> None:
        super().__init__()
        self.threshold = number("cache.threshold", threshold, "(0, inf)", lambda v: v > 0)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def _target(self, transformer: torch.nn.Module) -> torch.nn.Module:
        """SD3's last block is `context_pre_only`: it returns no text states, which diffusers' tail-block
        hook subtracts from. The cache then spans the blocks before it, and the last block always runs."""
        blocks = getattr(transformer, "transformer_blocks", None)
        if blocks is None or not getattr(blocks[-1], "context_pre_only", False):
            return transformer
        if len(blocks) < 3:
            raise ValueError(f"cache=first_block needs at least 3 transformer blocks (2 before the last); this model has {len(blocks)}")
        view = torch.nn.Module()
        view.transformer_blocks = torch.nn.ModuleList(list(blocks)[:-1])  # the same block objects, not copies
        return view


@register("cache", "taylorseer")
class TaylorSeerCache(StepCache):
    """diffusers' TaylorSeer cache: attention outputs are computed every `cache_interval` steps and
    predicted in between by a Taylor expansion of order `max_order` (arXiv 2503.06923).

    Args:
        cache_interval: steps between full computations.
        disable_cache_before_step: steps computed fully at the start (to fit the Taylor factors).
        disable_cache_after_step: from this step on, everything is computed (None: never).
        max_order: order of the Taylor expansion.
        use_lite_mode: diffusers' lighter variant (predefined skip/cache patterns).
    """

    name = "taylorseer"
    config_class = "TaylorSeerCacheConfig"
    apply_function = "apply_taylorseer_cache"

    def __init__(
        self,
        cache_interval: int = 5,
        disable_cache_before_step: int = 3,
        disable_cache_after_step: int | None = None,
        max_order: int = 1,
        use_lite_mode: bool = False,
    ) -> None:
        super().__init__()
        self.cache_interval = integer("cache.cache_interval", cache_interval, "[1, inf)", lambda v: v >= 1)
        self.disable_cache_before_step = integer(
            "cache.disable_cache_before_step", disable_cache_before_step, "[0, inf)", lambda v: v >= 0
        )
        if disable_cache_after_step is not None:
            integer("cache.disable_cache_after_step", disable_cache_after_step, "[0, inf) or null", lambda v: v >= 0)
        self.disable_cache_after_step = disable_cache_after_step
        self.max_order = integer("cache.max_order", max_order, "[0, inf)", lambda v: v >= 0)
        if not isinstance(use_lite_mode, bool):
            raise ValueError(f"cache.use_lite_mode must be true or false; got {use_lite_mode!r}")
        self.use_lite_mode = use_lite_mode

    def params(self) -> dict[str, Any]:
        return {
            "cache_interval": self.cache_interval,
            "disable_cache_before_step": self.disable_cache_before_step,
            "disable_cache_after_step": self.disable_cache_after_step,
            "max_order": self.max_order,
            "use_lite_mode": self.use_lite_mode,
        }

    def _config_kwargs(self) -> dict[str, Any]:
        return {**self.params(), "taylor_factors_dtype": torch.float32}  # the factors in full precision on a CPU
