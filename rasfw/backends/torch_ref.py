"""Pure-torch reference implementation of the token operations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rasfw.backends.base import TokenBackend
from rasfw.registry import register


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x[b, index[b, j]]` as a new `(B, a, D)` tensor, moving whole rows: `index_select` for one batch row,
    advanced indexing for several (on a CPU several times faster than `torch.gather` with an index expanded
    over the width, which addresses every element)."""
    if index.shape[0] == 1 == x.shape[0]:
        return x.index_select(1, index[0])
    return x[torch.arange(index.shape[0], device=index.device)[:, None], index]


def scatter_rows(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """`dst[b, index[b, j]] = src[b, j]` in place (distinct indices per row), moving whole rows as `gather_rows`
    does (`index_copy_` for one batch row, an indexed assignment for several); returns `dst`."""
    if index.shape[0] == 1 == dst.shape[0]:
        return dst.index_copy_(1, index[0], src)
    dst[torch.arange(index.shape[0], device=index.device)[:, None], index] = src
    return dst


@register("backend", "torch")
class TorchBackend(TokenBackend):
    """Reference token operations: `gather_rows`, `scatter_rows` and `F.linear`."""

    name = "torch"

    def gather(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return gather_rows(x, index)

    def scatter(self, dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return scatter_rows(dst, index, src.to(dst.dtype))

    def linear_scatter(self, x, weight, bias, index, dst):
        return self.scatter(dst, index, F.linear(x, weight, bias))
