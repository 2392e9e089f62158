"""One transformer driven call by call, outside any pipeline: a capture call, then RAS calls over chosen tokens.

What the exactness tests, the FLOP count of the bench and the per-call timings all need: the transformer's
adapter installed on a fresh `RegionState`, a dense call that fills the key/value and output caches, and
calls that recompute only the tokens of an index against those caches. A sampler does the same inside a
pipeline (`RegionAdaptiveSampler.prepare_forward`); this drives it by hand.

    with PartialForward(transformer, inputs) as calls:
        dense = calls.capture()              # (all tokens) fills the caches
        partial = calls.ras(index)           # (Bt, a) active tokens per row, against the cached rest
"""

from __future__ import annotations

from typing import Any

import torch

from rasfw.backends.base import TokenBackend, resolve_backend
from rasfw.interfaces import ModelAdapter
from rasfw.state import DEFAULT_CONTEXT, ForwardPlan, RegionState


class PartialForward:
    """The adapter of `transformer` installed for calls made by hand; removed again on exit.

    Args:
        transformer: a transformer a registered adapter supports (nothing else may be attached to it).
        inputs: the keyword arguments of every call (`hidden_states`, `timestep`, ...).
        backend: token backend of the calls; the torch reference on the transformer's device by default.
        kv_cache: at RAS calls, attend to the cached keys/values of the other tokens (Eq. 2 of the RAS paper).
    """

    def __init__(self, transformer: torch.nn.Module, inputs: dict[str, Any], backend: TokenBackend | None = None,
                 kv_cache: bool = True) -> None:
        from rasfw.attach import find_adapter

        self.transformer, self.inputs, self.kv_cache = transformer, inputs, kv_cache
        device = inputs["hidden_states"].device
        self.backend = backend if backend is not None else resolve_backend("torch", device)
        self.adapter: ModelAdapter = find_adapter(transformer)()
        self.state = RegionState()
        self.caches = self.state.context_caches(DEFAULT_CONTEXT)

    def __enter__(self) -> PartialForward:
        self.adapter.install(self.transformer, self.state, self.backend)
        self.state.grid = self.adapter.call_grid((), self.inputs)
        return self

    def __exit__(self, *exc: object) -> None:
        self.adapter.remove(self.transformer)
        self.state.free()

    @property
    def num_tokens(self) -> int:
        """Image (or video) tokens of a call."""
        return self.state.num_tokens

    def capture(self) -> Any:
        """A dense call that fills the caches; returns the transformer's output tensor."""
        self.state.forward = ForwardPlan(None, capture=True, kv_cache=self.kv_cache, caches=self.caches)
        self.adapter.prepare(self.transformer, self.state.forward, (), self.inputs)
        return self.call()

    def ras(self, index: torch.Tensor) -> Any:
        """A call recomputing the `(Bt, a)` tokens of `index` (one row per batch row of the inputs) against the
        caches of the last `capture`; returns the output tensor of the full grid. The index is copied into the
        state's fixed buffer of its shape, so repeated calls of one shape read one address."""
        fixed = self.state.index_buffer(*index.shape, index.device).copy_(index)
        self.state.forward = ForwardPlan(fixed, kv_cache=self.kv_cache, caches=self.caches)
        return self.call()

    def call(self) -> Any:
        """The transformer called with the current plan (the last `capture` or `ras`); returns its output tensor."""
        return self.transformer(**self.inputs, return_dict=False)[0]
