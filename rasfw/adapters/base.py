"""The base of the model adapters: declarative facts about a model class, attached with removable hooks.

An adapter is declared by facts about the model class (which submodule embeds patches, which projects
out, which attention modules see image tokens) and attaches at module boundaries only, through diffusers'
named, removable hooks (`rasfw.adapters.hooks`) and attention processors:

* after patch embedding: keep the active tokens (absolute positions are already added);
* attention: a RAS processor per module (`rasfw.adapters._attention`) writes the active keys/values into
  the module's joint key/value buffer and attends the active queries to all of it (Eq. 2 of the RAS paper);
* output projection: write the active rows into the output cache and return a copy of the full grid.

Nothing here holds per-call state: every buffer lives in the `RegionState`, allocated by `prepare` before
the call (outside any compiled or captured graph), and each hook reads the call's `ForwardPlan`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers.hooks import ModelHook

from rasfw._compat import hook_order
from rasfw.adapters._attention import compute_dtype
from rasfw.adapters.hooks import HOOK_NAME, GatherHook, Hooked, ScatterHook, attach_hook, check_unwrappable, detach_hook
from rasfw.backends.base import TokenBackend
from rasfw.interfaces import ModelAdapter
from rasfw.state import ForwardPlan, RegionState


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
    token_inputs: ClassVar[tuple[str, ...]] = ()  # keyword arguments: lists of (Bt, N, D) per-token residuals

    def __init__(self) -> None:
        self._hooked: list[Hooked] = []
        self._boundaries: dict[str, tuple[ModelHook, Hooked]] = {}  # attribute -> (hook, registration)
        self._processors: list[tuple[torch.nn.Module, Any]] = []  # (attention, RAS processor)
        self._state: RegionState | None = None
        self._backend: TokenBackend | None = None

    @classmethod
    def supports(cls, model: Any) -> bool:
        return bool(cls.model_classes) and isinstance(model, cls.model_classes)

    # -- install / remove ---------------------------------------------------------------------------

    def install(self, model: torch.nn.Module, state: RegionState, backend: TokenBackend) -> None:
        attentions = self.attentions(model)
        self.check(model, attentions)
        self._state, self._backend = state, backend
        self.hook(getattr(model, self.patch_embed), self.gather_hook(state, backend), self.patch_embed)
        self.hook(getattr(model, self.proj_out), ScatterHook(state, backend), self.proj_out)
        for name, attention in attentions:
            processor = self.make_processor(attention, name, state, backend)
            attention.set_processor(processor)
            self._processors.append((attention, processor))

    def check_removable(self, model: torch.nn.Module) -> None:
        names = {id(m): name for name, m in model.named_modules()}
        for hooked in self._hooked:
            check_unwrappable(hooked, names.get(id(hooked.module), type(hooked.module).__name__))

    def remove(self, model: torch.nn.Module) -> None:
        for attention, processor in self._processors:
            if attention.processor is processor:  # one set since apply_ras (set_attn_processor) stays
                attention.set_processor(processor.original)
        for hooked in self._hooked:
            detach_hook(hooked)
        self._processors.clear()
        self._hooked.clear()
        self._boundaries.clear()
        self._state = self._backend = None

    def hook(self, module: torch.nn.Module, hook: ModelHook, attribute: str | None = None) -> None:
        """Register `hook` on `module` under `HOOK_NAME`; `remove` takes it off again.

        With `attribute` (the module's name in the model), `follow_modules` moves the hook to whatever module
        that attribute holds later (a LoRA layer wrapping it, or the original back after unloading).
        """
        hooked = attach_hook(module, hook)
        self._hooked.append(hooked)
        if attribute is not None:
            self._boundaries[attribute] = (hook, hooked)

    def follow_modules(self, model: torch.nn.Module) -> None:
        """Before a generation: a boundary module replaced since `install` (peft wraps `proj_out` or `x_embedder`
        in a LoRA layer that adds its own low-rank path to the base layer's output; `unload_lora` puts the base
        layer back) gets the hook, and the module it left is restored. A hook registered on a boundary module
        after rasfw's (First Block Cache's head-block hook on Wan's first block) is moved inside it: rasfw's
        hook is re-registered last, so others see the tokens the call computes. Attention processors replaced
        since are followed too (`follow_processors`)."""
        self.follow_processors()
        for attribute, (hook, hooked) in list(self._boundaries.items()):
            current = model.get_submodule(attribute)
            order = hook_order(current)
            if current is hooked.module and order[-1:] == [HOOK_NAME]:
                continue
            detach_hook(hooked)
            self._hooked.remove(hooked)
            moved = attach_hook(current, hook)
            moved.created_registry = hooked.created_registry and current is hooked.module
            self._hooked.append(moved)
            self._boundaries[attribute] = (hook, moved)

    def follow_processors(self) -> None:
        """Before a generation: an attention processor set since `install` (`set_attn_processor`,
        `set_default_attn_processor`) of a class the RAS processor runs is wrapped in a new RAS processor; any
        other is refused in one line, before any step (RAS calls would hand it the active tokens only)."""
        for i, (attention, processor) in enumerate(self._processors):
            current = attention.processor
            if current is processor:
                continue
            if not self.processor_classes or type(current) not in self.processor_classes:
                allowed = ", ".join(cls.__name__ for cls in self.processor_classes) or "rasfw's own"
                raise ValueError(
                    f"apply_ras: the attention processor of {processor.name} was replaced after apply_ras by "
                    f"{type(current).__name__}, which RAS cannot run ({self.model_class_name}: {allowed}); set one of "
                    "those, or remove_ras(pipe) and sample without RAS"
                )
            replacement = self.make_processor(attention, processor.name, self._state, self._backend)
            attention.set_processor(replacement)
            self._processors[i] = (attention, replacement)

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
        state.output_cache(plan.caches, (rows, tokens, self.output_width(model)), compute_dtype(out), weight.device)
        if plan.kv_cache:
            text = self.text_tokens(args, kwargs)
            for _, processor in self._processors:
                processor.allocate(plan.caches, rows, tokens, text)

    def gather_inputs(self, args: tuple, kwargs: dict[str, Any], index: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
        """At a RAS call, each `(Bt, N, D)` residual listed in `token_inputs` (ControlNet's per-block residuals,
        added to the image tokens after a block) kept at the active tokens `(Bt, a, D)`."""
        names = [name for name in self.token_inputs if kwargs.get(name) is not None]
        if not names:
            return args, kwargs
        n = self._state.num_tokens
        kwargs = dict(kwargs)
        for name in names:
            residuals = list(kwargs[name])
            for r in residuals:
                if r.ndim != 3 or r.shape[1] != n or r.shape[0] != index.shape[0]:
                    raise ValueError(
                        f"{name}: RAS needs (batch {index.shape[0]}, {n} image tokens, width) residuals; got "
                        f"{tuple(r.shape)}"
                    )
            kwargs[name] = [self._backend.gather(r, index) for r in residuals]  # (Bt, a, D) each
        return args, kwargs

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
