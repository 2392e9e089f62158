"""Shared machinery of the RAS attention processors that cache rotated keys (Lumina-Next, Flux).

A `CachingProcessor` replaces one attention module's processor while RAS is applied. At a dense call it
delegates to the original processor, so the call is the unmodified model's, and records the key and
value projections on the way (forward hooks on the modules that produce them); the subclass rotates
the recorded keys into the cache. At a RAS call the subclass computes the attention itself, for the
active queries against the whole cache. `detach` restores the original processor object.
"""

from __future__ import annotations

from typing import Any

import torch

from rasfw.backends.base import TokenBackend
from rasfw.state import RegionState


class CachingProcessor:
    """Base class: owns the original processor, the capture hooks and the cache names of one module.

    Args:
        original: the attention module's processor before RAS.
        name: the attention module's qualified name; its caches are `state.kv[name + ".k" / ".v"]`.
        state: the run state the cache lives in.
        backend: token operations.
    """

    def __init__(self, original: Any, name: str, state: RegionState, backend: TokenBackend) -> None:
        self.original = original
        self.key_name, self.value_name = f"{name}.k", f"{name}.v"
        self.state = state
        self.backend = backend
        self._capturing = False
        self._captured: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self, attn: torch.nn.Module, key_module: torch.nn.Module, value_module: torch.nn.Module) -> None:
        """Install on `attn`; `key_module` / `value_module` produce the keys / values to record."""
        for slot, module in (("k", key_module), ("v", value_module)):
            self._handles.append(module.register_forward_hook(self._recorder(slot)))
        attn.set_processor(self)

    def detach(self, attn: torch.nn.Module) -> None:
        """Remove the hooks and put the original processor back."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        attn.set_processor(self.original)

    def delegate(self, *args: Any) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
        """Run the original processor; return its output and, at a capture call, the recorded k and v."""
        plan = self.state.forward
        self._capturing = plan.capture and plan.kv_cache
        try:
            out = self.original(*args)
        finally:
            self._capturing = False
        captured, self._captured = self._captured, {}
        return out, captured.get("k"), captured.get("v")

    def _recorder(self, slot: str):
        def hook(module, args, output):
            if self._capturing:
                self._captured[slot] = output

        return hook
