"""The Lumina-Next adapter against the adapter contract, through diffusers' real `LuminaPipeline`."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

from rasfw import RegionAdaptiveSampler, apply_ras
from rasfw.pipelines.tiny import LATENT_CHANNELS, TEXT_DIM, TEXT_LEN, tiny_lumina_next_pipeline
from rasfw.testing.tiny import LuminaNextCall
from tests.adapters.contract import AdapterContract
from tests.helpers import kv_cache_off_and_on, relative


class TestLuminaNextAdapter(AdapterContract):
    """GQA (4 query heads, 2 key/value heads), qk-norm, learn_sigma output channels, patch sizes 2 and 1."""

    patch_sizes = (2, 1)
    size = (16, 24)

    def make_pipe(self, patch_size):
        return LuminaNextCall(tiny_lumina_next_pipeline(patch_size=patch_size))

    def forward_inputs(self, transformer, batch, height, width, seed):
        gen = torch.Generator().manual_seed(seed)
        mask = torch.ones(batch, TEXT_LEN, dtype=torch.long)
        mask[:, TEXT_LEN // 2 + seed % 3 :] = 0  # padded captions exercise the cross-attention mask
        return {
            "hidden_states": torch.randn(batch, LATENT_CHANNELS, height, width, generator=gen),
            "timestep": torch.rand(batch, generator=gen),
            "encoder_hidden_states": torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=gen),
            "encoder_mask": mask,
            # a scaled RoPE table, as the pipeline makes for sizes other than the native one
            "image_rotary_emb": get_2d_rotary_pos_embed_lumina(transformer.head_dim, 12, 12, linear_factor=1.5),
            # proportional attention: the scale must use all N image tokens, not the active count
            "cross_attention_kwargs": {"base_sequence_length": 3},
        }


def test_kv_cache_off_differs_from_kv_cache_on_but_stays_close():
    """With the K/V cache off a RAS step's self-attention sees only the active tokens' keys and values (here 4 of
    16 tokens), so the image differs from the cached run's, but stays close to it."""
    off, on = kv_cache_off_and_on(LuminaNextCall(tiny_lumina_next_pipeline()), batch=1, height=8, width=8, steps=6)
    assert not torch.equal(off, on)  # the setting took effect
    # measured on these inputs (float32, CPU): relative L2 0.16, max abs 0.92 of values up to 4.6 (about as far as
    # the cached run is from dense, 0.15); bound 2.5x that
    assert relative(off, on) < 0.4, relative(off, on)


def test_other_attention_processor_is_rejected_and_nothing_changes():
    pipe = LuminaNextCall(tiny_lumina_next_pipeline())
    pipe.transformer.layers[1].attn1.set_processor(AttnProcessor2_0())
    processors = [layer.attn1.processor for layer in pipe.transformer.layers]
    with pytest.raises(ValueError, match="layers.1.attn1 uses AttnProcessor2_0"):
        apply_ras(pipe, RegionAdaptiveSampler())
    assert [layer.attn1.processor for layer in pipe.transformer.layers] == processors
    assert not pipe.transformer.patch_embedder._forward_hooks
