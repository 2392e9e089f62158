"""Starvation policies: how often-skipped patches get revisited."""

from __future__ import annotations

import torch

from rasfw.interfaces import StarvationPolicy
from rasfw.registry import register
from rasfw.strategies._checks import number


@register("starvation", "exp")
class ExpStarvation(StarvationPolicy):
    """The `exp(k * D)` factor of Eq. 1 of the RAS paper: `score * exp(k * drop_count)`.

    Args:
        k: starvation scale, >= 0. The reference implementation always ran with 0.1.
    """

    def __init__(self, k: float = 0.1) -> None:
        self.k = number("starvation.k", k, "[0, inf)", lambda v: v >= 0)

    def adjust(self, score: torch.Tensor, drop_count: torch.Tensor) -> torch.Tensor:
        return score * torch.exp(self.k * drop_count.to(score.dtype))


@register("starvation", "none")
class NoStarvation(StarvationPolicy):
    """Scores unchanged: the paper's "without starvation prevention" ablation."""

    def adjust(self, score: torch.Tensor, drop_count: torch.Tensor) -> torch.Tensor:
        return score
