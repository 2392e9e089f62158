"""A generic adapter for DiTs whose image keys/values come straight from `to_k` / `to_v`.

The adapter is declared by facts about the model class (which submodule embeds patches, which
projects out, which attention modules see image tokens) and attaches at module boundaries only:

* after patch embedding: keep the active tokens (their absolute positions are already added);
* image key/value projections: at a RAS step compute only active rows and write them into the
  per-layer cache, returning the whole cache, so attention sees every token (Eq. 2 of the RAS paper);
  at a dense step the projection output itself becomes the cache (no copy);
* output projection: place active rows into the last full output; the model unpatchifies as usual.

Keys are cached *before* any q/k normalisation, which the unmodified attention processor then applies
to the whole cache; this keeps the fused Triton projection valid for SD3.5's qk-norm.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rasfw.backends.base import TokenBackend
from rasfw.interfaces import ModelAdapter
from rasfw.state import RegionState


class ProjectionCacheAdapter(ModelAdapter):
    """Base class; subclasses fill in the class attributes and `grid`.

    Attributes:
        model_classes: the transformer classes this adapter drives (matched with `isinstance`).
        patch_embed: attribute name of the patch-embedding module (output `(B, N, D)`).
        proj_out: attribute name of the final projection (output `(B, N, F)`).
        attention_classes: attention module classes whose image `to_k`/`to_v` are cached.
    """

    model_classes: ClassVar[tuple[type, ...]] = ()
    patch_embed: ClassVar[str] = "pos_embed"
    proj_out: ClassVar[str] = "proj_out"
    attention_classes: ClassVar[tuple[type, ...]] = ()
    projections: ClassVar[tuple[str, ...]] = ("to_k", "to_v")

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._overridden: list[torch.nn.Module] = []
        self._processors: list[tuple[torch.nn.Module, Any]] = []  # (attention, processor with .detach)

    @classmethod
    def supports(cls, model: Any) -> bool:
        return bool(cls.model_classes) and isinstance(model, cls.model_classes)

    def install(self, model: torch.nn.Module, state: RegionState, backend: TokenBackend) -> None:
        if getattr(model, "fused_projections", False):
            raise ValueError("apply_ras needs unfused q/k/v projections; call transformer.unfuse_qkv_projections()")
        embed, out = getattr(model, self.patch_embed), getattr(model, self.proj_out)
        self._handles.append(embed.register_forward_hook(self._gather_hook(state, backend)))
        self._handles.append(out.register_forward_hook(self._scatter_hook(state, backend)))
        for name, module in model.named_modules():
            if isinstance(module, self.attention_classes):
                for projection in self.projections:
                    self._override(getattr(module, projection), f"{name}.{projection}", state, backend)

    def remove(self, model: torch.nn.Module) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._overridden:
            del module.forward  # the class's forward shows through again
        for attention, processor in self._processors:
            processor.detach(attention)
        self._handles.clear()
        self._overridden.clear()
        self._processors.clear()

    @staticmethod
    def _gather_hook(state: RegionState, backend: TokenBackend):
        def hook(module, args, output):
            index = state.forward.index
            return output if index is None else backend.gather(output, index)  # (Bt, a, D)

        return hook

    @staticmethod
    def _scatter_hook(state: RegionState, backend: TokenBackend):
        def hook(module, args, output):
            plan = state.forward
            if plan.index is None:
                if plan.capture:
                    state.output = output  # (Bt, N, F); no one writes into it before the next step
                return output
            return backend.scatter(state.output, plan.index, output)  # (Bt, N, F)

        return hook

    def _override(self, linear: torch.nn.Module, key: str, state: RegionState, backend: TokenBackend) -> None:
        original = linear.forward
        fusable = type(linear) is torch.nn.Linear

        def forward(x: torch.Tensor) -> torch.Tensor:
            plan = state.forward
            if plan.index is None:
                y = original(x)
                if plan.capture and plan.kv_cache:
                    state.kv[key] = y  # (Bt, N, D) becomes the cache
                return y
            if not plan.kv_cache:
                return original(x)  # (Bt, a, D): inactive tokens drop out of attention
            cache = state.kv[key]
            if fusable:
                return backend.linear_scatter(x, linear.weight, linear.bias, plan.index, cache)
            return backend.scatter(cache, plan.index, original(x))

        linear.forward = forward
        self._overridden.append(linear)


