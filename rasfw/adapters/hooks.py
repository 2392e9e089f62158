"""The diffusers hooks rasfw attaches (`HookRegistry` / `ModelHook`, every one named `rasfw`), and how they are
attached and removed exactly.

* `TransformerHook`, on the transformer: plans each call (`pre_forward`) and runs it through the executor
  (`new_forward`), keyed by the call's shape key;
* `GatherHook`, after patch embedding: at a RAS call keep the active tokens (absolute positions are already added);
* `ScatterHook`, on the output projection: write the active rows into the output cache and return a copy of the
  full grid.

`attach_hook` / `detach_hook` register one and restore the module exactly. A model family's own hooks (rotary
positions, a first block that gathers) live in its adapter module and use the same two functions. Nothing here
holds per-call state: every buffer lives in the `RegionState`, and each hook reads the call's `ForwardPlan`.
`rasfw.attach` (`apply_ras` / `remove_ras`) attaches them through the model's adapter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from rasfw._compat import diffusers_hook_state, drop_hook_registry, hook_order, hook_registry, remove_hook_relinking
from rasfw.backends.base import TokenBackend
from rasfw.execution.base import Executor, call_key
from rasfw.interfaces import ModelAdapter
from rasfw.state import DEFAULT_CONTEXT, ForwardPlan, RegionState, StaleCacheError
from rasfw.step_caches import followed_step_caches

if TYPE_CHECKING:
    from rasfw.sampler import RegionAdaptiveSampler

HOOK_NAME = "rasfw"
"""The name of every hook rasfw registers (diffusers refuses a second hook of the same name)."""


_MISSING = object()
BaseState, StateManager = diffusers_hook_state()


@dataclass
class Hooked:
    """A hook rasfw registered on a module, with what `detach_hook` needs to restore the module exactly."""

    module: torch.nn.Module
    created_registry: bool  # the module had no `HookRegistry` before
    forward: Any  # the module's instance-level `forward` before (`_MISSING`: none, the class's shows)
    installed: Any = None  # the `forward` rasfw set


def attach_hook(module: torch.nn.Module, hook: ModelHook) -> Hooked:
    """Register `hook` on `module` under `HOOK_NAME` (diffusers refuses a duplicate name).

    The module's new `forward` is a plain function (`_compile_stable`), so compiled graphs survive a
    `remove_ras` / `apply_ras` cycle.

    Args:
        module: the module to hook.
        hook: the hook; its `pre_forward` / `post_forward` (or `new_forward`) run at every call.
    """
    hooked = Hooked(module, hook_registry(module) is None, vars(module).get("forward", _MISSING))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK_NAME)
    module.forward = hooked.installed = _compile_stable(module.forward)
    return hooked


def wrapped_after(hooked: Hooked) -> str | None:
    """How `hooked.module.forward` was wrapped since `attach_hook`: None (it is rasfw's, or a diffusers hook
    registered later chains to it), "accelerate" (accelerate's `add_hook_to_module`, e.g. model CPU offloading,
    which keeps rasfw's forward in `_old_forward`), or "replaced" (something rasfw cannot unwrap)."""
    module = hooked.module
    order = hook_order(module)
    if vars(module).get("forward") is hooked.installed or (order and order[-1] != HOOK_NAME):
        return None
    if vars(module).get("_old_forward") is hooked.installed:
        return "accelerate"
    return "replaced"


def _compile_stable(forward: Callable[..., Any]) -> Callable[..., Any]:
    """diffusers' hooked `forward`, a `functools.partial(new_forward, module)`, as an equivalent plain function.

    `torch.compile` guards a module's instance-level `forward` by identity when it is a partial (and drops the
    graphs compiled through it when that partial is freed), but by its code object when it is a function. Each
    `register_hook` builds a new partial, so every re-attachment (the CLI's timed runs attach RAS once per run)
    recompiled every graph; the function's code is the same at every attachment, so its graphs are reused.

    Args:
        forward: the module's `forward` after `HookRegistry.register_hook`.

    Returns:
        A function that calls `forward`'s function with its bound arguments, with its name, docstring and
        `__wrapped__` (signature) as diffusers set them; `forward` itself if it is not a partial.
    """
    if not isinstance(forward, functools.partial):
        return forward
    function, bound, keywords = forward.func, forward.args, forward.keywords

    def hooked_forward(*args: Any, **kwargs: Any) -> Any:
        return function(*bound, *args, **keywords, **kwargs)

    return functools.update_wrapper(hooked_forward, forward)


def check_unwrappable(hooked: Hooked, name: str) -> None:
    """Raise one line (before anything is removed) if `hooked.module.forward` was replaced in a way rasfw
    cannot undo without dropping the other library's wrapper."""
    if wrapped_after(hooked) == "replaced":
        current = vars(hooked.module).get("forward")
        raise ValueError(
            f"remove_ras: {name}.forward was replaced after apply_ras (now {getattr(current, '__qualname__', current)!r}); "
            "undo that change first; nothing was removed"
        )


def detach_hook(hooked: Hooked) -> None:
    """Remove rasfw's hook; a module that has no other hook left is as it was before `attach_hook`."""
    module = hooked.module
    registry = hook_registry(module)
    outer = vars(module).get("forward") if wrapped_after(hooked) == "accelerate" else None
    remove_hook_relinking(registry, HOOK_NAME)
    if outer is not None:  # keep accelerate's wrapper (its hook still runs), around the forward before rasfw's
        module._old_forward = module.forward
        module.forward = outer
        if hooked.created_registry and not registry.hooks:
            drop_hook_registry(module)
        return
    if registry.hooks:
        return  # other hooks remain: diffusers has re-linked their chain
    if hooked.forward is _MISSING:
        vars(module).pop("forward", None)  # the class's forward shows through again
    else:
        module.forward = hooked.forward
    if hooked.created_registry:
        drop_hook_registry(module)


class _NoState(BaseState):
    def reset(self, *args: Any, **kwargs: Any) -> None:
        pass


class _ContextName(StateManager):
    """Receives the pipeline's `transformer.cache_context(name)`; `name` is the context of the call in progress.

    diffusers hands a `CacheContext` (newer releases) or the bare name (older ones) to `set_context`;
    both are read here, so nothing depends on diffusers' private attributes.
    """

    def __init__(self) -> None:
        super().__init__(_NoState)
        self._name: str | None = None

    def set_context(self, context: Any) -> None:
        super().set_context(context)
        self._name = getattr(context, "name", context)

    @property
    def name(self) -> str:
        return self._name if self._name is not None else DEFAULT_CONTEXT


class TransformerHook(ModelHook):
    """Plans every transformer call (`pre_forward`) and runs it through the executor (`new_forward`)."""

    _is_stateful = True  # diffusers' flag (`_compat.is_stateful`): it hands such a hook the cache context of each call

    def __init__(
        self,
        sampler: RegionAdaptiveSampler,
        adapter: ModelAdapter,
        state: RegionState,
        executor: Executor,
        scope: str = "transformer",
    ) -> None:
        super().__init__()
        self.sampler, self.adapter, self.state, self.executor = sampler, adapter, state, executor
        self.scope = scope  # which of the pipeline's transformers this is
        self.context = _ContextName()
        self.follow: Callable[[], None] | None = None  # checks of the pipeline before each call (rasfw.attach)

    def context_name(self, args: tuple = (), kwargs: dict[str, Any] | None = None) -> str:
        """The cache context of the call in progress; a second transformer's contexts are its own, and a call
        variant the adapter names (SD3's skip-layer guidance call) is a context of its own too."""
        name = self.context.name
        variant = self.adapter.call_variant(args, kwargs or {})
        name = f"{name}/{variant}" if variant else name
        return name if self.scope == "transformer" else f"{self.scope}/{name}"

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        state = self.state
        if self.follow is not None:
            self.follow()
        if state.passthrough:  # not this pipeline's generation (a from_pipe sibling), or none in progress
            state.forward = ForwardPlan()
            return args, kwargs
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        grid = None
        if state.skips is None:  # the first call of a generation
            refuse_user_compile(module, "the transformer was compiled in place after apply_ras")
            self.adapter.follow_modules(module)
            grid = self.adapter.call_grid(args, kwargs)
            state.step_caches = followed_step_caches(module)
        if self.scope not in state.scopes:
            if state.scopes:  # the pipeline switched transformers (Wan 2.2): the other's caches do not fit this one
                self.sampler.switch_model(state, self.scope)
            state.scopes.add(self.scope)
        context = state.call_context(self.context_name(args, kwargs))  # a second call of a step: a context of its own
        plan = self.sampler.prepare_forward(state, hidden.shape[0], grid, context)
        if plan.caches is not None:
            if plan.capture:  # buffers are sized at the dense call that fills them; RAS calls reuse them
                self.adapter.prepare(module, plan, args, kwargs)
            elif plan.index is not None:
                args, kwargs = self.adapter.gather_inputs(args, kwargs, plan.index)
        return args, kwargs

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.state.passthrough:
            return self.fn_ref.original_forward(*args, **kwargs)
        key = call_key(self.state.forward.key, args, kwargs)
        try:
            return self.executor.run(self.fn_ref.original_forward, key, args, kwargs)
        except StaleCacheError as exc:
            self.state.release_caches()
            raise StaleCacheError(f"{exc}{skippers(module, exc.module)}", exc.module) from None
        except BaseException:  # an error or Ctrl-C ends the generation: do not hold its caches
            self.state.release_caches()
            raise

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # a generation's state is reset by scheduler.set_timesteps


def refuse_user_compile(module: torch.nn.Module, what: str) -> None:
    """One line, instead of dynamo recompiling at every RAS step and falling back to eager with a warning, for a
    transformer compiled by the user (`module.compile()` in place, or a `torch.compile(...)` wrapper)."""
    compiled = getattr(module, "_compiled_call_impl", None) is not None or hasattr(module, "_orig_mod")
    if compiled:
        raise ValueError(
            f"apply_ras: {what}; RAS compiles the transformer itself, one graph per call shape: give it the "
            "uncompiled module and pass execution=\"compile\" (python -m rasfw execution=compile)"
        )


def skippers(root: torch.nn.Module, name: str) -> str:
    """`; hooks on its path: ...`: the other libraries' hooks between `root` and its submodule `name`, which
    may have skipped it (diffusers hooks by name, accelerate's by class)."""
    parts = name.split(".") if name else []
    found = []
    for depth in range(len(parts) + 1):
        path = ".".join(parts[:depth])
        try:
            module = root.get_submodule(path)
        except AttributeError:
            break
        hooks = [h for h in getattr(hook_registry(module), "hooks", {}) if h != HOOK_NAME]
        if getattr(module, "_hf_hook", None) is not None:
            hooks.append(type(module._hf_hook).__name__)
        if hooks:
            found.append(f"{path or 'transformer'}: {', '.join(hooks)}")
    if not found:
        return "; no other hook is on its path (a replaced forward?)"
    return f"; hooks on its path: {'; '.join(found)}"


class GatherHook(ModelHook):
    """After patch embedding: at a RAS call keep the active tokens `(Bt, a, D)` of `(Bt, N, D)`."""

    def __init__(self, state: RegionState, backend: TokenBackend) -> None:
        super().__init__()
        self.state, self.backend = state, backend

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        index = self.state.forward.index
        return output if index is None else self.backend.gather(output, index)


class ScatterHook(ModelHook):
    """After the output projection: keep the output cache and return the full token grid.

    At a capture call the output `(Bt, N, F)` is copied into the cache; at a RAS call the active rows are
    written into it. The call returns a copy, so no later step overwrites a result the pipeline holds.
    With a forecasting fill (`state.fill.order > 0`) the inactive rows of that copy are the fill's
    forecast from each token's history instead of its last output, and every computed row also shifts
    the token's history (`CallCaches.record`).
    """

    def __init__(self, state: RegionState, backend: TokenBackend) -> None:
        super().__init__()
        self.state, self.backend = state, backend

    def post_forward(self, module: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
        state, plan = self.state, self.state.forward
        caches = plan.caches
        if caches is None:
            return output
        if state.check_writes:
            caches.output_at = state.step
        if caches.computed_at is None:  # reuse: the last computed output stands in for inactive tokens
            if plan.index is None:
                caches.output.copy_(output)  # (Bt, N, F)
                return output
            return self.backend.scatter(caches.output, plan.index, output).clone()  # (Bt, N, F)
        if plan.index is None:
            caches.record(state.clock, None, output, self.backend)
            return output
        full = state.fill.forecast(caches.outputs(), caches.computed_at, state.clock)  # (Bt, N, F), read first
        caches.record(state.clock, plan.index, output, self.backend)
        return self.backend.scatter(full, plan.index, output)  # (Bt, N, F), a new tensor
