"""Tiny pipelines in the calling convention every checker of `rasfw.testing` drives a pipeline with.

That convention: an object with `.transformer` and `.scheduler`, called as
`pipe(batch, height, width, steps, guidance, seed) -> final latents`, where height and width are latent
pixels and image i draws its noise and embeddings from seed `seed + i` alone.

- `TinySD3Pipeline` / `tiny_sd3_loop`: a random 2-layer `SD3Transformer2DModel` in the standard SD3 loop;
- `SD3Call`, `LuminaNextCall`, `FluxCall`, `WanCall`: diffusers' own pipelines (`StableDiffusion3Pipeline`,
  `LuminaPipeline`, `FluxPipeline`, `WanPipeline`, e.g. the tiny ones `rasfw.pipelines.tiny` builds)
  called with latents and embeddings instead of prompts;
- `FluxLoop`: the denoising loop of diffusers' `FluxPipeline`, step for step, around a Flux transformer;
- `per_image`: the per-image seeded tensors they draw.

The tiny models themselves (`tiny_sd3_pipeline`, `tiny_flux_transformer`, ...) are built by
`rasfw.pipelines.tiny`.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from rasfw.adapters.flux import latent_image_ids, pack_latents
from rasfw.pipelines.loop import sd3_denoise
from rasfw.pipelines.tiny import (
    LATENT_CHANNELS,
    POOLED_DIM,
    TEXT_DIM,
    TEXT_LEN,
    WAN_LATENT_CHANNELS,
    flux_scheduler,
    tiny_sd3_transformer,
)

__all__ = [
    "VAE_SCALE",
    "FluxCall",
    "FluxLoop",
    "LuminaNextCall",
    "SD3Call",
    "TinySD3Pipeline",
    "WanCall",
    "per_image",
    "tiny_sd3_loop",
]

VAE_SCALE = 8
"""Pixels per latent pixel of the tiny VAEs (and of the real models): a pipeline is called with 8x the latent size."""


def per_image(batch: int, seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    """For each shape, a `(batch, *shape)` tensor whose row i is drawn from seed `seed + i` alone."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
    return [torch.stack([torch.randn(shape, generator=g) for g in gens]) for shape in shapes]


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


class SD3Call:
    """diffusers' `StableDiffusion3Pipeline` called with latents and embeddings instead of prompts.

    Args:
        pipe: the pipeline (e.g. `rasfw.pipelines.tiny.tiny_sd3_pipeline()`).
    """

    def __init__(self, pipe: DiffusionPipeline) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0) -> torch.Tensor:
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
    """diffusers' `LuminaPipeline` (Lumina-Next) called with latents and embeddings instead of prompts.

    Args:
        pipe: the pipeline (e.g. `rasfw.pipelines.tiny.tiny_lumina_next_pipeline()`).
    """

    def __init__(self, pipe: DiffusionPipeline) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0) -> torch.Tensor:
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
    """diffusers' `FluxPipeline` called with packed latents and embeddings instead of prompts.

    Args:
        pipe: the pipeline (e.g. `rasfw.pipelines.tiny.tiny_flux_pipeline()`).
    """

    def __init__(self, pipe: DiffusionPipeline) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0) -> torch.Tensor:
        latents, text, pooled = per_image(
            batch, seed, (LATENT_CHANNELS, height, width), (TEXT_LEN, TEXT_DIM), (POOLED_DIM,)
        )
        return self.pipe(
            prompt_embeds=text,
            pooled_prompt_embeds=pooled,
            latents=pack_latents(latents),
            height=height * VAE_SCALE,
            width=width * VAE_SCALE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="latent",
        ).images


class FluxLoop:
    """The denoising loop of diffusers' `FluxPipeline`, step for step, on packed latents.

    It calls `scheduler.set_timesteps` directly and the transformer once per step; guidance is the guidance
    embedding (no stacked CFG copies), as in Flux.1-dev. `FluxCall` drives the real pipeline instead.

    Args:
        transformer: the Flux transformer (e.g. `rasfw.pipelines.tiny.tiny_flux_transformer()`).
    """

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.scheduler = flux_scheduler()

    def forward_inputs(self, batch: int, height: int, width: int, seed: int, guidance: float = 3.5) -> dict:
        """Inputs of one transformer call on a `height x width` latent (packed 2x2)."""
        latents, text, pooled = per_image(
            batch, seed, (LATENT_CHANNELS, height, width), (TEXT_LEN, TEXT_DIM), (POOLED_DIM,)
        )
        return {
            "hidden_states": pack_latents(latents),
            "encoder_hidden_states": text,
            "pooled_projections": pooled,
            "timestep": torch.full((batch,), 0.5),
            "guidance": torch.full((batch,), guidance),
            "img_ids": latent_image_ids(height // 2, width // 2),
            "txt_ids": torch.zeros(TEXT_LEN, 3),
        }

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0) -> torch.Tensor:
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

    Args:
        pipe: the pipeline (e.g. `rasfw.pipelines.tiny.tiny_wan_pipeline()`).
    """

    frames = 3

    def __init__(self, pipe: DiffusionPipeline) -> None:
        self.pipe, self.transformer, self.scheduler = pipe, pipe.transformer, pipe.scheduler

    @torch.no_grad()
    def __call__(self, batch=1, height=16, width=24, steps=8, guidance=3.0, seed=0) -> torch.Tensor:
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
