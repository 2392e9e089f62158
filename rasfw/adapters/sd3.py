"""Adapter for diffusers' `SD3Transformer2DModel` (SD3 and SD3.5: qk-norm, dual-attention layers).

What is cached: per attention module, the image-stream keys (before qk-norm) and values, `(Bt, N, D)`;
the text (context) stream is always computed in full. Positions are absolute (added by `pos_embed`
before the active tokens are kept), so no positional bookkeeping is needed.
"""

from __future__ import annotations

import torch
from diffusers import SD3Transformer2DModel
from diffusers.models.attention_processor import Attention

from rasfw.adapters.base import ProjectionCacheAdapter
from rasfw.interfaces import TokenGrid
from rasfw.registry import register


@register("adapter", "sd3")
class SD3Adapter(ProjectionCacheAdapter):
    """RAS for `SD3Transformer2DModel`: any patch size, batch, CFG and non-square latents."""

    model_class_name = "SD3Transformer2DModel"
    model_classes = (SD3Transformer2DModel,)
    patch_embed = "pos_embed"
    proj_out = "proj_out"
    attention_classes = (Attention,)

    def __init__(self) -> None:
        super().__init__()
        self._patch = 0
        self._channels = 0

    def install(self, model, state, backend) -> None:
        self._patch = int(model.config.patch_size)
        self._channels = int(model.config.out_channels)
        super().install(model, state, backend)

    def grid(self, latents: torch.Tensor) -> TokenGrid:
        height, width = latents.shape[-2:]
        p = self._patch
        if height % p or width % p:
            raise ValueError(f"height and width must be divisible by the patch size {p}; got latent {height}x{width}")
        return TokenGrid(height // p, width // p, p, self._channels)
