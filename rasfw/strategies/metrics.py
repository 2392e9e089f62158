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


@register("metric", "temporal_diff")
class TemporalDifference(RegionMetric):
    """How much each token's prediction changed since the step before: `mean(|N_t - N_{t-1}|)` per token.

    A cheap signal for video: tokens whose prediction still moves are where the model is working. The
    first observed step has nothing to compare with and scores with `std_noise`. A token that was not
    recomputed at this step (its output came from the cache, so it did not change) keeps the score it had
    when it was last computed, so a skipped token is not ranked as settled only because it was skipped.
    Scores of those two kinds are not on one scale at the first comparison; the starvation policy and the
    reset steps bound how long any token waits either way.

    State: the previous prediction and scores live in the generation's `memory` (one per pipeline), never
    on the metric, so one metric object can serve many pipelines.
    """

    uses_memory = True

    def score(self, tokens, grid, generator=None, memory=None):
        if memory is None:
            raise ValueError("temporal_diff needs the generation's memory; the sampler passes it (uses_memory)")
        current = tokens.float()  # (B, N, P, C)
        previous = memory.get("previous")
        if previous is None or previous.shape != current.shape:
            score = current.std(dim=-1).mean(dim=-1)  # (B, N): std_noise at the first step
        else:
            change = (current - previous).abs().flatten(2).mean(dim=-1)  # (B, N)
            score = torch.where(change > 0, change, memory["score"])  # unchanged: not recomputed, keep its score
        memory["previous"], memory["score"] = current.clone(), score
        return score
