"""Starvation policies: how often-skipped patches get revisited."""

from __future__ import annotations

import torch

from rasfw.checks import number
from rasfw.interfaces import StarvationPolicy
from rasfw.registry import register


@register("starvation", "exp")
class ExpStarvation(StarvationPolicy):
    """The `exp(k * D)` factor of Eq. 1 of the RAS paper: `score * exp(k * drop_count)`.

    Selection ranks scores within each image, so the factor is computed relative to the image's largest
    `k * D` (`exp(k * D - max k * D)`, never above 1): the ranking is that of Eq. 1, and no large `k`
    or long schedule overflows to infinity.

    Args:
        k: starvation scale, in [0, 100]. The reference implementation always ran with 0.1.
    """

    def __init__(self, k: float = 0.1) -> None:
        self.k = number("starvation.k", k, "[0, 100]", lambda v: 0 <= v <= 100)

    def adjust(self, score: torch.Tensor, drop_count: torch.Tensor) -> torch.Tensor:
        exponent = self.k * drop_count.to(torch.float64)  # (B, N)
        exponent = exponent - exponent.amax(dim=1, keepdim=True)
        return (score.to(torch.float64) * torch.exp(exponent)).to(score.dtype)


@register("starvation", "none")
class NoStarvation(StarvationPolicy):
    """Scores unchanged: the paper's "without starvation prevention" ablation."""

    def adjust(self, score: torch.Tensor, drop_count: torch.Tensor) -> torch.Tensor:
        return score
