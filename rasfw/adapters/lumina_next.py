"""Adapter for diffusers' `LuminaNextDiT2DModel` (Lumina-Next: 2D RoPE, grouped-query attention).

What is cached: per self-attention module (`attn1` of each block), the image keys after qk-norm *and*
RoPE, and the values, `(Bt, N, kv_heads * head_dim)`; with grouped-query attention that is the
`kv_heads` heads, not the query heads (attention reads them with `enable_gqa`, no per-layer repeat). The
caption cross-attention (`attn2`) runs for the active queries against the whole caption and needs no cache.

Positions are rotary: the patch embedder returns the tokens together with their key mask and their
rotary frequencies; at a RAS step the tokens, the mask and the frequencies are gathered to the active
tokens, so every active token keeps its own position. The patch embedder marks every image token valid
(its mask is all ones), so attention to the cache needs no key mask. The proportional attention scale
`sqrt(log_base(N)) / sqrt(d)` uses the full image sequence length `N`, not the active count, as the
reference implementation does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import LuminaNextDiT2DModel
from diffusers.hooks import ModelHook
from diffusers.models.attention_processor import LuminaAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.lumina_nextdit2d import LuminaNextDiTBlock

from rasfw.adapters._attention import RASProcessor
from rasfw.adapters.base import ProjectionCacheAdapter
from rasfw.backends.base import TokenBackend
from rasfw.interfaces import TokenGrid
from rasfw.registry import register
from rasfw.state import RegionState


@register("adapter", "lumina_next")
class LuminaNextAdapter(ProjectionCacheAdapter):
    """RAS for `LuminaNextDiT2DModel`: any patch size, batch, CFG and non-square latents."""

    model_class_name = "LuminaNextDiT2DModel"
    model_classes = (LuminaNextDiT2DModel,)
    patch_embed = "patch_embedder"
    proj_out = "norm_out"  # its output `(Bt, N, p * p * out_channels)` is what the model unpatchifies
    processor_classes = (LuminaAttnProcessor2_0,)

    def __init__(self) -> None:
        super().__init__()
        self._patch = 0

    def install(self, model, state, backend) -> None:
        self._patch = int(model.config.patch_size)
        super().install(model, state, backend)  # gather after patch embedding, scatter after norm_out

    def attentions(self, model):
        return [(f"{name}.attn1", m.attn1) for name, m in model.named_modules() if isinstance(m, LuminaNextDiTBlock)]

    def text_tokens(self, args, kwargs) -> int:
        return 0  # self-attention over image tokens only; the caption has its own cross-attention

    def output_width(self, model) -> int:
        return int(model.norm_out.linear_2.out_features)

    def grid(self, latents: torch.Tensor) -> TokenGrid:
        height, width = latents.shape[-2:]
        p = self._patch
        if height % p or width % p:
            raise ValueError(f"height and width must be divisible by the patch size {p}; got latent {height}x{width}")
        # channels from the tensor itself: the model's raw output carries learn_sigma's extra channels
        return TokenGrid(height // p, width // p, p, int(latents.shape[1]))

    def gather_hook(self, state: RegionState, backend: TokenBackend) -> ModelHook:
        return _LuminaGatherHook(state, backend)

    def make_processor(self, attention, name, state, backend):
        return LuminaRASAttnProcessor(attention, attention.processor, name, state, backend)


class _LuminaGatherHook(ModelHook):
    """After `patch_embedder`: at a RAS call keep the active tokens, their mask entries and frequencies."""

    def __init__(self, state: RegionState, backend: TokenBackend) -> None:
        super().__init__()
        self.state, self.backend = state, backend

    def post_forward(self, module, output):
        index = self.state.forward.index
        if index is None:
            return output
        x, mask, img_size, freqs = output  # (Bt, N, D), (Bt, N), sizes, (1, N, head_dim / 2) complex
        freqs = freqs.to(x.device)[0][index]  # (Bt, a, head_dim / 2)
        return self.backend.gather(x, index), torch.gather(mask, 1, index), img_size, freqs


class LuminaRASAttnProcessor(RASProcessor):
    """Lumina-Next self-attention under RAS: rotated keys and values are cached per module.

    Dense call: the original `LuminaAttnProcessor2_0` runs unchanged. Capture or RAS call: queries, keys
    and values of the tokens in the call; their rotated keys and values are written into the cache (all
    rows at a capture call, the active slots at a RAS call), and the queries attend to the whole cache
    (Eq. 2 of the RAS paper) with the proportional scale of all `N` image tokens.
    """

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        query_rotary_emb: torch.Tensor | None = None,
        key_rotary_emb: torch.Tensor | None = None,
        base_sequence_length: int | None = None,
    ) -> torch.Tensor:
        path = self.path()
        if path == "original":
            return self.original(
                attn, hidden_states, encoder_hidden_states, attention_mask, query_rotary_emb, key_rotary_emb,
                base_sequence_length,
            )  # fmt: skip
        b, a, _ = hidden_states.shape  # (Bt, a, D): a = N at a capture call
        query = attn.to_q(hidden_states)  # (Bt, a, heads * head_dim)
        key = attn.to_k(encoder_hidden_states)  # (Bt, a, kv_heads * head_dim)
        dtype, head_dim = query.dtype, query.shape[-1] // attn.heads
        kv_heads = key.shape[-1] // head_dim
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        query = query.view(b, a, attn.heads, head_dim)
        key = key.view(b, a, kv_heads, head_dim)
        if query_rotary_emb is not None:
            query = apply_rotary_emb(query, query_rotary_emb, use_real=False)
        if key_rotary_emb is not None:
            key = apply_rotary_emb(key, key_rotary_emb, use_real=False)
        query, key = query.to(dtype), key.to(dtype)
        if path == "cached":
            cache, index = self.cache(), self.state.forward.index
            cache.write_image("key", key.flatten(2), index)
            cache.project_image("value", attn.to_v, encoder_hidden_states, index, self.backend)
            key, value, mask, keys = cache.key, cache.value, None, cache.key.shape[1]
        else:  # RAS without the cache: inactive tokens drop out of attention
            value, mask, keys = attn.to_v(encoder_hidden_states), attention_mask.bool().view(b, 1, 1, a), a
        key, value = key.view(b, keys, kv_heads, head_dim), value.view(b, keys, kv_heads, head_dim)
        scale = None
        if key_rotary_emb is not None:  # proportional attention over the full image sequence length
            n = self.state.num_tokens
            scale = attn.scale if base_sequence_length is None else math.sqrt(math.log(n, base_sequence_length)) * attn.scale
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask, scale=scale,
            enable_gqa=kv_heads != attn.heads,
        )  # (Bt, heads, a, head_dim)
        return out.transpose(1, 2).to(dtype)  # (Bt, a, heads, head_dim)
