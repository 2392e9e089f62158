"""The denoising loop, written once (`denoise`), and its SD3-style form (`sd3_denoise`: classifier-free guidance
by batch stacking, then `scheduler.step`, as in diffusers' `StableDiffusion3Pipeline`).

The embedded model's pipeline, the bench's synthetic pipelines, the tiny pipeline of `rasfw.testing` and the
repository's tests all sample through it, so the hooks see exactly the calls a diffusers pipeline makes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def denoise(
    scheduler: Any,
    latents: torch.Tensor,
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    progress: bool | str = False,
    step_end: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The denoising loop, the one every rasfw pipeline runs: at each of `scheduler.timesteps` (set them first),
    the model output `predict(latents, t)`, then `scheduler.step`; returns the final latents.

    Args:
        scheduler: a scheduler whose `set_timesteps` has been called.
        latents: the starting noise.
        predict: the model output the scheduler steps with at timestep `t` (the transformer calls of a step,
            guidance applied).
        progress: show a progress bar; a string is its label.
        step_end: called after each `scheduler.step` as `step_end(step, t, latents)`; returns the latents the
            next step starts from (the given ones or a replacement).
    """
    label = progress if isinstance(progress, str) else None
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc=label)):
        latents = scheduler.step(predict(latents, t), t, latents, return_dict=False)[0]
        if step_end is not None:
            latents = step_end(i, t, latents)
    return latents


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
    """`denoise` with an SD3-style transformer: one call a step, both guidance halves stacked in its batch.

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
    text = {"prompt_embeds": context, "pooled_prompt_embeds": pooled}  # what `step_end` may replace

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = torch.cat([latents] * 2) if guidance else latents  # (Bt, C, H, W)
        with _cache_context(transformer, "cond_uncond" if guidance else "cond"):  # one call, both halves
            out = transformer(
                hidden_states=x,
                encoder_hidden_states=text["prompt_embeds"],
                pooled_projections=text["pooled_prompt_embeds"],
                timestep=t.expand(x.shape[0]),
                return_dict=False,
            )[0]
        if not guidance:
            return out
        uncond, cond = out.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    def end(i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        tensors = step_end(i, t, {"latents": latents, **text})
        text.update(prompt_embeds=tensors["prompt_embeds"], pooled_prompt_embeds=tensors["pooled_prompt_embeds"])
        return tensors["latents"]

    return denoise(scheduler, latents, predict, progress, None if step_end is None else end)


def _cache_context(transformer: torch.nn.Module, name: str) -> contextlib.AbstractContextManager:
    """`transformer.cache_context(name)` as diffusers pipelines open it (diffusers' step caches need it);
    nothing for a transformer without one."""
    opener = getattr(transformer, "cache_context", None)
    return opener(name) if opener is not None else contextlib.nullcontext()
