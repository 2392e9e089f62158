"""A tiny SD3 pipeline for checks: a random 2-layer `SD3Transformer2DModel` in the standard loop.

It follows the calling convention every checker of `rasfw.testing` drives a pipeline with:
`pipe(batch, height, width, steps, guidance, seed) -> final latents`, where height and width are latent
pixels and image i draws its noise and embeddings from seed `seed + i` alone.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from rasfw.pipelines.loop import sd3_denoise
from rasfw.pipelines.tiny import LATENT_CHANNELS, POOLED_DIM, TEXT_DIM, TEXT_LEN, tiny_sd3_transformer

__all__ = ["TinySD3Pipeline", "tiny_sd3_loop"]


class TinySD3Pipeline:
    """The shape of diffusers' SD3 pipeline loop: CFG by batch stacking, scheduler.step per step.

    Args:
        transformer: the SD3-style transformer to drive.
    """

    def __init__(self, transformer: SD3Transformer2DModel) -> None:
        self.transformer = transformer
        self.scheduler = FlowMatchEulerDiscreteScheduler()

    def forward_inputs(self, batch: int, height: int, width: int, seed: int) -> dict:
        """Keyword arguments of one transformer call on a `height x width` latent."""
        gen = torch.Generator().manual_seed(seed)
        return {
            "hidden_states": torch.randn(batch, LATENT_CHANNELS, height, width, generator=gen),
            "encoder_hidden_states": torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=gen),
            "pooled_projections": torch.randn(batch, POOLED_DIM, generator=gen),
            "timestep": torch.full((batch,), 500.0),
        }

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0) -> torch.Tensor:
        """Sample `batch` latents of `height x width`; image i draws its inputs from seed `seed + i` alone."""
        halves = 2 if guidance > 1 else 1
        gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
        latents = torch.stack([torch.randn(LATENT_CHANNELS, height, width, generator=g) for g in gens])
        context = torch.cat([torch.stack([torch.randn(TEXT_LEN, TEXT_DIM, generator=g) for g in gens]) for _ in range(halves)])
        pooled = torch.cat([torch.stack([torch.randn(POOLED_DIM, generator=g) for g in gens]) for _ in range(halves)])
        self.scheduler.set_timesteps(steps)
        return sd3_denoise(self.transformer, self.scheduler, latents, context, pooled, guidance)


def tiny_sd3_loop(seed: int = 0, patch_size: int = 2) -> TinySD3Pipeline:
    """A `TinySD3Pipeline` around `rasfw.pipelines.tiny.tiny_sd3_transformer(seed, patch_size)`."""
    return TinySD3Pipeline(tiny_sd3_transformer(seed=seed, patch_size=patch_size))
