"""The edge-energy region metric."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from rasfw import RegionMetric, TokenGrid, register

_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


@register("metric", "edge_energy")
class EdgeEnergy(RegionMetric):
    """Mean absolute Laplacian of the channel-averaged noise prediction within each patch.

    Where `std_noise` looks at each latent pixel alone, this looks at neighbours: a patch whose
    prediction changes sharply in space (edges, texture) scores high, a smooth one low.
    """

    def score(self, tokens: torch.Tensor, grid: TokenGrid, generator: torch.Generator | None = None) -> torch.Tensor:
        if grid.frames > 1 or grid.patch_t > 1:  # video: each frame scored as an image
            b, n, _, c = tokens.shape
            frames = tokens.reshape(b, n, grid.patch_t, grid.patch**2, c).mean(dim=2)  # (B, N, p*p, C)
            frames = frames.reshape(b * grid.frames, grid.rows * grid.cols, grid.patch**2, c)
            image = replace(grid, layout="bchw", frames=1, patch_t=1)
            return self.score(frames, image, generator).reshape(b, n)  # (B, N)
        # Tokens are (B, N, P, C) whatever the model's layout: read them back as a (B, C, H, W) image.
        latent = replace(grid, layout="bchw").from_tokens(tokens.float())  # (B, C, H, W)
        mean = latent.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        kernel = torch.tensor(_LAPLACIAN, dtype=mean.dtype, device=mean.device)[None, None]
        edges = F.conv2d(F.pad(mean, (1, 1, 1, 1), mode="replicate"), kernel).abs()  # (B, 1, H, W)
        pooled = F.avg_pool2d(edges, grid.patch)  # (B, 1, rows, cols)
        return pooled.flatten(1)  # (B, N)
