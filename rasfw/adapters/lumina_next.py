"""Adapter for diffusers' `LuminaNextDiT2DModel` (Lumina-Next: 2D RoPE, grouped-query attention).

What is cached: per self-attention module (`attn1` of each block), the image keys after qk-norm *and*
RoPE, and the values, `(Bt, N, kv_heads * head_dim)`; with grouped-query attention that is the
`kv_heads` heads, not the query heads. The caption cross-attention (`attn2`) runs for the active queries
against the whole caption and needs no cache.

Positions are rotary: the patch embedder returns the tokens together with their key mask and their
rotary frequencies; at a RAS step all three are gathered to the active tokens, so every active token
keeps its own position. The proportional attention scale `sqrt(log_base(N)) / sqrt(d)` uses the full
image sequence length `N`, not the active count, as the reference implementation does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import LuminaNextDiT2DModel
from diffusers.models.attention_processor import LuminaAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.lumina_nextdit2d import LuminaNextDiTBlock

from rasfw.adapters._attention import CachingProcessor
from rasfw.adapters.base import ProjectionCacheAdapter
from rasfw.backends.base import TokenBackend
from rasfw.interfaces import TokenGrid
from rasfw.registry import register
from rasfw.state import RegionState


@dataclass
class _ImageTokens:
    """What the patch embedder saw in the transformer call in progress."""

    count: int = 0  # N, image tokens before the active ones are kept
    mask: torch.Tensor | None = None  # (Bt, N) key mask of all image tokens


@register("adapter", "lumina_next")
class LuminaNextAdapter(ProjectionCacheAdapter):
    """RAS for `LuminaNextDiT2DModel`: any patch size, batch, CFG and non-square latents."""

    model_class_name = "LuminaNextDiT2DModel"
    model_classes = (LuminaNextDiT2DModel,)
    patch_embed = "patch_embedder"
    proj_out = "norm_out"  # its output `(Bt, N, p * p * out_channels)` is what the model unpatchifies

    def __init__(self) -> None:
        super().__init__()
        self._patch = 0
        self._tokens = _ImageTokens()

    def install(self, model, state, backend) -> None:
        attns = [
            (f"{name}.attn1", block.attn1)
            for name, block in model.named_modules()
            if isinstance(block, LuminaNextDiTBlock)
        ]
        for name, attn in attns:
            if type(attn.processor) is not LuminaAttnProcessor2_0:
                raise ValueError(
                    f"apply_ras supports Lumina-Next self-attention with LuminaAttnProcessor2_0; "
                    f"{name} uses {type(attn.processor).__name__}"
                )
        self._patch = int(model.config.patch_size)
        super().install(model, state, backend)  # gather after patch embedding, scatter after norm_out
        for name, attn in attns:
            processor = LuminaRASAttnProcessor(attn.processor, name, state, backend, self._tokens)
            processor.attach(attn, attn.norm_k if attn.norm_k is not None else attn.to_k, attn.to_v)
            self._processors.append((attn, processor))

    def grid(self, latents: torch.Tensor) -> TokenGrid:
        height, width = latents.shape[-2:]
        p = self._patch
        if height % p or width % p:
            raise ValueError(f"height and width must be divisible by the patch size {p}; got latent {height}x{width}")
        # channels from the tensor itself: the model's raw output carries learn_sigma's extra channels
        return TokenGrid(height // p, width // p, p, int(latents.shape[1]))

    def _gather_hook(self, state: RegionState, backend: TokenBackend):
        tokens = self._tokens

        def hook(module, args, output):
            x, mask, img_size, freqs = output  # (Bt, N, D), (Bt, N), sizes, (1, N, head_dim / 2) complex
            tokens.count, tokens.mask = x.shape[1], mask
            index = state.forward.index
            if index is None:
                return output
            freqs = freqs.to(x.device)[0][index]  # (Bt, a, head_dim / 2)
            return backend.gather(x, index), torch.gather(mask, 1, index), img_size, freqs

        return hook


class LuminaRASAttnProcessor(CachingProcessor):
    """Lumina-Next self-attention under RAS: rotated keys and values are cached per module.

    Dense call: the original `LuminaAttnProcessor2_0` runs unchanged; at a capture call the keys it
    normalised are rotated with the same frequencies and stored with the values.
    RAS call: queries, keys and values of the active tokens; their rotated keys and values overwrite
    the active slots of the cache, and the active queries attend to the whole cache (Eq. 2 of the RAS
    paper) with the key mask and the proportional scale of all `N` image tokens.
    """

    def __init__(self, original, name, state, backend, tokens: _ImageTokens) -> None:
        super().__init__(original, name, state, backend)
        self.tokens = tokens

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
        args = (attn, hidden_states, encoder_hidden_states, attention_mask)
        if self.state.forward.index is None:
            out, key, value = self.delegate(*args, query_rotary_emb, key_rotary_emb, base_sequence_length)
            if key is not None and value is not None:
                self._store(key, value, key_rotary_emb, attn)
            return out
        return self._partial(*args, query_rotary_emb, key_rotary_emb, base_sequence_length)

    def _store(self, key: torch.Tensor, value: torch.Tensor, freqs: torch.Tensor | None, attn) -> None:
        b, n, width = key.shape  # (Bt, N, kv_heads * head_dim), normalised, not yet rotated
        head_dim = attn.inner_dim // attn.heads
        if freqs is not None:
            key = apply_rotary_emb(key.view(b, n, width // head_dim, head_dim), freqs, use_real=False)
        self.state.kv[self.key_name] = key.reshape(b, n, width).to(value.dtype)
        self.state.kv[self.value_name] = value  # (Bt, N, kv_heads * head_dim)

    def _partial(self, attn, hidden_states, encoder_hidden_states, attention_mask, q_freqs, k_freqs, base_length):
        plan, backend = self.state.forward, self.backend
        b, a, _ = hidden_states.shape  # (Bt, a, D) active tokens
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
        if q_freqs is not None:
            query = apply_rotary_emb(query, q_freqs, use_real=False)
        if k_freqs is not None:
            key = apply_rotary_emb(key, k_freqs, use_real=False)
        query, key = query.to(dtype), key.to(dtype)
        n = self.tokens.count
        if plan.kv_cache:
            key = backend.scatter(self.state.kv[self.key_name], plan.index, key.flatten(2))  # (Bt, N, kv)
            value = self._values(attn, encoder_hidden_states, plan.index)  # (Bt, N, kv)
            mask, keys = self.tokens.mask, n
        else:
            value, mask, keys = attn.to_v(encoder_hidden_states), attention_mask, a  # inactive tokens drop out
        key, value = key.view(b, keys, kv_heads, head_dim), value.view(b, keys, kv_heads, head_dim)
        scale = None
        if k_freqs is not None:  # proportional attention over the full image sequence length
            scale = attn.scale if base_length is None else math.sqrt(math.log(n, base_length)) * attn.scale
        repeats = attn.heads // kv_heads
        key = key.repeat_interleave(repeats, dim=2)  # (Bt, keys, heads, head_dim)
        value = value.repeat_interleave(repeats, dim=2)
        mask = mask.bool().view(b, 1, 1, keys)
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask, scale=scale
        )  # (Bt, heads, a, head_dim)
        return out.transpose(1, 2).to(dtype)  # (Bt, a, heads, head_dim)

    def _values(self, attn, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        cache = self.state.kv[self.value_name]
        if type(attn.to_v) is torch.nn.Linear:  # fused projection + scatter where the backend has one
            return self.backend.linear_scatter(x, attn.to_v.weight, attn.to_v.bias, index, cache)
        return self.backend.scatter(cache, index, attn.to_v(x))
