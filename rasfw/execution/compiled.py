"""`execution=compile`: the transformer's forward through `torch.compile(fullgraph=True)`."""

from __future__ import annotations

from typing import Any

import torch

from rasfw.execution.base import Executor
from rasfw.registry import register


@register("execution", "compile")
class CompiledExecution(Executor):
    """One compiled graph per distinct call shape; no graph breaks (`fullgraph=True`).

    Shapes are static (`dynamic=False`): each shape key (dense, capture, RAS with its active count, per
    batch and resolution) gets its own graph, and a later generation with the same settings reuses them.
    `graphs` counts the graphs the compiler backend was handed; it is counted, not timed.

    Args:
        backend: a `torch.compile` backend name ("inductor", "aot_eager", "eager", ...).
        mode: a `torch.compile` mode ("default", "max-autotune-no-cudagraphs", ...) or None.
        recompile_limit: graphs allowed per transformer (one per distinct call shape); a schedule with many
            active counts (a linear ramp) needs more than torch's default of 8.
    """

    name = "compile"

    def __init__(self, backend: str = "inductor", mode: str | None = None, recompile_limit: int = 64) -> None:
        super().__init__()
        if not isinstance(backend, str) or not backend:
            raise ValueError(f"execution.backend must be a torch.compile backend name; got {backend!r}")
        if mode is not None:
            from torch._inductor import list_mode_options

            modes = list(list_mode_options())
            if mode not in modes:
                raise ValueError(f"execution.mode must be null or one of {', '.join(modes)}; got {mode!r}")
            if backend != "inductor":
                raise ValueError(f"execution.mode applies to the inductor backend only; got backend {backend!r}")
        if not isinstance(recompile_limit, int) or recompile_limit < 1:
            raise ValueError(f"execution.recompile_limit must be an integer >= 1; got {recompile_limit!r}")
        self.backend, self.mode, self.recompile_limit = backend, mode, recompile_limit
        self._compiled: Any = None
        self._forward: Any = None

    def check(self, device: torch.device) -> None:
        from torch._dynamo import list_backends

        if self.backend not in list_backends(exclude_tags=()):
            known = ", ".join(list_backends())
            raise ValueError(f"execution.backend: unknown torch.compile backend '{self.backend}'; available: {known}")

    def run(self, forward, key, args, kwargs):
        if self._compiled is None or forward is not self._forward:
            self._forward = forward
            self._compiled = torch.compile(forward, fullgraph=True, dynamic=False, backend=self._counting())
        self.keys.add(key)
        with torch._dynamo.config.patch(recompile_limit=self.recompile_limit, accumulated_recompile_limit=4 * self.recompile_limit):
            return self._compiled(*args, **kwargs)

    def release(self) -> None:
        self._compiled = self._forward = None

    def describe(self):
        return {**super().describe(), "compile_backend": self.backend, "compile_mode": self.mode}

    def _counting(self):
        """The chosen backend, wrapped to count the graphs it compiles."""
        from torch._dynamo import lookup_backend

        inner = lookup_backend(self.backend)
        mode = self.mode

        def backend(graph_module, example_inputs):
            self.graphs += 1
            if mode is not None and self.backend == "inductor":
                from torch._inductor.compile_fx import compile_fx

                return compile_fx(graph_module, example_inputs, config_patches=torch._inductor.list_mode_options(mode))
            return inner(graph_module, example_inputs)

        return backend
