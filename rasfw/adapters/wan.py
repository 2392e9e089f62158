"""Adapter for diffusers' `WanTransformer3DModel` (Wan 2.1 and 2.2 video DiTs: 3-D RoPE, RMS qk-norm).

Tokens are the `frames x rows x cols` patches of the video latent (Wan's `patch_size=(1, 2, 2)`), numbered
as the model flattens its Conv3d patch embedding: frame-major, then row, then column. RAS selects among all
space-time tokens at once.

What is cached: per self-attention module (`attn1` of each block), the image keys after qk-norm *and* the
3-D rotary embedding, and the values, `(Bt, N, heads * head_dim)`. The cross-attention to the text
(`attn2`, and the image-conditioning keys of the I2V models) is left alone: its keys and values come from
the prompt, not from the video tokens, so the active queries attend to all of it as they are.

Where the hooks sit: the model's patch embedding is a Conv3d whose output the forward flattens itself, so
the active tokens are kept just before the first block (a pre-forward hook on `blocks[0]`), and the rotary
table `rope` returns is gathered to the active tokens, so every active token keeps its own position. The
output projection `proj_out` scatters into the output cache before the model unpatchifies.

Not supported: per-token timesteps (Wan 2.2 TI2V, `expand_timesteps=True`): their per-token modulation
would have to be gathered too; `apply_ras` refuses them at the first call with one line.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from diffusers.hooks import ModelHook
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanTransformerBlock

from rasfw.adapters._attention import RASProcessor, heads_view, tokens_view
from rasfw.adapters.base import ProjectionCacheAdapter, _argument
from rasfw.adapters.hooks import ScatterHook
from rasfw.backends.base import TokenBackend
from rasfw.interfaces import TokenGrid
from rasfw.registry import register
from rasfw.state import RegionState


@register("adapter", "wan")
class WanAdapter(ProjectionCacheAdapter):
    """RAS for `WanTransformer3DModel`: batches, CFG (`cond` / `uncond` contexts), any frame count and size."""

    model_class_name = "WanTransformer3DModel"
    model_classes = (WanTransformer3DModel,)
    proj_out = "proj_out"
    processor_classes = (WanAttnProcessor,)

    def __init__(self) -> None:
        super().__init__()
        self._patch: tuple[int, int, int] = (1, 1, 1)
        self._channels = 0

    def install(self, model, state, backend) -> None:
        pt, ph, pw = (int(p) for p in model.config.patch_size)
        if ph != pw:
            raise ValueError(f"apply_ras supports square spatial patches on Wan; this model has patch_size {(pt, ph, pw)}")
        attentions = self.attentions(model)
        self.check(model, attentions)
        self._patch, self._channels = (pt, ph, pw), int(model.config.out_channels or model.config.in_channels)
        self._state, self._backend = state, backend
        self.hook(model.rope, _RotaryGatherHook(state))
        self.hook(model.blocks[0], _FirstBlockGatherHook(state, backend), "blocks.0")
        self.hook(model.proj_out, ScatterHook(state, backend), "proj_out")
        for name, attention in attentions:
            processor = self.make_processor(attention, name, state, backend)
            attention.set_processor(processor)
            self._processors.append((attention, processor))

    def attentions(self, model):
        blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, WanTransformerBlock)]
        return [(f"{name}.attn1", block.attn1) for name, block in blocks]

    def text_tokens(self, args, kwargs) -> int:
        return 0  # self-attention over video tokens only; the text has its own cross-attention

    def call_grid(self, args: tuple, kwargs: dict[str, Any]) -> TokenGrid:
        timestep = _argument(args, kwargs, "timestep", 1)
        if isinstance(timestep, torch.Tensor) and timestep.ndim == 2:
            raise ValueError(
                "apply_ras does not support per-token timesteps (Wan 2.2 TI2V, expand_timesteps=True); "
                "use a Wan 2.1 or Wan 2.2 T2V/I2V pipeline"
            )
        return self.grid(_argument(args, kwargs, "hidden_states", 0))

    def grid(self, latents: torch.Tensor) -> TokenGrid:
        if latents.ndim != 5:
            raise ValueError(f"Wan latents are (B, C, frames, height, width); got shape {tuple(latents.shape)}")
        pt, p, _ = self._patch
        frames, height, width = latents.shape[-3:]
        if frames % pt or height % p or width % p:
            raise ValueError(
                f"latent frames, height and width must be divisible by the patch size {self._patch}; "
                f"got {frames}x{height}x{width}"
            )
        return TokenGrid(height // p, width // p, p, self._channels, layout="bcfhw", frames=frames // pt, patch_t=pt)

    def make_processor(self, attention, name, state, backend):
        return WanRASAttnProcessor(attention, attention.processor, name, state, backend)


class _RotaryGatherHook(ModelHook):
    """After `rope`: at a RAS call keep the rotary table rows `(Bt, a, 1, d)` of the active tokens."""

    def __init__(self, state: RegionState) -> None:
        super().__init__()
        self.state = state

    def post_forward(self, module, output):
        index = self.state.forward.index
        if index is None:
            return output
        cos, sin = output  # (1, N, 1, head_dim) each
        return cos[0][index], sin[0][index]


class _FirstBlockGatherHook(ModelHook):
    """Before the first block: at a RAS call keep the active tokens `(Bt, a, D)` of the embedded video."""

    def __init__(self, state: RegionState, backend: TokenBackend) -> None:
        super().__init__()
        self.state, self.backend = state, backend

    def pre_forward(self, module, *args, **kwargs):
        index = self.state.forward.index
        if index is None:
            return args, kwargs
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": self.backend.gather(kwargs["hidden_states"], index)}
            return args, kwargs
        return (self.backend.gather(args[0], index), *args[1:]), kwargs


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding of `x` `(B, S, H, d)`, interleaved pairs, as its attention processor applies it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class WanRASAttnProcessor(RASProcessor):
    """Wan self-attention under RAS: normalised, rotated keys and the values are cached per module.

    Dense call: the original `WanAttnProcessor` runs unchanged. Capture or RAS call: queries, keys and
    values of the tokens in the call; their keys and values are written into the module's cache (all rows
    at a capture call, the active rows at a RAS call), and the queries attend to the whole cache.
    """

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        path = self.path()
        if path == "original":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        heads = attn.heads
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (heads, -1))  # (Bt, a, H, d)
        key = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (heads, -1))
        if rotary_emb is not None:
            query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)
        if path == "cached":
            cache, index = self.cache(), self.state.forward.index
            cache.write_image("key", key.flatten(2), index)
            cache.project_image("value", attn.to_v, hidden_states, index, self.backend)
            key, value = heads_view(cache.key, heads), heads_view(cache.value, heads)  # (Bt, H, N, d)
        else:  # RAS without the cache: inactive tokens drop out of attention
            key, value = key.transpose(1, 2), heads_view(attn.to_v(hidden_states), heads)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key, value, attn_mask=attention_mask)
        out = tokens_view(out).type_as(query)  # (Bt, a, H * d)
        return attn.to_out[1](attn.to_out[0](out))
