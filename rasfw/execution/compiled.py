"""`execution=compile`: the transformer's forward through `torch.compile(fullgraph=True)`."""

from __future__ import annotations

from typing import Any

import torch

from rasfw._compat import compile_backend, compile_backends, inductor_modes, recompile_limit
from rasfw.execution.base import Executor
from rasfw.registry import register


@register("execution", "compile")
class CompiledExecution(Executor):
    """One compiled graph per distinct call shape; no graph breaks (`fullgraph=True`).

    Shapes are static (`dynamic=False`): each shape key (dense, capture, RAS with its active count, per
    batch and resolution) gets its own graph, and a later generation with the same settings reuses them,
    in this attachment or a later one (`remove_ras` then `apply_ras`, as the CLI's timed runs do): the graphs
    live in torch's compile cache for the process, as every `torch.compile`'s do. `graphs` counts the graphs
    dynamo built for this executor, recompiles included (each is handed to the backend once); a graph an
    earlier attachment built is reused and not counted again.

    Args:
        compile_backend: a `torch.compile` backend name ("inductor", "aot_eager", "eager", ...).
        mode: a `torch.compile` mode ("default", "max-autotune-no-cudagraphs", ...) or None.
        recompile_limit: graphs allowed per transformer forward, all attachments in the process together (one per
            distinct call shape and setting); a schedule with many active counts (a linear ramp) needs more than
            torch's default of 8.
    """

    name = "compile"

    def __init__(
        self,
        compile_backend: str = "inductor",
        mode: str | None = None,
        recompile_limit: int = 64,
    ) -> None:
        super().__init__()
        if not isinstance(compile_backend, str) or not compile_backend:
            raise ValueError(f"execution.compile_backend must be a torch.compile backend name; got {compile_backend!r}")
        if mode is not None:
            modes = inductor_modes()
            if mode not in modes:
                raise ValueError(f"execution.mode must be null or one of {', '.join(modes)}; got {mode!r}")
            if compile_backend != "inductor":
                raise ValueError(
                    f"execution.mode applies to the inductor compile backend only; got compile_backend {compile_backend!r}"
                )
        if not isinstance(recompile_limit, int) or recompile_limit < 1:
            raise ValueError(f"execution.recompile_limit must be an integer >= 1; got {recompile_limit!r}")
        self.compile_backend, self.mode, self.recompile_limit = compile_backend, mode, recompile_limit
        self._compiled: Any = None
        self._forward: Any = None

    def check(self, device: torch.device) -> None:
        if self.compile_backend not in compile_backends(all_tags=True):
            known = ", ".join(compile_backends())
            raise ValueError(
                f"execution.compile_backend: unknown torch.compile backend '{self.compile_backend}'; available: {known}"
            )

    def run(self, forward, key, args, kwargs):
        if self._compiled is None or forward is not self._forward:
            self._forward = forward
            self._compiled = torch.compile(forward, fullgraph=True, dynamic=False, backend=self._counting())
        self.keys.add(key)
        with recompile_limit(self.recompile_limit):
            return self._compiled(*args, **kwargs)

    def release(self) -> None:
        self._compiled = self._forward = None

    def describe(self):
        return {**super().describe(), "compile_backend": self.compile_backend, "compile_mode": self.mode}

    def _counting(self) -> _CountingBackend:
        """The chosen backend, wrapped to count the graphs it compiles into `graphs`."""
        return _CountingBackend(self.compile_backend, self.mode, self)


class _CountingBackend:
    """A `torch.compile` backend that compiles with `backend` (and `mode`) and counts every graph it is handed.

    Dynamo calls its backend once per graph it builds, first compile and recompiles alike (`fullgraph=True`:
    one graph per frame), so `executor.graphs` is what dynamo really built for that executor. Two instances
    with the same backend and mode are equal: dynamo reuses a graph only for a backend equal to the one it was
    compiled with, so a later `apply_ras` (a new executor) with the same settings runs the graphs already built
    and counts none.

    Args:
        backend: a `torch.compile` backend name.
        mode: a `torch.compile` mode of the inductor backend, or None.
        executor: the executor whose `graphs` it counts.
    """

    def __init__(self, backend: str, mode: str | None, executor: Executor) -> None:
        self.backend, self.mode, self.executor = backend, mode, executor

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        self.executor.graphs += 1
        return compile_backend(self.backend, self.mode)(graph_module, example_inputs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CountingBackend) and (self.backend, self.mode) == (other.backend, other.mode)

    def __hash__(self) -> int:
        return hash((self.backend, self.mode))
