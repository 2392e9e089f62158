"""Tiny random models and a standard diffusers-style sampling loop, for fast tests."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from rasfw.tiny import LATENT_CHANNELS, POOLED_DIM, TEXT_DIM, TEXT_LEN, tiny_sd3_transformer

__all__ = ["TinySD3Pipeline", "tiny_sd3_transformer"]

class TinySD3Pipeline:
    """The shape of diffusers' SD3 pipeline loop: CFG by batch stacking, scheduler.step per step."""

    def __init__(self, transformer: SD3Transformer2DModel) -> None:
        self.transformer = transformer
        self.scheduler = FlowMatchEulerDiscreteScheduler()

    def forward_inputs(self, batch: int, height: int, width: int, seed: int) -> dict:
        gen = torch.Generator().manual_seed(seed)
        return {
            "hidden_states": torch.randn(batch, LATENT_CHANNELS, height, width, generator=gen),
            "encoder_hidden_states": torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=gen),
            "pooled_projections": torch.randn(batch, POOLED_DIM, generator=gen),
            "timestep": torch.full((batch,), 500.0),
        }

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0):
        """Sample `batch` images; image i draws its inputs from seed `seed + i` alone."""
        cfg = guidance > 1
        gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
        latents = torch.stack([torch.randn(LATENT_CHANNELS, height, width, generator=g) for g in gens])
        halves = 2 if cfg else 1
        context = torch.cat([torch.stack([torch.randn(TEXT_LEN, TEXT_DIM, generator=g) for g in gens]) for _ in range(halves)])
        pooled = torch.cat([torch.stack([torch.randn(POOLED_DIM, generator=g) for g in gens]) for _ in range(halves)])
        rows = halves * batch
        self.scheduler.set_timesteps(steps)
        for t in self.scheduler.timesteps:
            x = torch.cat([latents] * 2) if cfg else latents
            out = self.transformer(
                hidden_states=x,
                encoder_hidden_states=context,
                pooled_projections=pooled,
                timestep=t.expand(rows),
                return_dict=False,
            )[0]
            if cfg:
                uncond, cond = out.chunk(2)
                out = uncond + guidance * (cond - uncond)
            latents = self.scheduler.step(out, t, latents, return_dict=False)[0]
        return latents
