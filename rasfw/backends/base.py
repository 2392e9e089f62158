"""The token-operation interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class TokenBackend(ABC):
    """Row gather/scatter on `(batch, tokens, features)` tensors, per-sample indices.

    Every `index` is a `(B, a)` int64 tensor of token positions; the same count `a` for every sample.
    """

    name: str = "abstract"

    def ran(self) -> tuple[str, str]:
        """`(name, why)` of the implementation that ran the last operation; `why` is "" unless it fell back."""
        return self.name, ""

    @abstractmethod
    def gather(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Return `x[b, index[b, j]]` as a new `(B, a, D)` tensor."""

    @abstractmethod
    def scatter(self, dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """Write `dst[b, index[b, j]] = src[b, j]` in place and return `dst`."""

    @abstractmethod
    def linear_scatter(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        index: torch.Tensor,
        dst: torch.Tensor,
    ) -> torch.Tensor:
        """Write `dst[b, index[b, j]] = x[b, j] @ weight.T + bias` in place and return `dst`."""


AUTO = "auto"
"""The backend name that picks per device (`rasfw.backends.auto.AutoBackend`)."""


def backend_names() -> list[str]:
    """The backends a sampler accepts: every registered one, plugins' and "auto" included."""
    from rasfw.registry import REGISTRY

    return REGISTRY.names("backend")


def resolve_backend(name: str, device: torch.device | str | None = None) -> TokenBackend:
    """Build the backend called `name` ("torch", "triton" or "auto") for tensors on `device`.

    `auto` picks Triton on a CUDA device when Triton imports, the torch reference otherwise.
    """
    from rasfw.registry import REGISTRY

    if name == AUTO:
        device = torch.device(device or "cpu")
        name = "triton" if device.type == "cuda" and _triton_available() else "torch"
    return REGISTRY.get("backend", name)()


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
