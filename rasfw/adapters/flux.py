"""Adapter for diffusers' `FluxTransformer2DModel` (Flux.1: packed latents, 3-axis RoPE, two block kinds).

Tokens: Flux's pipelines pack each 2×2 patch of the latent into one token before the transformer, so the
latent the scheduler steps is already `(B, N, C·4)` tokens (`TokenGrid` layout "packed"). The token grid's
rows and columns come from the image position ids (`img_ids`), read once per generation before its first
transformer call (never inside a call).

What is cached: per attention module, one joint key buffer and one joint value buffer `(Bt, T + N, H·d)`
in Flux's sequence order: this call's text keys/values at rows `[0, T)` (written in place every call) and
the image keys (after qk-norm and RoPE) and values at rows `[T, T + N)`. Double-stream blocks compute
text and image projections separately; single-stream blocks project the joint `[text, image]` sequence.

Positions: the rotary embedding covers text then image tokens (`txt_ids` then `img_ids`); at a RAS step
its image part is gathered to the active tokens of each image. The guidance embedding passes through.

Calls per step: each `transformer.cache_context(name)` ("cond", and "uncond" for true CFG with a negative
prompt) has its own caches; both share the step's selection.
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel
from diffusers.hooks import ModelHook
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

from rasfw.adapters._attention import RASProcessor, text_rows
from rasfw.adapters.base import ProjectionCacheAdapter
from rasfw.interfaces import TokenGrid
from rasfw.registry import register
from rasfw.state import RegionState

Rotary = tuple[torch.Tensor, torch.Tensor]


@register("adapter", "flux")
class FluxAdapter(ProjectionCacheAdapter):
    """RAS for `FluxTransformer2DModel`: batch, non-square sizes, guidance-distilled and plain variants."""

    model_class_name = "FluxTransformer2DModel"
    model_classes = (FluxTransformer2DModel,)
    patch_embed = "x_embedder"  # embeds the packed tokens
    proj_out = "proj_out"
    pack = 2  # latent pixels per token side (Flux pipelines pack 2x2)

    processor_classes = (FluxAttnProcessor,)
    token_inputs = ("controlnet_block_samples", "controlnet_single_block_samples")  # ControlNet residuals
    attention_classes = (FluxAttention,)
    _KONTEXT = (
        "its reference image's tokens join the image tokens of every call, and RAS selects among one image's token "
        "grid; sample it without RAS (remove_ras), or use FluxPipeline / FluxImg2ImgPipeline / FluxInpaintPipeline"
    )
    refused_pipelines = (("FluxKontextPipeline", _KONTEXT), ("FluxKontextInpaintPipeline", _KONTEXT))

    def install(self, model, state, backend) -> None:
        super().install(model, state, backend)  # gather after x_embedder, scatter after proj_out
        self.hook(model.pos_embed, _RotaryHook(state))

    def call_grid(self, args, kwargs) -> TokenGrid:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        img_ids = kwargs.get("img_ids", args[4] if len(args) > 4 else None)
        if img_ids is None:
            raise ValueError("apply_ras on Flux needs img_ids in every transformer call")
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids  # (N, 3)
        rows, cols = _grid_shape(img_ids, hidden.shape[1])  # reads the ids: once per generation, between calls
        return TokenGrid(rows, cols, self.pack, hidden.shape[2] // self.pack**2, layout="packed")

    def grid(self, latents: torch.Tensor) -> TokenGrid:
        if latents.ndim != 3:
            raise ValueError(f"Flux latents are packed tokens (B, N, C*4); got shape {tuple(latents.shape)}")
        n, width = latents.shape[1:]
        seen = self._state.grid if self._state is not None else None
        if seen is None or seen.num_tokens != n:
            raise ValueError(f"no transformer call with {n} image tokens was seen; the token grid comes from its img_ids")
        return TokenGrid(seen.rows, seen.cols, self.pack, width // self.pack**2, layout="packed")

    def make_processor(self, attention, name, state, backend):
        return FluxRASAttnProcessor(attention, attention.processor, name, state, backend)


class _RotaryHook(ModelHook):
    """After `pos_embed`: at a RAS call, the rotary table of the text rows and each row's active image tokens."""

    def __init__(self, state: RegionState) -> None:
        super().__init__()
        self.state = state

    def post_forward(self, module, output: Rotary) -> Rotary:
        index = self.state.forward.index  # (Bt, a)
        if index is None:
            return output
        t = output[0].shape[0] - self.state.num_tokens
        # (T + N, d) -> (Bt, T + a, d): the text rows, then each row's active image tokens
        return tuple(torch.cat([f[:t].expand(index.shape[0], -1, -1), f[t:][index]], dim=1) for f in output)


def _grid_shape(img_ids: torch.Tensor, n: int) -> tuple[int, int]:
    """(rows, cols) of the image tokens, from the row and column ids of a row-major token grid."""
    rows, cols = int(img_ids[:, 1].max()) + 1, int(img_ids[:, 2].max()) + 1
    if img_ids.shape[0] != n or rows * cols != n:
        raise ValueError(
            f"img_ids must number the {n} image tokens as one rows x cols grid (got {img_ids.shape[0]} ids spanning "
            f"{rows}x{cols}); extra reference-image tokens (Flux Kontext's) are not supported: sample without RAS"
        )
    return rows, cols


def _rotate(x: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
    """diffusers' `apply_rotary_emb` for `(B, S, H, d)` tensors, with shared `(S, d)` or per-row `(B, S, d)` tables."""
    if rotary is None:
        return x
    cos, sin = rotary
    if cos.ndim == 2:
        return apply_rotary_emb(x, rotary, sequence_dim=1)
    b, s = x.shape[:2]  # per-row tables: fold the batch into the sequence, the op is elementwise per token
    flat = (cos.reshape(b * s, -1), sin.reshape(b * s, -1))
    return apply_rotary_emb(x.reshape(1, b * s, *x.shape[2:]), flat, sequence_dim=1).reshape(x.shape)


class FluxRASAttnProcessor(RASProcessor):
    """Flux attention (double- and single-stream) under RAS, on the module's joint key/value buffer.

    Dense call: the original `FluxAttnProcessor` runs unchanged. Capture or RAS call: the text queries and
    the image queries in the call (all, or the active ones) attend to this call's text keys/values and the
    whole image cache, whose rows for the tokens in the call were just written (Eq. 2 of the RAS paper).
    """

    text_first = True

    def joins_text(self) -> bool:
        return True  # both block kinds attend over [text, image]

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Rotary | None = None,
    ):
        path = self.path()
        if path == "original":
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise NotImplementedError("apply_ras on Flux does not support attention masks at RAS steps")
        d = attn.head_dim
        if encoder_hidden_states is None:  # single-stream: hidden_states is [text, image in the call]
            t = hidden_states.shape[1] - self._image_rows()
            query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (-1, d)))  # (Bt, T + a, H, d)
            key = attn.norm_k(attn.to_k(hidden_states).unflatten(-1, (-1, d)))
            value = attn.to_v(hidden_states).unflatten(-1, (-1, d))
            query, key = _rotate(query, image_rotary_emb), _rotate(key, image_rotary_emb)
            return self._attend(query, key, value, t, path)
        t = encoder_hidden_states.shape[1]
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (-1, d)))  # (Bt, a, H, d)
        key = attn.norm_k(attn.to_k(hidden_states).unflatten(-1, (-1, d)))
        text_query = attn.norm_added_q(attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, d)))  # (Bt, T, H, d)
        text_key = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, d)))
        text_value = attn.add_v_proj(encoder_hidden_states).unflatten(-1, (-1, d))
        query = _rotate(torch.cat([text_query, query], dim=1), image_rotary_emb)  # (Bt, T + a, H, d)
        key = _rotate(torch.cat([text_key, key], dim=1), image_rotary_emb)
        value = torch.cat([text_value, attn.to_v(hidden_states).unflatten(-1, (-1, d))], dim=1)
        out = self._attend(query, key, value, t, path)  # (Bt, T + a, H * d)
        text_out, out = out.split_with_sizes([t, out.shape[1] - t], dim=1)
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(text_out.contiguous())

    def _image_rows(self) -> int:
        index = self.state.forward.index
        return self.state.num_tokens if index is None else index.shape[1]

    def _attend(self, query, key, value, t: int, path: str) -> torch.Tensor:
        """Attention of `(Bt, T + a, H, d)` queries; with the cache, to the joint buffers after writing into them."""
        if path == "cached":
            cache, index = self.cache(), self.state.forward.index
            cache.write_text(key[:, :t].flatten(2), value[:, :t].flatten(2), text_rows(cache))
            cache.write_image("key", key[:, t:].flatten(2), index)
            cache.write_image("value", value[:, t:].flatten(2), index)
            key, value = cache.key.unflatten(-1, (-1, query.shape[-1])), cache.value.unflatten(-1, (-1, query.shape[-1]))
        backend = getattr(self.original, "_attention_backend", None)
        out = dispatch_attention_fn(query, key, value, backend=backend)  # (Bt, S, H, d)
        return out.flatten(2, 3).to(query.dtype)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, H/2 * W/2, C * 4)`: Flux pipelines' 2x2 packing, values ordered (channel, py, px)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, 2, 2)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def latent_image_ids(rows: int, cols: int) -> torch.Tensor:
    """Flux's image position ids `(rows * cols, 3)` of packed tokens: (0, row, col) in row-major order."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)
