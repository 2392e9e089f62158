"""The base of the model adapters: declarative facts about a model class, attached with removable hooks.

An adapter is declared by facts about the model class (which submodule embeds patches, which projects
out, which attention modules see image tokens) and attaches at module boundaries only, through diffusers'
named, removable hooks (`HookRegistry` / `ModelHook`, under the name `rasfw`) and attention processors:

* after patch embedding: keep the active tokens (absolute positions are already added);
* attention: a RAS processor per module (`rasfw.adapters._attention`) writes the active keys/values into
  the module's joint key/value buffer and attends the active queries to all of it (Eq. 2 of the RAS paper);
* output projection: write the active rows into the output cache and return a copy of the full grid.

Nothing here holds per-call state: every buffer lives in the `RegionState`, allocated by `prepare` before
the call (outside any compiled or captured graph), and each hook reads the call's `ForwardPlan`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from diffusers.hooks import HookRegistry, ModelHook

from rasfw._compat import diffusers_hook_state
from rasfw.backends.base import TokenBackend
from rasfw.execution.base import Executor, call_key
from rasfw.interfaces import ModelAdapter
from rasfw.state import DEFAULT_CONTEXT, ForwardPlan, RegionState

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


def attach_hook(module: torch.nn.Module, hook: ModelHook) -> Hooked:
    """Register `hook` on `module` under `HOOK_NAME` (diffusers refuses a duplicate name).

    The module's new `forward` is a plain function (`_compile_stable`), so compiled graphs survive a
    `remove_ras` / `apply_ras` cycle.

    Args:
        module: the module to hook.
        hook: the hook; its `pre_forward` / `post_forward` (or `new_forward`) run at every call.
    """
    hooked = Hooked(module, not hasattr(module, "_diffusers_hook"), vars(module).get("forward", _MISSING))
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK_NAME)
    module.forward = _compile_stable(module.forward)
    return hooked


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


def detach_hook(hooked: Hooked) -> None:
    """Remove rasfw's hook; a module that has no other hook left is as it was before `attach_hook`."""
    module = hooked.module
    registry = module._diffusers_hook
    registry.remove_hook(HOOK_NAME, recurse=False)
    if registry.hooks:
        return  # other hooks remain: diffusers has re-linked their chain
    if hooked.forward is _MISSING:
        vars(module).pop("forward", None)  # the class's forward shows through again
    else:
        module.forward = hooked.forward
    if hooked.created_registry:
        del module._diffusers_hook


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

    _is_stateful = True  # so diffusers hands it the cache context of each call

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

    def context_name(self) -> str:
        """The cache context of the call in progress; a second transformer's contexts are its own."""
        name = self.context.name
        return name if self.scope == "transformer" else f"{self.scope}/{name}"

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        state = self.state
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        grid = self.adapter.call_grid(args, kwargs) if state.skips is None else None
        if self.scope not in state.scopes:
            if state.scopes:  # the pipeline switched transformers (Wan 2.2): the other's caches do not fit this one
                self.sampler.switch_model(state, self.scope)
            state.scopes.add(self.scope)
        plan = self.sampler.prepare_forward(state, hidden.shape[0], grid, self.context_name())
        if plan.caches is not None:
            if state.calls.get(plan.context) == state.step:
                raise RuntimeError(
                    f"the transformer was called twice at step {state.step} in cache context '{plan.context}'; "
                    "wrap each call of a step in its own transformer.cache_context(name) (e.g. cond / uncond)"
                )
            state.calls[plan.context] = state.step
            if plan.capture:  # buffers are sized at the dense call that fills them; RAS calls reuse them
                self.adapter.prepare(module, plan, args, kwargs)
            elif plan.caches.output is None:
                raise RuntimeError(
                    f"cache context '{plan.context}' was first called at RAS step {state.step}; its caches are filled "
                    "at the dense step before, so every context must be called at every step"
                )
        return args, kwargs

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        key = call_key(self.state.forward.key, args, kwargs)
        try:
            return self.executor.run(self.fn_ref.original_forward, key, args, kwargs)
        except BaseException:  # an error or Ctrl-C ends the generation: do not hold its caches
            self.state.release_caches()
            raise

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module  # a generation's state is reset by scheduler.set_timesteps


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


class ProjectionCacheAdapter(ModelAdapter):
    """Base class; subclasses fill in the class attributes, `grid` and `make_processor`.

    Attributes:
        model_classes: the transformer classes this adapter drives (matched with `isinstance`).
        patch_embed: attribute name of the patch-embedding module (output `(B, N, D)`).
        proj_out: attribute name of the final projection (output `(B, N, F)`).
        attention_classes: attention module classes that see image tokens.
    """

    model_classes: ClassVar[tuple[type, ...]] = ()
    patch_embed: ClassVar[str] = "pos_embed"
    proj_out: ClassVar[str] = "proj_out"
    attention_classes: ClassVar[tuple[type, ...]] = ()
    processor_classes: ClassVar[tuple[type, ...]] = ()  # the original processors the RAS one understands

    def __init__(self) -> None:
        self._hooked: list[Hooked] = []
        self._processors: list[tuple[torch.nn.Module, Any]] = []  # (attention, RAS processor)
        self._state: RegionState | None = None

    @classmethod
    def supports(cls, model: Any) -> bool:
        return bool(cls.model_classes) and isinstance(model, cls.model_classes)

    # -- install / remove ---------------------------------------------------------------------------

    def install(self, model: torch.nn.Module, state: RegionState, backend: TokenBackend) -> None:
        attentions = self.attentions(model)
        self.check(model, attentions)
        self._state = state
        self.hook(getattr(model, self.patch_embed), self.gather_hook(state, backend))
        self.hook(getattr(model, self.proj_out), ScatterHook(state, backend))
        for name, attention in attentions:
            processor = self.make_processor(attention, name, state, backend)
            attention.set_processor(processor)
            self._processors.append((attention, processor))

    def check_removable(self, model: torch.nn.Module) -> None:
        names = {id(m): name for name, m in model.named_modules()}
        for attention, processor in self._processors:
            if attention.processor is not processor:
                raise ValueError(
                    f"remove_ras: the attention processor of {names.get(id(attention), type(attention).__name__)} was "
                    f"replaced after apply_ras (now {type(attention.processor).__name__}); set rasfw's back or undo "
                    "that change first; nothing was removed"
                )

    def remove(self, model: torch.nn.Module) -> None:
        for attention, processor in self._processors:
            attention.set_processor(processor.original)
        for hooked in self._hooked:
            detach_hook(hooked)
        self._processors.clear()
        self._hooked.clear()
        self._state = None

    def hook(self, module: torch.nn.Module, hook: ModelHook) -> None:
        """Register `hook` on `module` under `HOOK_NAME`; `remove` takes it off again."""
        self._hooked.append(attach_hook(module, hook))

    def attentions(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """`(qualified name, module)` of every attention module whose image keys/values are cached."""
        return [(name, m) for name, m in model.named_modules() if isinstance(m, self.attention_classes)]

    def check(self, model: torch.nn.Module, attentions: list[tuple[str, torch.nn.Module]]) -> None:
        """Refuse layouts the RAS processors cannot run, before anything is changed."""
        for name, attention in attentions:
            if getattr(attention, "fused_projections", False) or getattr(model, "fused_projections", False):
                raise ValueError("apply_ras needs unfused q/k/v projections; call transformer.unfuse_qkv_projections()")
            if self.processor_classes and type(attention.processor) not in self.processor_classes:
                allowed = ", ".join(cls.__name__ for cls in self.processor_classes)
                raise ValueError(
                    f"apply_ras supports {self.model_class_name} attention with {allowed}; "
                    f"{name} uses {type(attention.processor).__name__}"
                )

    # -- per call -----------------------------------------------------------------------------------

    def text_tokens(self, args: tuple, kwargs: dict[str, Any]) -> int:
        """Text (context) tokens the image tokens attend to jointly in this call; 0 for none."""
        context = _argument(args, kwargs, "encoder_hidden_states", 1)
        return 0 if context is None else int(context.shape[1])

    def prepare(self, model: torch.nn.Module, plan: ForwardPlan, args: tuple, kwargs: dict[str, Any]) -> None:
        """Allocate (once per generation shape) the buffers of a call that reads or writes the caches."""
        state = self._state
        if plan.caches is None or state is None:
            return
        hidden = _argument(args, kwargs, "hidden_states", 0)
        rows, tokens = hidden.shape[0], state.num_tokens
        out = getattr(model, self.proj_out)
        weight = _weight(out)
        state.output_cache(plan.caches, (rows, tokens, self.output_width(model)), weight.dtype, weight.device)
        if plan.kv_cache:
            text = self.text_tokens(args, kwargs)
            for _, processor in self._processors:
                processor.allocate(plan.caches, rows, tokens, text)

    def output_width(self, model: torch.nn.Module) -> int:
        """Features per token of the output projection (`F`)."""
        return int(getattr(model, self.proj_out).out_features)

    # -- what subclasses provide ----------------------------------------------------------------------

    def gather_hook(self, state: RegionState, backend: TokenBackend) -> ModelHook:
        return GatherHook(state, backend)

    def make_processor(self, attention: torch.nn.Module, name: str, state: RegionState, backend: TokenBackend) -> Any:
        """The RAS processor for `attention` (its current processor is `attention.processor`)."""
        raise NotImplementedError


def _argument(args: tuple, kwargs: dict[str, Any], name: str, position: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def _weight(module: torch.nn.Module) -> torch.Tensor:
    return next(p for p in module.parameters())
