"""Plain-torch specification of `scatter`."""

from __future__ import annotations

import torch


def scatter(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Write `dst[b, index[b, j]] = src[b, j]` (cast to `dst`'s dtype) in place and return `dst`.

    Args:
        dst: `(B, N, D)` destination; rows not named by `index` are left untouched.
        index: `(B, a)` destination rows, unique per sample, in `[0, N)`.
        src: `(B, a, D)` rows to write.
    """
    return dst.scatter_(1, index.long().unsqueeze(-1).expand(-1, -1, dst.shape[-1]), src.to(dst.dtype))
