"""Adapter for diffusers' `FluxTransformer2DModel` (Flux.1: packed latents, 3-axis RoPE, two block kinds).

Tokens: Flux's pipelines pack each 2×2 patch of the latent into one token before the transformer, so the
latent the scheduler steps is already `(B, N, C·4)` tokens (`TokenGrid` layout "packed"). The token grid's
rows and columns come from the image position ids (`img_ids`) of the transformer call.

What is cached: per attention module, the *image* keys after qk-norm and RoPE, and the image values,
`(Bt, N, heads · head_dim)`. Double-stream blocks compute text and image projections separately; the
single-stream blocks join text and image tokens into one sequence, of which only the image part is
cached. Text tokens are always computed in full.

Positions: the rotary embedding covers text then image tokens (`txt_ids` then `img_ids`); at a RAS step
its image part is gathered to the active tokens of each image. The guidance embedding passes through.

Limit: one transformer call per step. Flux's "true CFG" (`true_cfg_scale > 1` with a negative prompt)
calls the transformer twice per step, which would share one cache; it raises instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

from rasfw.adapters._attention import CachingProcessor
from rasfw.adapters.base import ProjectionCacheAdapter
from rasfw.interfaces import TokenGrid
from rasfw.registry import register
from rasfw.state import RegionState

Rotary = tuple[torch.Tensor, torch.Tensor]


@dataclass
class _FluxCall:
    """Facts of the transformer call in progress, shared by the adapter's hooks and processors."""

    text: int = 0  # T, text tokens
    tokens: int = 0  # N, image tokens
    last: tuple = field(default=(None, -1, ""))  # (generation, step, kind) of the last caching call


@register("adapter", "flux")
class FluxAdapter(ProjectionCacheAdapter):
    """RAS for `FluxTransformer2DModel`: batch, non-square sizes, guidance-distilled and plain variants."""

    model_class_name = "FluxTransformer2DModel"
    model_classes = (FluxTransformer2DModel,)
    patch_embed = "x_embedder"  # embeds the packed tokens
    proj_out = "proj_out"
    pack = 2  # latent pixels per token side (Flux pipelines pack 2x2)

    def __init__(self) -> None:
        super().__init__()
        self._call = _FluxCall()
        self._shapes: dict[int, tuple[int, int]] = {}  # image tokens -> (rows, cols), from img_ids
        self._ids: torch.Tensor | None = None  # the img_ids last read (pipelines pass the same tensor each step)

    def install(self, model, state, backend) -> None:
        attns = [(name, m) for name, m in model.named_modules() if isinstance(m, FluxAttention)]
        for name, attn in attns:
            if attn.fused_projections:
                raise ValueError("apply_ras needs unfused q/k/v projections; call transformer.unfuse_qkv_projections()")
            if type(attn.processor) is not FluxAttnProcessor:
                raise ValueError(
                    f"apply_ras supports Flux attention with FluxAttnProcessor; {name} uses {type(attn.processor).__name__}"
                )
        super().install(model, state, backend)  # gather after x_embedder, scatter after proj_out
        self._handles.append(model.register_forward_pre_hook(self._record_ids, with_kwargs=True))
        self._handles.append(model.pos_embed.register_forward_hook(self._rotary_hook(state)))
        for name, attn in attns:
            processor = FluxRASAttnProcessor(attn.processor, name, state, backend, self._call)
            processor.attach(attn, attn.norm_k, attn.to_v)
            self._processors.append((attn, processor))

    def grid(self, latents: torch.Tensor) -> TokenGrid:
        if latents.ndim != 3:
            raise ValueError(f"Flux latents are packed tokens (B, N, C*4); got shape {tuple(latents.shape)}")
        n, width = latents.shape[1:]
        if n not in self._shapes:
            raise ValueError(
                f"no transformer call with {n} image tokens was seen; the token grid comes from its img_ids"
            )
        rows, cols = self._shapes[n]
        return TokenGrid(rows, cols, self.pack, width // self.pack**2, layout="packed")

    # -- hooks -----------------------------------------------------------------------------------

    @staticmethod
    def _scatter_hook(state: RegionState, backend):
        # Flux returns proj_out's output as the model output (no unpatchify copy), so the cached output
        # must be a copy of it and each call returns its own tensor: outputs of earlier steps stay intact.
        def hook(module, args, output):
            plan = state.forward
            if plan.index is None:
                if plan.capture:
                    state.output = output.clone()  # (Bt, N, F)
                return output
            return backend.scatter(state.output, plan.index, output).clone()  # (Bt, N, F)

        return hook

    def _record_ids(self, module, args, kwargs) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        img_ids = kwargs.get("img_ids", args[4] if len(args) > 4 else None)
        txt_ids = kwargs.get("txt_ids", args[5] if len(args) > 5 else None)
        if img_ids is None or txt_ids is None:
            raise ValueError("apply_ras on Flux needs img_ids and txt_ids in every transformer call")
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids  # (N, 3)
        self._call.text = (txt_ids[0] if txt_ids.ndim == 3 else txt_ids).shape[0]
        self._call.tokens = n = hidden.shape[1]
        if img_ids is not self._ids or n not in self._shapes:  # reading the ids waits for the device: once per tensor
            self._shapes[n], self._ids = _grid_shape(img_ids, n), img_ids

    def _rotary_hook(self, state: RegionState):
        call = self._call

        def hook(module, args, output: Rotary) -> Rotary:
            plan = state.forward
            kind = "ras" if plan.index is not None else "capture" if plan.capture else ""
            if kind:
                mark = (state.skips, state.step, kind)
                if call.last[0] is mark[0] and call.last[1:] == mark[1:]:
                    raise RuntimeError(
                        f"the Flux transformer was called twice at step {state.step} (true CFG with a negative "
                        "prompt?); RAS keeps one key/value cache per step, so use true_cfg_scale=1"
                    )
                call.last = mark
            if plan.index is None:
                return output
            t, index = call.text, plan.index  # (Bt, a)
            # (T + N, d) -> (Bt, T + a, d): the text rows, then each row's active image tokens
            return tuple(torch.cat([f[:t].expand(index.shape[0], -1, -1), f[t:][index]], dim=1) for f in output)

        return hook


def _grid_shape(img_ids: torch.Tensor, n: int) -> tuple[int, int]:
    """(rows, cols) of the image tokens, from the row and column ids of a row-major token grid."""
    rows, cols = int(img_ids[:, 1].max()) + 1, int(img_ids[:, 2].max()) + 1
    if img_ids.shape[0] != n or rows * cols != n:
        raise ValueError(
            f"img_ids must number the {n} image tokens as one rows x cols grid (got {img_ids.shape[0]} ids spanning "
            f"{rows}x{cols}); extra reference-image tokens (e.g. Kontext) are not supported"
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


class FluxRASAttnProcessor(CachingProcessor):
    """Flux attention (double- and single-stream) under RAS, with a per-module image key/value cache.

    Dense call: the original `FluxAttnProcessor` runs unchanged; at a capture call the image keys it
    normalised are rotated with the same table and stored with the image values.
    RAS call: active image queries (and all text queries) attend to all text keys plus the whole image
    cache, whose active slots were just overwritten (Eq. 2 of the RAS paper).
    """

    def __init__(self, original, name, state, backend, call: _FluxCall) -> None:
        super().__init__(original, name, state, backend)
        self.call = call

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Rotary | None = None,
    ):
        if self.state.forward.index is None:
            out, key, value = self.delegate(
                attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb
            )
            if key is not None and value is not None:
                self._store(key, value, image_rotary_emb)
            return out
        if attention_mask is not None:
            raise NotImplementedError("apply_ras on Flux does not support attention masks at RAS steps")
        if encoder_hidden_states is None:
            return self._single(attn, hidden_states, image_rotary_emb)
        return self._double(attn, hidden_states, encoder_hidden_states, image_rotary_emb)

    def _store(self, key: torch.Tensor, value: torch.Tensor, rotary: Rotary | None) -> None:
        n = self.call.tokens  # single-stream sequences are [text, image]: keep the image part
        key = key[:, -n:]  # (Bt, N, H, d), normalised, not yet rotated
        if rotary is not None:
            key = _rotate(key, (rotary[0][-n:], rotary[1][-n:]))
        self.state.kv[self.key_name] = key.reshape(key.shape[0], n, -1)  # (Bt, N, H * d)
        self.state.kv[self.value_name] = value[:, -n:].contiguous()  # (Bt, N, H * d)

    def _double(self, attn, hidden_states, context, rotary):
        plan, d, t = self.state.forward, attn.head_dim, context.shape[1]
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (-1, d)))  # (Bt, a, H, d)
        key = attn.norm_k(attn.to_k(hidden_states).unflatten(-1, (-1, d)))
        text_query = attn.norm_added_q(attn.add_q_proj(context).unflatten(-1, (-1, d)))  # (Bt, T, H, d)
        text_key = attn.norm_added_k(attn.add_k_proj(context).unflatten(-1, (-1, d)))
        text_value = attn.add_v_proj(context).unflatten(-1, (-1, d))
        query = _rotate(torch.cat([text_query, query], dim=1), rotary)  # (Bt, T + a, H, d)
        key = _rotate(torch.cat([text_key, key], dim=1), rotary)
        if plan.kv_cache:
            key = torch.cat([key[:, :t], self._cache_keys(key[:, t:], d)], dim=1)  # (Bt, T + N, H, d)
            value = self._cache_values(attn, hidden_states, d)
        else:
            value = attn.to_v(hidden_states).unflatten(-1, (-1, d))  # inactive tokens drop out
        value = torch.cat([text_value, value], dim=1)
        out = self._attend(query, key, value)  # (Bt, T + a, H * d)
        text_out, out = out.split_with_sizes([t, out.shape[1] - t], dim=1)
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(text_out.contiguous())

    def _single(self, attn, hidden_states, rotary):
        plan, d = self.state.forward, attn.head_dim
        t = hidden_states.shape[1] - plan.index.shape[1]  # [text, active image] tokens
        query = _rotate(attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (-1, d))), rotary)  # (Bt, T + a, H, d)
        key = _rotate(attn.norm_k(attn.to_k(hidden_states).unflatten(-1, (-1, d))), rotary)
        value = attn.to_v(hidden_states).unflatten(-1, (-1, d))
        if plan.kv_cache:
            key = torch.cat([key[:, :t], self._cache_keys(key[:, t:], d)], dim=1)  # (Bt, T + N, H, d)
            values = self.backend.scatter(self.state.kv[self.value_name], plan.index, value[:, t:].flatten(2))
            value = torch.cat([value[:, :t], values.unflatten(-1, (-1, d))], dim=1)
        return self._attend(query, key, value)

    def _cache_keys(self, key: torch.Tensor, d: int) -> torch.Tensor:
        """Write rotated active keys `(Bt, a, H, d)` into the cache; return the whole cache `(Bt, N, H, d)`."""
        cache = self.backend.scatter(self.state.kv[self.key_name], self.state.forward.index, key.flatten(2))
        return cache.unflatten(-1, (-1, d))

    def _cache_values(self, attn, x: torch.Tensor, d: int) -> torch.Tensor:
        """Project active values straight into the cache; return the whole cache `(Bt, N, H, d)`."""
        cache, index = self.state.kv[self.value_name], self.state.forward.index
        if type(attn.to_v) is torch.nn.Linear:
            cache = self.backend.linear_scatter(x, attn.to_v.weight, attn.to_v.bias, index, cache)
        else:
            cache = self.backend.scatter(cache, index, attn.to_v(x))
        return cache.unflatten(-1, (-1, d))

    def _attend(self, query, key, value) -> torch.Tensor:
        backend = getattr(self.original, "_attention_backend", None)
        out = dispatch_attention_fn(query, key, value, backend=backend)  # (Bt, S, H, d)
        return out.flatten(2, 3).to(query.dtype)
