"""The pipelines of the compatibility matrix (`docs/compatibility.md`): diffusers' own pipeline classes around tiny
parts, each with the keyword arguments of one call (fresh generators every time, so calls are repeatable).

A `Case` builds its pipeline and its call; `tests/adapters/test_matrix.py` runs every feature against every case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetPipeline,
    FluxFillPipeline,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusion3ControlNetPipeline,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
    StableDiffusion3Pipeline,
)
from diffusers.models import FluxControlNetModel, SD3ControlNetModel

from rasfw import RegionAdaptiveSampler
from rasfw.adapters.flux import pack_latents
from rasfw.pipelines.tiny import (
    LATENT_CHANNELS,
    POOLED_DIM,
    TEXT_DIM,
    TEXT_LEN,
    _seeded,
    flux_scheduler,
    tiny_flux_pipeline,
    tiny_flux_transformer,
    tiny_lumina_next_pipeline,
    tiny_sd3_transformer,
    tiny_vae,
    tiny_wan_pipeline,
)
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset, NoReset
from rasfw.testing.tiny import VAE_SCALE, per_image

STEPS = 6
HEIGHT, WIDTH = 8, 12  # latent pixels
NO_TEXT_ENCODERS = dict.fromkeys(("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"))


@dataclass
class Case:
    """One pipeline of the matrix.

    Attributes:
        make: builds the pipeline (tiny parts, fixed seeds).
        inputs: the keyword arguments of one call for a `Request` (fresh generators each time).
        contexts: the pipeline opens `transformer.cache_context(name)` per call (diffusers' step caches need it).
        sibling: a pipeline class `from_pipe` makes of it (sharing transformer and scheduler), or None.
        sibling_inputs: that sibling's call.
        lora: modules a LoRA targets (the attention projections and the output projection RAS hooks).
    """

    make: Callable[[], Any]
    inputs: Callable[..., dict]
    contexts: bool = False
    sibling: type | None = None
    sibling_inputs: Callable[[], dict] | None = None
    lora: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "proj_out"])


def exact() -> RegionAdaptiveSampler:
    """RAS at ratio 1: bit for bit the plain pipeline."""
    return RegionAdaptiveSampler(ratio=ConstantRatio(1.0, 2), reset=NoReset())


def quarter() -> RegionAdaptiveSampler:
    """RAS at 0.25 after 2 warm-up steps, a reset at step 4."""
    return RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 2), reset=FixedReset([4]))


def call(pipe, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        out = pipe(**inputs)
    return out.frames if hasattr(out, "frames") else out.images


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Request:
    """What one call asks for: steps, images, and the latent size (the pipeline's pixels are 8x that)."""

    steps: int = STEPS
    batch: int = 1
    height: int = HEIGHT
    width: int = WIDTH


def pixels(r: Request, seed: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(r.batch, channels, r.height * VAE_SCALE, r.width * VAE_SCALE, generator=generator(seed))


def mask(r: Request) -> torch.Tensor:
    m = torch.zeros(r.batch, 1, r.height * VAE_SCALE, r.width * VAE_SCALE)
    m[..., : r.height * VAE_SCALE // 2, :] = 1.0
    return m


# -- SD3 ------------------------------------------------------------------------------------------------------


def sd3_parts(sd35: bool = False) -> dict:
    none = dict.fromkeys(("text_encoder_3", "tokenizer_3"))
    return {"transformer": tiny_sd3_transformer(0, 2, sd35), "scheduler": FlowMatchEulerDiscreteScheduler(),
            "vae": tiny_vae(1), **NO_TEXT_ENCODERS, **none}  # fmt: skip


def sd3(cls=StableDiffusion3Pipeline, sd35: bool = False, **extra) -> Any:
    pipe = cls(**sd3_parts(sd35), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_text(r: Request = Request()) -> dict:
    text, pooled, neg_text, neg_pooled = per_image(r.batch, 0, (TEXT_LEN, TEXT_DIM), (POOLED_DIM,), (TEXT_LEN, TEXT_DIM), (POOLED_DIM,))
    return {"prompt_embeds": text, "pooled_prompt_embeds": pooled, "negative_prompt_embeds": neg_text,
            "negative_pooled_prompt_embeds": neg_pooled, "num_inference_steps": r.steps, "guidance_scale": 3.0,
            "output_type": "latent"}  # fmt: skip


def sd3_txt2img(r: Request = Request()) -> dict:
    (latents,) = per_image(r.batch, 1, (LATENT_CHANNELS, r.height, r.width))
    return {**sd3_text(r), "latents": latents, "height": r.height * VAE_SCALE, "width": r.width * VAE_SCALE}


def sd3_img2img(r: Request = Request()) -> dict:
    return {**sd3_text(r), "image": pixels(r, 5), "strength": 0.8, "generator": generator()}


def sd3_inpaint(r: Request = Request()) -> dict:
    return {**sd3_img2img(r), "mask_image": mask(r), "height": r.height * VAE_SCALE, "width": r.width * VAE_SCALE}


def sd3_inpaint_pipeline() -> StableDiffusion3InpaintPipeline:
    """SD3 inpainting checks for SD3's 16 latent channels: a tiny VAE and transformer with 16."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    with _seeded(1):
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 4, 16), layers_per_block=1,
            latent_channels=16, norm_num_groups=2, sample_size=64, scaling_factor=1.0, shift_factor=0.0,
        ).eval()  # fmt: skip
    with _seeded(0):
        transformer = SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=TEXT_DIM, caption_projection_dim=16, pooled_projection_dim=POOLED_DIM,
            out_channels=16, pos_embed_max_size=32,
        ).eval()  # fmt: skip
    parts = {**sd3_parts(), "transformer": transformer, "vae": vae}
    pipe = StableDiffusion3InpaintPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_controlnet_model(seed: int = 3) -> SD3ControlNetModel:
    with _seeded(seed):
        model = SD3ControlNetModel(
            sample_size=16, patch_size=2, in_channels=LATENT_CHANNELS, num_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, caption_projection_dim=16,
            pooled_projection_dim=POOLED_DIM, out_channels=LATENT_CHANNELS, pos_embed_max_size=32,
        )  # fmt: skip
        for block in model.controlnet_blocks:  # they start at zero: give the residuals signal
            torch.nn.init.normal_(block.weight, std=0.2)
    return model.eval()


def sd3_controlnet_inputs(r: Request = Request()) -> dict:
    return {**sd3_txt2img(r), "control_image": pixels(r, 7), "controlnet_conditioning_scale": 0.7}


def sd3_slg_inputs(r: Request = Request()) -> dict:
    return {**sd3_txt2img(r), "skip_guidance_layers": [1], "skip_layer_guidance_start": 0.1, "skip_layer_guidance_stop": 0.7}


# -- Flux -----------------------------------------------------------------------------------------------------


def flux(cls=FluxPipeline, transformer=None, **extra) -> Any:
    pipe = cls(transformer=transformer or tiny_flux_transformer(), scheduler=flux_scheduler(), vae=tiny_vae(1),
               **NO_TEXT_ENCODERS, **extra)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_text(r: Request = Request(), guidance: float = 3.5) -> dict:
    text, pooled = per_image(r.batch, 0, (TEXT_LEN, TEXT_DIM), (POOLED_DIM,))
    return {"prompt_embeds": text, "pooled_prompt_embeds": pooled, "num_inference_steps": r.steps,
            "guidance_scale": guidance, "output_type": "latent", "height": r.height * VAE_SCALE,
            "width": r.width * VAE_SCALE}  # fmt: skip


def flux_txt2img(r: Request = Request()) -> dict:
    (latents,) = per_image(r.batch, 1, (LATENT_CHANNELS, r.height, r.width))
    return {**flux_text(r), "latents": pack_latents(latents)}


def flux_img2img(r: Request = Request()) -> dict:
    return {**flux_text(r), "image": pixels(r, 5), "strength": 0.8, "generator": generator()}


def flux_inpaint(r: Request = Request()) -> dict:
    return {**flux_img2img(r), "mask_image": mask(r)}


def flux_fill_transformer() -> FluxTransformer2DModel:
    """Flux Fill's layout: the packed latents, the masked image's latents and the packed 8x8 mask per token in."""
    packed = LATENT_CHANNELS * 4
    with _seeded(0):
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=2 * packed + VAE_SCALE * VAE_SCALE * 4, out_channels=packed, num_layers=1,
            num_single_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
            pooled_projection_dim=POOLED_DIM, guidance_embeds=True, axes_dims_rope=(2, 2, 4),
        )  # fmt: skip
    return model.eval()


def flux_fill(r: Request = Request()) -> dict:
    return {**flux_text(r), "image": pixels(r, 5), "mask_image": mask(r), "generator": generator()}


def flux_controlnet_model(seed: int = 3) -> FluxControlNetModel:
    with _seeded(seed):
        model = FluxControlNetModel(
            patch_size=1, in_channels=LATENT_CHANNELS * 4, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
            guidance_embeds=True, axes_dims_rope=(2, 2, 4),
        )  # fmt: skip
        for block in [*model.controlnet_blocks, *model.controlnet_single_blocks, model.controlnet_x_embedder]:
            torch.nn.init.normal_(block.weight, std=0.2)
    return model.eval()


def flux_controlnet_inputs(r: Request = Request()) -> dict:
    return {**flux_txt2img(r), "control_image": pixels(r, 7), "controlnet_conditioning_scale": 0.7, "generator": generator()}


def flux_true_cfg(r: Request = Request()) -> dict:
    neg_text, neg_pooled = per_image(r.batch, 9, (TEXT_LEN, TEXT_DIM), (POOLED_DIM,))
    return {**flux_txt2img(r), "negative_prompt_embeds": neg_text, "negative_pooled_prompt_embeds": neg_pooled,
            "true_cfg_scale": 2.0}  # fmt: skip


def flux_img2img_true_cfg(r: Request = Request()) -> dict:
    """Flux img2img's true CFG calls the transformer twice a step without `cache_context`."""
    neg_text, neg_pooled = per_image(r.batch, 9, (TEXT_LEN, TEXT_DIM), (POOLED_DIM,))
    return {**flux_img2img(r), "negative_prompt_embeds": neg_text, "negative_pooled_prompt_embeds": neg_pooled,
            "true_cfg_scale": 2.0}  # fmt: skip


# -- Lumina-Next, Wan ---------------------------------------------------------------------------------------------


def lumina_inputs(r: Request = Request()) -> dict:
    latents, text, neg_text = per_image(r.batch, 0, (LATENT_CHANNELS, r.height, r.width), (TEXT_LEN, TEXT_DIM), (TEXT_LEN, TEXT_DIM))
    m = torch.ones(r.batch, TEXT_LEN, dtype=torch.long)
    return {"prompt_embeds": text, "prompt_attention_mask": m, "negative_prompt_embeds": neg_text,
            "negative_prompt_attention_mask": m, "latents": latents, "height": r.height * VAE_SCALE,
            "width": r.width * VAE_SCALE, "num_inference_steps": r.steps, "guidance_scale": 3.0,
            "output_type": "latent"}  # fmt: skip


def wan_inputs(r: Request = Request()) -> dict:
    from rasfw.pipelines.tiny import WAN_LATENT_CHANNELS

    latents, text, negative = per_image(r.batch, 0, (WAN_LATENT_CHANNELS, 3, r.height, r.width), (TEXT_LEN, TEXT_DIM), (TEXT_LEN, TEXT_DIM))
    return {"prompt_embeds": text, "negative_prompt_embeds": negative, "latents": latents, "height": r.height * VAE_SCALE,
            "width": r.width * VAE_SCALE, "num_frames": 9, "num_inference_steps": r.steps, "guidance_scale": 3.0,
            "output_type": "latent"}  # fmt: skip


CASES: dict[str, Case] = {
    "sd3": Case(sd3, sd3_txt2img, sibling=StableDiffusion3Img2ImgPipeline, sibling_inputs=sd3_img2img),
    "sd3_img2img": Case(lambda: sd3(StableDiffusion3Img2ImgPipeline), sd3_img2img),
    "sd3_inpaint": Case(sd3_inpaint_pipeline, sd3_inpaint),
    "sd3_controlnet": Case(lambda: sd3(StableDiffusion3ControlNetPipeline, controlnet=sd3_controlnet_model()),
                           sd3_controlnet_inputs),
    "sd3_skip_layer_guidance": Case(sd3, sd3_slg_inputs),
    "sd35": Case(lambda: sd3(sd35=True), sd3_txt2img),
    "flux": Case(lambda: tiny_flux_pipeline(), flux_txt2img, contexts=True, sibling=FluxImg2ImgPipeline,
                 sibling_inputs=flux_img2img, lora=["to_q", "to_k", "to_v", "proj_out", "x_embedder"]),
    "flux_img2img": Case(lambda: flux(FluxImg2ImgPipeline), flux_img2img),
    "flux_inpaint": Case(lambda: flux(FluxInpaintPipeline), flux_inpaint),
    "flux_fill": Case(lambda: flux(FluxFillPipeline, flux_fill_transformer()), flux_fill),
    "flux_controlnet": Case(lambda: flux(FluxControlNetPipeline, controlnet=flux_controlnet_model()),
                            flux_controlnet_inputs),
    "flux_true_cfg": Case(lambda: tiny_flux_pipeline(), flux_true_cfg, contexts=True),
    "flux_img2img_true_cfg": Case(lambda: flux(FluxImg2ImgPipeline), flux_img2img_true_cfg),
    "lumina_next": Case(lambda: tiny_lumina_next_pipeline(), lumina_inputs, lora=["to_q", "to_k", "to_v", "to_out.0"]),
    "wan2.1": Case(lambda: tiny_wan_pipeline(), wan_inputs, contexts=True),
    "wan2.2": Case(lambda: tiny_wan_pipeline(two_stage=True), wan_inputs, contexts=True),
}
"""The matrix's rows, by the name `docs/compatibility.md` gives them."""
