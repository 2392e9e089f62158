"""The SD3-style denoising loop, written once: classifier-free guidance by batch stacking, then
`scheduler.step`, as in diffusers' `StableDiffusion3Pipeline`.

The embedded model's pipeline, the tiny pipeline of `rasfw.testing` and the repository's tests all sample
through it, so the hooks see exactly the calls a diffusers pipeline makes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def sd3_denoise(
    transformer: torch.nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    context: torch.Tensor,
    pooled: torch.Tensor,
    guidance_scale: float,
    progress: bool | str = False,
    step_end: Callable[[int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Run every step of `scheduler.timesteps` (set them first) from `latents`; return the final latents.

    Args:
        transformer: an SD3-style transformer (`hidden_states`, `encoder_hidden_states`,
            `pooled_projections`, `timestep`).
        scheduler: a flow-matching scheduler whose `set_timesteps` has been called.
        latents: `(B, C, H, W)` starting noise.
        context: `(2B, T, D)` text embeddings, unconditional half first, when `guidance_scale > 1`;
            `(B, T, D)` otherwise.
        pooled: `(2B, P)` or `(B, P)` pooled text embeddings, in the same order.
        guidance_scale: classifier-free guidance scale; at most 1 means no guidance (one row per image).
        progress: show a progress bar; a string is its label.
        step_end: called after each `scheduler.step` as `step_end(step, t, tensors)`, where `tensors` holds
            "latents", "prompt_embeds" (`context`) and "pooled_prompt_embeds" (`pooled`); it returns a dict of
            the same three, the given tensors or replacements, which the next steps use (as diffusers'
            `callback_on_step_end` may replace them).
    """
    guidance = guidance_scale > 1
    label = progress if isinstance(progress, str) else None
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc=label)):
        x = torch.cat([latents] * 2) if guidance else latents  # (Bt, C, H, W)
        with _cache_context(transformer, "cond_uncond" if guidance else "cond"):  # one call, both halves
            out = transformer(
                hidden_states=x,
                encoder_hidden_states=context,
                pooled_projections=pooled,
                timestep=t.expand(x.shape[0]),
                return_dict=False,
            )[0]
        if guidance:
            uncond, cond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(out, t, latents, return_dict=False)[0]
        if step_end is not None:
            tensors = step_end(i, t, {"latents": latents, "prompt_embeds": context, "pooled_prompt_embeds": pooled})
            latents, context, pooled = tensors["latents"], tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]
    return latents


def _cache_context(transformer: torch.nn.Module, name: str) -> contextlib.AbstractContextManager:
    """`transformer.cache_context(name)` as diffusers pipelines open it (diffusers' step caches need it);
    nothing for a transformer without one."""
    opener = getattr(transformer, "cache_context", None)
    return opener(name) if opener is not None else contextlib.nullcontext()
