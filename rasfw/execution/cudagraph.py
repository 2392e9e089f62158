"""`execution=cudagraph`: one captured CUDA graph per call shape, replayed at every step (CUDA only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from rasfw.execution.base import Executor
from rasfw.registry import register


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: list[torch.Tensor | Any]  # static copies of the tensor arguments (other leaves as given)
    output: Any  # the static output the graph writes


@register("execution", "cudagraph")
class CUDAGraphExecution(Executor):
    """Captures each distinct call shape once and replays it; the host launches one graph per call.

    The first call of a shape key copies its tensor arguments into static buffers, runs the forward
    once on a side stream (to warm up kernels and libraries), captures it into a CUDA graph, and replays
    it. Later calls copy their arguments into the same buffers and replay. Everything else the call
    touches (index buffers, key/value and output caches) lives at fixed addresses in the `RegionState`,
    which keeps them between generations (`keeps_buffers`). Each call returns a copy of the static
    output, so no result is overwritten by the next replay. All graphs share one memory pool.

    Args:
        compile: capture the `torch.compile`d forward (fused kernels) instead of the eager one.
        warmup: eager runs on a side stream before a capture.
    """

    name = "cudagraph"
    keeps_buffers = True

    def __init__(self, compile: bool = False, warmup: int = 1) -> None:
        super().__init__()
        if not isinstance(compile, bool):
            raise ValueError(f"execution.compile must be true or false; got {compile!r}")
        if not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"execution.warmup must be an integer >= 1; got {warmup!r}")
        self.compile, self.warmup = compile, warmup
        self._graphs: dict[tuple, _Captured] = {}
        self._pool: Any = None
        self._compiled: Any = None

    def check(self, device: torch.device) -> None:
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(
                f"execution=cudagraph needs a CUDA device; the transformer is on {device.type} "
                "(use execution=eager or execution=compile)"
            )

    def run(self, forward, key, args, kwargs):
        self.keys.add(key)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(forward, args, kwargs)
            self.graphs += 1
        else:
            leaves, _ = tree_flatten((args, kwargs))
            for static, leaf in zip(captured.inputs, leaves, strict=True):
                if isinstance(static, torch.Tensor):
                    static.copy_(leaf)
            captured.graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, captured.output)

    def release(self) -> None:
        self._graphs.clear()
        self._pool = self._compiled = None

    def _capture(self, forward, args, kwargs) -> _Captured:
        leaves, spec = tree_flatten((args, kwargs))
        inputs = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        static_args, static_kwargs = tree_unflatten(inputs, spec)
        if self.compile:
            if self._compiled is None:
                self._compiled = torch.compile(forward, fullgraph=True, dynamic=False)
            forward = self._compiled
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                forward(*static_args, **static_kwargs)
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = forward(*static_args, **static_kwargs)
        graph.replay()
        return _Captured(graph, inputs, output)
