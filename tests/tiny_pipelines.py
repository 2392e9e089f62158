"""Tiny real diffusers pipelines, and the thin callables the adapter contract drives them through.

The builders live in `rasfw.pipelines.tiny` (the CLI's tiny model runners use them too); this module re-exports
them and adds, per family, an object with `.transformer`, `.scheduler` and
`__call__(batch, height, width, steps, guidance, seed) -> final latents` where image i draws its noise and
prompt embeddings from seed `seed + i` alone (height and width are latent pixels).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from rasfw.adapters.flux import latent_image_ids as image_ids
from rasfw.adapters.flux import pack_latents as pack
from rasfw.pipelines.tiny import (
    LATENT_CHANNELS,
    POOLED_DIM,
    TEXT_DIM,
    TEXT_LEN,
    WAN_LATENT_CHANNELS,
    flux_scheduler,
    tiny_flux_pipeline,
    tiny_flux_transformer,
    tiny_lumina_next_pipeline,
    tiny_lumina_next_transformer,
    tiny_sd3_pipeline,
    tiny_vae,
    tiny_wan_pipeline,
)

__all__ = [
    "FluxCall",
    "FluxLoop",
    "LuminaNextCall",
    "SD3Call",
    "flux_scheduler",
    "per_image",
    "tiny_flux_pipeline",
    "tiny_flux_transformer",
    "tiny_lumina_next_pipeline",
    "tiny_lumina_next_transformer",
    "tiny_sd3_pipeline",
    "tiny_vae",
    "tiny_wan_pipeline",
    "WanCall",
]

VAE_SCALE = 8


def per_image(batch: int, seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    """For each shape, a `(batch, *shape)` tensor whose row i is drawn from seed `seed + i` alone."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
    return [torch.stack([torch.randn(shape, generator=g) for g in gens]) for shape in shapes]


class SD3Call:
    """diffusers' `StableDiffusion3Pipeline` called with latents and embeddings instead of prompts."""

    def __init__(self, pipe) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0):
        latents, text, pooled, neg_text, neg_pooled = per_image(
            batch,
            seed,
            (LATENT_CHANNELS, height, width),
            (TEXT_LEN, TEXT_DIM),
            (POOLED_DIM,),
            (TEXT_LEN, TEXT_DIM),
            (POOLED_DIM,),
        )
        return self.pipe(
            prompt_embeds=text,
            pooled_prompt_embeds=pooled,
            negative_prompt_embeds=neg_text,
            negative_pooled_prompt_embeds=neg_pooled,
            latents=latents,
            height=height * VAE_SCALE,
            width=width * VAE_SCALE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="latent",
        ).images


class LuminaNextCall:
    """diffusers' `LuminaPipeline` (Lumina-Next) called with latents and embeddings instead of prompts."""

    def __init__(self, pipe) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0):
        latents, text, neg_text = per_image(
            batch, seed, (LATENT_CHANNELS, height, width), (TEXT_LEN, TEXT_DIM), (TEXT_LEN, TEXT_DIM)
        )
        mask = torch.ones(batch, TEXT_LEN, dtype=torch.long)
        return self.pipe(
            prompt_embeds=text,
            prompt_attention_mask=mask,
            negative_prompt_embeds=neg_text,
            negative_prompt_attention_mask=mask,
            latents=latents,
            height=height * VAE_SCALE,
            width=width * VAE_SCALE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="latent",
        ).images


class FluxCall:
    """diffusers' `FluxPipeline` called with packed latents and embeddings instead of prompts."""

    def __init__(self, pipe) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0):
        latents, text, pooled = per_image(
            batch, seed, (LATENT_CHANNELS, height, width), (TEXT_LEN, TEXT_DIM), (POOLED_DIM,)
        )
        return self.pipe(
            prompt_embeds=text,
            pooled_prompt_embeds=pooled,
            latents=pack(latents),
            height=height * VAE_SCALE,
            width=width * VAE_SCALE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="latent",
        ).images


class FluxLoop:
    """The denoising loop of diffusers' `FluxPipeline`, step for step, on packed latents.

    Used for the adapter contract because it calls `scheduler.set_timesteps` directly; the real pipeline
    is exercised in `test_pipelines.py`. Guidance is the guidance embedding (one transformer call per
    step, no stacked CFG copies).
    """

    def __init__(self, transformer) -> None:
        self.transformer = transformer
        self.scheduler = flux_scheduler()

    def forward_inputs(self, batch: int, height: int, width: int, seed: int, guidance: float = 3.5) -> dict:
        """Inputs of one transformer call on a `height x width` latent (packed 2x2)."""
        latents, text, pooled = per_image(
            batch, seed, (LATENT_CHANNELS, height, width), (TEXT_LEN, TEXT_DIM), (POOLED_DIM,)
        )
        return {
            "hidden_states": pack(latents),
            "encoder_hidden_states": text,
            "pooled_projections": pooled,
            "timestep": torch.full((batch,), 0.5),
            "guidance": torch.full((batch,), guidance),
            "img_ids": image_ids(height // 2, width // 2),
            "txt_ids": torch.zeros(TEXT_LEN, 3),
        }

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0):
        inputs = self.forward_inputs(batch, height, width, seed, guidance)
        latents = inputs.pop("hidden_states")
        sigmas = np.linspace(1.0, 1 / steps, steps)
        config = self.scheduler.config
        mu = calculate_shift(
            latents.shape[1], config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift
        )
        self.scheduler.set_timesteps(sigmas=sigmas, mu=mu)
        self.scheduler.set_begin_index(0)
        for t in self.scheduler.timesteps:
            inputs["timestep"] = t.expand(batch) / 1000
            out = self.transformer(hidden_states=latents, **inputs, return_dict=False)[0]
            latents = self.scheduler.step(out, t, latents, return_dict=False)[0]
        return latents


class WanCall:
    """diffusers' `WanPipeline` called with video latents and embeddings instead of prompts.

    `height` and `width` are latent pixels; `frames` latent frames (the VAE makes `4 * (frames - 1) + 1`
    video frames of them). Guidance above 1 runs the pipeline's two calls per step, `cond` then `uncond`.
    """

    frames = 3

    def __init__(self, pipe) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0):
        latents, text, negative = per_image(
            batch, seed, (WAN_LATENT_CHANNELS, self.frames, height, width), (TEXT_LEN, TEXT_DIM), (TEXT_LEN, TEXT_DIM)
        )
        return self.pipe(
            prompt_embeds=text,
            negative_prompt_embeds=negative,
            latents=latents,
            height=height * VAE_SCALE,
            width=width * VAE_SCALE,
            num_frames=4 * (self.frames - 1) + 1,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="latent",
        ).frames
