"""Plain-torch specification of `gather`."""

from __future__ import annotations

import torch


def gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Return `x[b, index[b, j]]` as a new `(B, a, D)` tensor.

    Args:
        x: `(B, N, D)` all tokens.
        index: `(B, a)` rows to read, in `[0, N)`.
    """
    return torch.gather(x, 1, index.long().unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, a, D)
