"""Adapter for diffusers' `SD3Transformer2DModel` (SD3 and SD3.5: qk-norm, dual-attention layers).

What is cached: per attention module, one joint key buffer and one joint value buffer `(Bt, N + T, D)`:
the image keys (after qk-norm) and values at rows `[0, N)`, this call's text (context) keys and values at
rows `[N, N + T)`, the order of SD3's joint attention. The text stream is always computed in full and
written into its rows in place; the image-only second attention of SD3.5's dual-attention layers has no
text rows. Positions are absolute (added by `pos_embed` before the active tokens are kept), so no
positional bookkeeping is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel
from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0

from rasfw.adapters._attention import RASProcessor, heads_view, text_rows, tokens_view
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
    processor_classes = (JointAttnProcessor2_0,)
    token_inputs = ("block_controlnet_hidden_states",)  # SD3 ControlNet: added to the image tokens after a block

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

    def call_variant(self, args, kwargs) -> str:
        """SD3's skip-layer guidance call (`skip_layers=[...]`, an extra call at some steps) skips blocks, so
        its keys, values and outputs differ from the step's ordinary call: it has caches of its own."""
        skip = kwargs.get("skip_layers")
        return f"skip_layers={','.join(str(int(i)) for i in skip)}" if skip else ""

    def make_processor(self, attention, name, state, backend):
        return SD3RASAttnProcessor(attention, attention.processor, name, state, backend)


class SD3RASAttnProcessor(RASProcessor):
    """SD3 joint attention under RAS (Eq. 2 of the RAS paper), on the module's joint key/value buffer.

    Active image queries and all text queries attend to every image key/value (fresh at the active rows,
    cached elsewhere) and to this call's text keys/values, all read from one contiguous buffer per role.
    """

    def joins_text(self) -> bool:
        return getattr(self.attn, "add_k_proj", None) is not None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if self.path() != "cached":  # a plain dense call, or active tokens without the cache: as the original
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        return self._joint(attn, hidden_states, encoder_hidden_states)

    def _joint(self, attn, hidden_states: torch.Tensor, context: torch.Tensor | None):
        cache, index, heads = self.cache(), self.state.forward.index, attn.heads
        batch, active = hidden_states.shape[:2]  # (Bt, a, D): a = N at a capture call
        query = attn.to_q(hidden_states)  # (Bt, a, H * d): queries stay in token layout (see below)
        if attn.norm_q is not None:
            query = tokens_view(attn.norm_q(heads_view(query, heads)))  # the norm keeps the layout: no copy
        if attn.norm_k is not None:
            key = attn.norm_k(heads_view(attn.to_k(hidden_states), heads))
            cache.write_image("key", tokens_view(key), index)
        else:
            cache.project_image("key", attn.to_k, hidden_states, index, self.backend)
        cache.project_image("value", attn.to_v, hidden_states, index, self.backend)
        if context is not None:
            text_query = attn.add_q_proj(context)  # (Bt, T, H * d)
            text_key = heads_view(attn.add_k_proj(context), heads)  # (Bt, H, T, d)
            if attn.norm_added_q is not None:
                text_query = tokens_view(attn.norm_added_q(heads_view(text_query, heads)))
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
            cache.write_text(tokens_view(text_key), attn.add_v_proj(context), text_rows(cache))
            query = torch.cat([query, text_query], dim=1)  # (Bt, a + T, H * d)
        # Joined in token layout, the queries are a head view of a (Bt, S, H * d) tensor, like the keys and values:
        # attention then writes its output in that layout too, and `tokens_view` below is a view, not a copy.
        query = heads_view(query, heads)  # (Bt, H, a + T, d)
        key, value = heads_view(cache.key, heads), heads_view(cache.value, heads)  # (Bt, H, N + T, d)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = tokens_view(out).to(query.dtype)  # (Bt, a + T, H * d)
        image_out = attn.to_out[1](attn.to_out[0](out[:, :active]))
        if context is None:
            return image_out
        text_out = out[:, active:]
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        return image_out, text_out
