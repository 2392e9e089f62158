"""Plain-torch specification of `linear_scatter`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_scatter(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    dst: torch.Tensor,
) -> torch.Tensor:
    """Write `dst[b, index[b, j]] = x[b, j] @ weight.T + bias` in place and return `dst`.

    Args:
        x: `(B, a, K)` rows of the active tokens.
        weight: `(Nout, K)` projection weight.
        bias: `(Nout,)` or None.
        index: `(B, a)` destination rows, unique per sample, in `[0, N)`.
        dst: `(B, N, Nout)` destination (the K or V cache); other rows are left untouched.
    """
    y = F.linear(x, weight, bias)  # (B, a, Nout)
    return dst.scatter_(1, index.long().unsqueeze(-1).expand(-1, -1, dst.shape[-1]), y.to(dst.dtype))
