"""Region metrics: how much each patch is being worked on."""

from __future__ import annotations

import torch

from rasfw.interfaces import RegionMetric, TokenGrid
from rasfw.registry import register


@register("metric", "std_noise")
class StdNoise(RegionMetric):
    """Eq. 1 of the RAS paper without the starvation factor: `mean_over_patch(std(N))`.

    The standard deviation is taken per latent pixel over the channel dimension (unbiased, the torch
    default), then averaged over the `p x p` latent pixels of each patch.
    """

    def score(self, tokens, grid, generator=None):
        return tokens.float().std(dim=-1).mean(dim=-1)  # (B, N)


@register("metric", "l2norm")
class L2Norm(RegionMetric):
    """The L2 norm of each patch's predicted noise (the reference implementation's `l2norm`)."""

    def score(self, tokens, grid, generator=None):
        return tokens.float().flatten(2).norm(dim=-1)  # (B, N)


@register("metric", "random")
class RandomScore(RegionMetric):
    """Uniform random scores: the paper's "random dropping" ablation.

    Draws from the run's generator, so a run is reproducible and two runs never share a stream.
    """

    def score(self, tokens, grid: TokenGrid, generator: torch.Generator | None = None):
        b, n = tokens.shape[:2]
        return torch.rand((b, n), generator=generator, device=generator.device if generator else "cpu").to(
            tokens.device
        )
