"""Tiny, randomly initialised diffusers pipelines (SD3, Lumina-Next, Flux, Wan), built offline from small configs.

They run the unmodified diffusers pipeline classes with a few-thousand-parameter transformer and VAE,
no text encoders (prompt embeddings are passed in), and weights that depend only on a seed. They exist
so that tests and `python -m rasfw model=<family>_tiny` exercise the real pipelines anywhere, in seconds.
The pictures they make are noise: judge speed and exactness with them, never quality.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    LuminaNextDiT2DModel,
    LuminaPipeline,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)

LATENT_CHANNELS = 4
TEXT_DIM, POOLED_DIM, TEXT_LEN = 32, 16, 8
"""Width of the prompt embeddings, of the pooled embedding, and the number of text tokens."""


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Initialise modules from `seed` without touching the caller's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _perturb_zeros(model: torch.nn.Module, seed: int, std: float = 0.5) -> None:
    """Give zero-initialised parameters (gates) random values so every path carries signal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=gen) * std)


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 4-level VAE (8× down-sampling, as the real models) with 4 latent channels and 4 features per level."""
    with _seeded(seed):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(4, 4, 4, 4),
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=2,
            sample_size=64,
            scaling_factor=1.0,
            shift_factor=0.0,
        )
    return vae.eval()


def tiny_sd3_transformer(seed: int = 0, patch_size: int = 2, sd35: bool = False) -> SD3Transformer2DModel:
    """A 2-layer `SD3Transformer2DModel`, hidden 16; `sd35` adds qk-norm and a dual-attention layer."""
    extra = {"qk_norm": "rms_norm", "dual_attention_layers": (0,)} if sd35 else {}
    with _seeded(seed):
        model = SD3Transformer2DModel(
            sample_size=16,
            patch_size=patch_size,
            in_channels=LATENT_CHANNELS,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=TEXT_DIM,
            caption_projection_dim=16,
            pooled_projection_dim=POOLED_DIM,
            out_channels=LATENT_CHANNELS,
            pos_embed_max_size=32,
            **extra,
        )
    return model.eval()


def tiny_lumina_next_transformer(seed: int = 0, patch_size: int = 2) -> LuminaNextDiT2DModel:
    """A 2-layer `LuminaNextDiT2DModel`, hidden 32, 4 query heads sharing 2 key/value heads (GQA)."""
    with _seeded(seed):
        model = LuminaNextDiT2DModel(
            sample_size=16,
            patch_size=patch_size,
            in_channels=LATENT_CHANNELS,
            hidden_size=32,
            num_layers=2,
            num_attention_heads=4,
            num_kv_heads=2,
            multiple_of=16,
            learn_sigma=True,
            qk_norm=True,
            cross_attention_dim=TEXT_DIM,
        )
        torch.nn.init.normal_(model.pad_token, std=0.02)  # allocated uninitialised (and unused by forward)
    _perturb_zeros(model, seed)  # the cross-attention gates start at zero
    return model.eval()


def tiny_flux_transformer(seed: int = 0) -> FluxTransformer2DModel:
    """A `FluxTransformer2DModel` with 1 double-stream and 2 single-stream blocks and a guidance embedding."""
    with _seeded(seed):
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=LATENT_CHANNELS * 4,
            num_layers=1,
            num_single_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=TEXT_DIM,
            pooled_projection_dim=POOLED_DIM,
            guidance_embeds=True,
            axes_dims_rope=(2, 2, 4),
        )
    return model.eval()


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Flux.1's scheduler settings (resolution-dependent shift)."""
    return FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def tiny_sd3_pipeline(seed: int = 0, patch_size: int = 2) -> StableDiffusion3Pipeline:
    """diffusers' `StableDiffusion3Pipeline` around tiny random parts, without text encoders."""
    none = dict.fromkeys(
        ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
    )
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed, patch_size),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_vae(seed + 1),
        **none,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_lumina_next_pipeline(seed: int = 0, patch_size: int = 2) -> LuminaPipeline:
    """diffusers' `LuminaPipeline` (Lumina-Next) around tiny random parts, without a text encoder."""
    pipe = LuminaPipeline(
        transformer=tiny_lumina_next_transformer(seed, patch_size),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_vae(seed + 1),
        text_encoder=None,
        tokenizer=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_pipeline(seed: int = 0) -> FluxPipeline:
    """diffusers' `FluxPipeline` around tiny random parts (guidance-distilled layout), without text encoders."""
    pipe = FluxPipeline(
        transformer=tiny_flux_transformer(seed),
        scheduler=flux_scheduler(),
        vae=tiny_vae(seed + 1),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


WAN_LATENT_CHANNELS = 4


def tiny_wan_vae(seed: int = 0) -> AutoencoderKLWan:
    """Wan's causal video VAE at its real strides (8x in space, 4x in time) with 4 latent channels."""
    with _seeded(seed):
        vae = AutoencoderKLWan(
            base_dim=4,
            z_dim=WAN_LATENT_CHANNELS,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * WAN_LATENT_CHANNELS,
            latents_std=[1.0] * WAN_LATENT_CHANNELS,
        )
    return vae.eval()


def tiny_wan_transformer(seed: int = 0) -> WanTransformer3DModel:
    """A 2-layer `WanTransformer3DModel`, hidden 24 (2 heads of 12), Wan's `patch_size=(1, 2, 2)`."""
    with _seeded(seed):
        model = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=WAN_LATENT_CHANNELS,
            out_channels=WAN_LATENT_CHANNELS,
            text_dim=TEXT_DIM,
            freq_dim=32,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
    return model.eval()


def tiny_wan_pipeline(seed: int = 0, two_stage: bool = False) -> WanPipeline:
    """diffusers' `WanPipeline` around tiny random parts, without a text encoder.

    `two_stage` builds the Wan 2.2 layout: a second transformer (`transformer_2`, seeded `seed + 2`) for
    the low-noise steps after the boundary (`boundary_ratio=0.875`, as Wan 2.2 T2V-A14B).
    """
    extra = {"transformer_2": tiny_wan_transformer(seed + 2), "boundary_ratio": 0.875} if two_stage else {}
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=tiny_wan_vae(seed + 1),
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        transformer=tiny_wan_transformer(seed),
        **extra,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_seed(text: str) -> int:
    """A seed that depends on the prompt text only (stable across processes, unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def prompt_embeddings(prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stand-ins for text-encoder outputs: `(B, TEXT_LEN, TEXT_DIM)` and pooled `(B, POOLED_DIM)`."""
    tokens, pooled = [], []
    for text in prompts:
        gen = torch.Generator().manual_seed(prompt_seed(text))
        tokens.append(torch.randn(TEXT_LEN, TEXT_DIM, generator=gen))
        pooled.append(torch.randn(POOLED_DIM, generator=gen))
    return torch.stack(tokens), torch.stack(pooled)
