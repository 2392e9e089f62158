"""Shared machinery of the RAS attention processors (SD3, Lumina-Next, Flux).

A `RASProcessor` replaces one attention module's processor while RAS is applied. Which path a call takes
depends only on the call's `ForwardPlan`, fixed before the call:

* `"original"`: a dense call that touches no cache runs the module's original processor, unchanged (so
  ratio 1 is bit-for-bit the unmodified model);
* `"cached"`: a capture call (all `N` image tokens) or a RAS call (the `a` active tokens) writes its image
  keys/values into the module's `KVCache` (`index=None` writes them all), its text keys/values into the
  text rows of the same joint buffer, and attends to the whole buffer: nothing is concatenated per layer;
* `"uncached"`: a RAS call with `sampler.kv_cache=false`: the active tokens attend only to themselves
  (and the text), the paper's "without key/value cache" ablation.

`allocate` sizes the module's buffers before the call; `original` is the processor restored by removal.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rasfw._compat import layerwise_compute_dtype
from rasfw.backends.base import TokenBackend
from rasfw.state import CallCaches, KVCache, RegionState, StaleCacheError


class RASProcessor:
    """Base class of the RAS processors: the original processor, the module's cache name and layout.

    Args:
        attn: the attention module it is installed on.
        original: the module's processor before RAS.
        name: the module's qualified name; its cache is `caches.kv[name]`.
        state: the run state the caches live in.
        backend: token operations.

    Attributes:
        text_first: in the joint buffer the text rows come before the image rows (Flux) or after (SD3).
    """

    text_first: ClassVar[bool] = False

    def __init__(
        self,
        attn: torch.nn.Module | None = None,
        original: Any = None,
        name: str = "",
        state: RegionState | None = None,
        backend: TokenBackend | None = None,
    ):
        if attn is None or state is None:  # diffusers rebuilds processors as `type(processor)()` (load_ip_adapter)
            raise TypeError(
                f"{type(self).__name__} is rasfw's and only apply_ras builds it: call remove_ras(pipe) before changing "
                "the attention processors (load_ip_adapter, ...), then apply_ras(pipe, ...) again if they are supported"
            )
        self.attn = attn
        self.original = original
        self.name = name
        self.state = state
        self.backend = backend

    @property
    def _attention_backend(self) -> Any:
        """diffusers' attention backend (`transformer.set_attention_backend(...)`) lives on the original processor,
        which runs every dense call; RAS calls read it there too (Flux's dispatch) or use PyTorch's SDPA."""
        return getattr(self.original, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, backend: Any) -> None:
        self.original._attention_backend = backend

    def joins_text(self) -> bool:
        """Whether this module's image tokens attend jointly to the text tokens (a joint buffer)."""
        return False

    def allocate(self, caches: CallCaches, rows: int, tokens: int, text: int) -> KVCache:
        """Size this module's joint key/value buffers for `rows` batch rows, `tokens` image, `text` text tokens."""
        text = text if self.joins_text() else 0
        image = slice(text, text + tokens) if self.text_first else slice(0, tokens)
        weight = self.attn.to_k.weight
        shape = (rows, tokens + text, self.attn.to_k.out_features)
        return self.state.kv_cache(
            caches, self.name, shape, image, self.attn.to_v.out_features, compute_dtype(self.attn.to_k), weight.device
        )

    def path(self) -> str:
        """"original", "cached" or "uncached" for the call in progress (see the module docstring)."""
        plan = self.state.forward
        if plan.index is None:
            return "cached" if plan.caches is not None and plan.kv_cache else "original"
        return "cached" if plan.kv_cache else "uncached"

    def cache(self) -> KVCache:
        """This module's key/value cache for the call in progress, which writes it.

        With `state.check_writes` (eager calls) the cache records the step, and a RAS call refuses a cache
        that was not written at the previous call of its context (`StaleCacheError`): its inactive rows
        would be stale keys/values of an earlier step.
        """
        state = self.state
        plan = state.forward
        cache = plan.caches.kv[self.name]
        if state.check_writes:
            if plan.index is not None and cache.written_at != plan.caches.previous:
                last = "never" if cache.written_at is None else f"last at step {cache.written_at}"
                raise StaleCacheError(
                    f"RAS: attention module {self.name} did not run at step {plan.caches.previous} in cache context "
                    f"'{plan.context}' (written {last}; something skipped it), so its key/value cache is stale at "
                    f"RAS step {state.step}",
                    self.name,
                )
            cache.written_at = state.step
        return cache


def compute_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype `module`'s outputs come in: its weights', or under diffusers' layerwise casting (weights stored in
    float8 and cast per forward) the casting's compute dtype, which the caches must hold."""
    return layerwise_compute_dtype(module) or next(module.parameters()).dtype


def text_rows(cache: KVCache) -> slice:
    """The rows of the text tokens in a joint buffer (those that are not image rows)."""
    if cache.image.start > 0:
        return slice(0, cache.image.start)
    return slice(cache.image.stop, cache.key.shape[1])


def heads_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    """`(B, S, H * d)` -> `(B, H, S, d)` (a view)."""
    b, s, width = x.shape
    return x.view(b, s, heads, width // heads).transpose(1, 2)


def tokens_view(x: torch.Tensor) -> torch.Tensor:
    """`(B, H, S, d)` -> `(B, S, H * d)`."""
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)
