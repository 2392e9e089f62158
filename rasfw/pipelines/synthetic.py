"""Synthetic pipelines for the benchmark (`python -m rasfw.app.bench`): the transformer of a real model family
with random weights, its scheduler, and fixed random latents and text embeddings, in the denoising loop of
the family's diffusers pipeline. Speed does not depend on the weights, so these time what the real models
would, without downloading them.

`build_synthetic(preset, seed)` builds the one a bench preset names (`conf/preset/<name>.yaml`: `SD3Synthetic`,
`LuminaNextSynthetic`, `FluxSynthetic`, `WanSynthetic`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from rasfw.pipelines.loop import denoise


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly in `dtype` (a multi-billion-parameter model never exists in float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class SyntheticPipeline:
    """A transformer with random weights, its scheduler, and fixed random latents and text embeddings.

    `__call__(steps, guidance)` is the denoising loop of the family's diffusers pipeline: one transformer
    call per step (classifier-free guidance by stacking the batch where the family uses it), then
    `scheduler.step`. Subclasses build the model and the inputs of one call.

    Args:
        preset: the preset's settings (`conf/preset/<name>.yaml`).
        seed: seeds the weights, the latents and the embeddings.
    """

    family: ClassVar[str] = ""
    guidance: ClassVar[float] = 7.0
    calls_per_step: int = 1  # transformer calls per step (two for Wan's separate CFG calls)

    def __init__(self, preset: DictConfig, seed: int) -> None:
        self.preset = preset
        self.device = torch.device(preset.device)
        self.dtype = getattr(torch, preset.dtype)
        self.rows = 2 if preset.get("cfg", False) else 1  # transformer batch: the two CFG halves
        torch.manual_seed(seed)
        with torch.device(self.device), _default_dtype(self.dtype):  # in place: GPU presets have billions of weights
            transformer = self.build(preset)
        # nn.Module.to: diffusers' own `to` warns about fp32-only modules that these models do not have
        self.transformer = torch.nn.Module.to(transformer, self.device, self.dtype).eval()
        self.scheduler = self.make_scheduler()
        self.generator = torch.Generator().manual_seed(seed)
        self.latents = self.randn(*self.latent_shape())

    @property
    def num_tokens(self) -> int:
        """Image tokens per image."""
        return (self.preset.latent_side // self.preset.patch) ** 2

    def randn(self, *shape: int) -> torch.Tensor:
        """Fixed random numbers of `shape` on the pipeline's device and dtype."""
        return torch.randn(*shape, generator=self.generator).to(self.device, self.dtype)

    @torch.no_grad()
    def __call__(self, steps: int, guidance: float | None = None) -> torch.Tensor:
        guidance = self.guidance if guidance is None else guidance
        self.set_timesteps(steps)
        return denoise(self.scheduler, self.latents.clone(), lambda latents, t: self.model_output(latents, t, guidance))

    def model_output(self, latents: torch.Tensor, t: torch.Tensor, guidance: float) -> torch.Tensor:
        """The step's model output for the scheduler: one transformer call, CFG applied."""
        with self.context():
            out = self.transformer(**self.call_inputs(latents, t, guidance), return_dict=False)[0]
        return self.prediction(out, guidance)

    # -- what each family provides ------------------------------------------------------------------

    def build(self, preset: DictConfig) -> torch.nn.Module:
        """The transformer (built under the target device and dtype)."""
        raise NotImplementedError

    def make_scheduler(self) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler()

    def latent_shape(self) -> tuple[int, ...]:
        side = self.preset.latent_side
        return (1, self.preset.channels, side, side)

    def set_timesteps(self, steps: int) -> None:
        self.scheduler.set_timesteps(steps, device=self.device)

    def context(self) -> AbstractContextManager[Any]:
        """The cache context each transformer call runs in (diffusers' Flux pipeline names it "cond")."""
        return nullcontext()

    def call_inputs(self, latents: torch.Tensor, t: torch.Tensor, guidance: float) -> dict[str, Any]:
        """Keyword arguments of the transformer call at scheduler timestep `t` (a 0-d tensor)."""
        raise NotImplementedError

    def prediction(self, out: torch.Tensor, guidance: float) -> torch.Tensor:
        """The model output the scheduler steps with, from the transformer's output (CFG applied)."""
        if self.rows == 1:
            return out
        uncond, cond = out.chunk(2)
        return uncond + guidance * (cond - uncond)


class SD3Synthetic(SyntheticPipeline):
    """`SD3Transformer2DModel` in the loop of diffusers' `StableDiffusion3Pipeline` (CFG rows [uncond, cond])."""

    family = "sd3"

    def __init__(self, preset: DictConfig, seed: int) -> None:
        super().__init__(preset, seed)
        self.context_embeds = self.randn(self.rows, preset.context, preset.text_dim)  # (Bt, T, text_dim)
        self.pooled = self.randn(self.rows, preset.pooled_dim)  # (Bt, pooled_dim)

    def build(self, preset: DictConfig) -> torch.nn.Module:
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel(
            sample_size=preset.latent_side,
            patch_size=preset.patch,
            in_channels=preset.channels,
            out_channels=preset.channels,
            num_layers=preset.layers,
            attention_head_dim=preset.head_dim,
            num_attention_heads=preset.heads,
            joint_attention_dim=preset.text_dim,
            caption_projection_dim=preset.heads * preset.head_dim,
            pooled_projection_dim=preset.pooled_dim,
            pos_embed_max_size=max(preset.latent_side // preset.patch, 96),
        )

    def make_scheduler(self) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(shift=3.0)

    def call_inputs(self, latents: torch.Tensor, t: torch.Tensor, guidance: float) -> dict[str, Any]:
        x = torch.cat([latents] * self.rows)  # (Bt, C, H, W)
        return {
            "hidden_states": x,
            "encoder_hidden_states": self.context_embeds,
            "pooled_projections": self.pooled,
            "timestep": t.expand(x.shape[0]).to(self.dtype),
        }


class LuminaNextSynthetic(SyntheticPipeline):
    """`LuminaNextDiT2DModel` in the loop of diffusers' `LuminaPipeline` (rows [cond, uncond], t reversed).

    The model runs at its native size (`sample_size` = the latent side), so the pipeline's resolution
    scaling factor is 1 and the rotary table is the same at every step; proportional attention uses the
    pipeline's base sequence length `(8 * sample_size / 16) ** 2`.
    """

    family = "lumina_next"
    guidance = 4.0

    def __init__(self, preset: DictConfig, seed: int) -> None:
        from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

        super().__init__(preset, seed)
        self.context_embeds = self.randn(self.rows, preset.context, preset.text_dim)  # (Bt, T, text_dim)
        self.mask = torch.ones(self.rows, preset.context, dtype=torch.long, device=self.device)  # (Bt, T)
        self.rotary = get_2d_rotary_pos_embed_lumina(self.transformer.head_dim, 384, 384).to(self.device)
        self.base_sequence_length = (8 * preset.latent_side // 16) ** 2

    def build(self, preset: DictConfig) -> torch.nn.Module:
        from diffusers import LuminaNextDiT2DModel

        return LuminaNextDiT2DModel(
            sample_size=preset.latent_side,
            patch_size=preset.patch,
            in_channels=preset.channels,
            hidden_size=preset.heads * preset.head_dim,
            num_layers=preset.layers,
            num_attention_heads=preset.heads,
            num_kv_heads=preset.kv_heads,
            learn_sigma=True,
            qk_norm=True,
            cross_attention_dim=preset.text_dim,
            scaling_factor=1.0,
        )

    def call_inputs(self, latents: torch.Tensor, t: torch.Tensor, guidance: float) -> dict[str, Any]:
        x = torch.cat([latents] * self.rows)  # (Bt, C, H, W)
        timestep = 1 - t.expand(x.shape[0]) / self.scheduler.config.num_train_timesteps  # Lumina: t=0 is noise
        return {
            "hidden_states": x,
            "timestep": timestep,
            "encoder_hidden_states": self.context_embeds,
            "encoder_mask": self.mask,
            "image_rotary_emb": self.rotary,
            "cross_attention_kwargs": {"base_sequence_length": self.base_sequence_length},
        }

    def prediction(self, out: torch.Tensor, guidance: float) -> torch.Tensor:
        out = out.chunk(2, dim=1)[0]  # (Bt, C, H, W): drop learn_sigma's variance channels
        if self.rows == 2:
            cond, uncond = out.chunk(2)
            out = uncond + guidance * (cond - uncond)
        return -out  # the pipeline steps with the negated velocity


class FluxSynthetic(SyntheticPipeline):
    """`FluxTransformer2DModel` in the loop of diffusers' `FluxPipeline`: packed 2x2 latents, position ids,
    the guidance embedding, one call per step in cache context "cond", resolution-dependent shift."""

    family = "flux"
    guidance = 3.5

    def __init__(self, preset: DictConfig, seed: int) -> None:
        super().__init__(preset, seed)
        self.context_embeds = self.randn(1, preset.context, preset.text_dim)  # (1, T, text_dim)
        self.pooled = self.randn(1, preset.pooled_dim)  # (1, pooled_dim)
        from rasfw.adapters.flux import latent_image_ids

        side = preset.latent_side // preset.patch
        self.img_ids = latent_image_ids(side, side).to(self.device, self.dtype)  # (N, 3): (0, row, col)
        self.txt_ids = torch.zeros(preset.context, 3, device=self.device, dtype=self.dtype)  # (T, 3)

    def build(self, preset: DictConfig) -> torch.nn.Module:
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=preset.channels * preset.patch**2,
            num_layers=preset.layers,
            num_single_layers=preset.single_layers,
            attention_head_dim=preset.head_dim,
            num_attention_heads=preset.heads,
            joint_attention_dim=preset.text_dim,
            pooled_projection_dim=preset.pooled_dim,
            guidance_embeds=True,
            axes_dims_rope=tuple(preset.rope_axes),
        )

    def make_scheduler(self) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(  # Flux.1-dev's settings
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
            max_image_seq_len=4096,
        )  # fmt: skip

    def latent_shape(self) -> tuple[int, ...]:
        return (1, self.num_tokens, self.preset.channels * self.preset.patch**2)  # (B, N, C * 4) packed

    def set_timesteps(self, steps: int) -> None:
        c = self.scheduler.config  # diffusers' `calculate_shift`: mu linear in the image sequence length
        slope = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len)
        mu = c.base_shift + slope * (self.num_tokens - c.base_image_seq_len)
        self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device=self.device)
        self.scheduler.set_begin_index(0)

    def context(self) -> AbstractContextManager[Any]:
        return self.transformer.cache_context("cond")

    def call_inputs(self, latents: torch.Tensor, t: torch.Tensor, guidance: float) -> dict[str, Any]:
        rows = latents.shape[0]
        return {
            "hidden_states": latents,  # (B, N, C * 4)
            "timestep": t.expand(rows).to(latents.dtype) / 1000,
            "guidance": torch.full((rows,), guidance, device=self.device, dtype=torch.float32),
            "pooled_projections": self.pooled,
            "encoder_hidden_states": self.context_embeds,
            "txt_ids": self.txt_ids,
            "img_ids": self.img_ids,
        }


class WanSynthetic(SyntheticPipeline):
    """`WanTransformer3DModel` in the loop of diffusers' `WanPipeline`: a video latent `(1, C, F, H, W)`, and
    with CFG two calls per step, `cond` then `uncond`, each in its own cache context (batch 1 each).

    Preset keys besides the common ones: `latent_frames`, `latent_height`, `latent_width` (the latent of
    `4 * (latent_frames - 1) + 1` video frames at `8 * latent_height x 8 * latent_width` pixels), `ffn_dim`.
    """

    family = "wan"
    guidance = 5.0

    def __init__(self, preset: DictConfig, seed: int) -> None:
        super().__init__(preset, seed)
        self.calls_per_step = self.rows  # the CFG halves are two calls, not one stacked batch
        self.context_embeds = self.randn(self.rows, 1, preset.context, preset.text_dim)  # per call: (1, T, text_dim)

    @property
    def num_tokens(self) -> int:
        p = self.preset
        return p.latent_frames * (p.latent_height // p.patch) * (p.latent_width // p.patch)

    def build(self, preset: DictConfig) -> torch.nn.Module:
        from diffusers import WanTransformer3DModel

        return WanTransformer3DModel(
            patch_size=(1, preset.patch, preset.patch),
            num_attention_heads=preset.heads,
            attention_head_dim=preset.head_dim,
            in_channels=preset.channels,
            out_channels=preset.channels,
            text_dim=preset.text_dim,
            freq_dim=256,
            ffn_dim=preset.ffn_dim,
            num_layers=preset.layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
        )

    def make_scheduler(self) -> Any:
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)

    def latent_shape(self) -> tuple[int, ...]:
        p = self.preset
        return (1, p.channels, p.latent_frames, p.latent_height, p.latent_width)

    def call_inputs(self, latents: torch.Tensor, t: torch.Tensor, guidance: float, branch: int = 0) -> dict[str, Any]:
        return {
            "hidden_states": latents,  # (1, C, F, H, W)
            "timestep": t.expand(latents.shape[0]),
            "encoder_hidden_states": self.context_embeds[branch],  # (1, T, text_dim)
        }

    def model_output(self, latents: torch.Tensor, t: torch.Tensor, guidance: float) -> torch.Tensor:
        outs = []
        for branch, name in enumerate(("cond", "uncond")[: self.rows]):
            with self.transformer.cache_context(name):
                outs.append(self.transformer(**self.call_inputs(latents, t, guidance, branch), return_dict=False)[0])
        return outs[0] if self.rows == 1 else outs[1] + guidance * (outs[0] - outs[1])


def build_synthetic(preset: DictConfig, seed: int) -> SyntheticPipeline:
    """The synthetic pipeline of `preset.family` ("sd3", "lumina_next", "flux" or "wan").

    Raises:
        ValueError: unknown family.
    """
    classes = {cls.family: cls for cls in (SD3Synthetic, LuminaNextSynthetic, FluxSynthetic, WanSynthetic)}
    family = preset.get("family", "sd3")
    if family not in classes:
        raise ValueError(f"preset.family must be one of {', '.join(classes)}; got {family!r}")
    return classes[family](preset, seed)
