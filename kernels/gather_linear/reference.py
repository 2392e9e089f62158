"""Plain-torch specification of `gather_linear`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_linear(
    x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Return `Y[b, j] = x[b, index[b, j]] @ weight.T + bias`, a new `(B, a, Nout)` tensor of `x`'s dtype.

    Args:
        x: `(B, N, K)` all tokens.
        index: `(B, a)` rows to project, in `[0, N)`.
        weight: `(Nout, K)` projection weight.
        bias: `(Nout,)` or None.
    """
    rows = torch.gather(x, 1, index.long().unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, a, K)
    return F.linear(rows, weight, bias)
