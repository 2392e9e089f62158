"""Pure-torch reference implementation of the token operations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rasfw.backends.base import TokenBackend
from rasfw.registry import register


def _expand(index: torch.Tensor, width: int) -> torch.Tensor:
    return index.unsqueeze(-1).expand(-1, -1, width)  # (B, a, D)


@register("backend", "torch")
class TorchBackend(TokenBackend):
    """Reference token operations built from `torch.gather`, `scatter_` and `F.linear`."""

    name = "torch"

    def gather(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, _expand(index, x.shape[-1]))  # (B, a, D)

    def scatter(self, dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return dst.scatter_(1, _expand(index, dst.shape[-1]), src.to(dst.dtype))

    def linear_scatter(self, x, weight, bias, index, dst):
        return self.scatter(dst, index, F.linear(x, weight, bias))
