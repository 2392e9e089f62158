"""The SD3 adapter against the adapter contract, on tiny random SD3 and SD3.5-style transformers."""

from __future__ import annotations

import pytest
import torch

from rasfw import RegionAdaptiveSampler, apply_ras
from rasfw.strategies.resets import NoReset
from tests.adapters.contract import AdapterContract
from tests.tiny import TinySD3Pipeline, tiny_sd3_transformer


class TestSD3Adapter(AdapterContract):
    patch_sizes = (1, 2, 4)
    size = (16, 24)

    def make_pipe(self, patch_size):
        return TinySD3Pipeline(tiny_sd3_transformer(patch_size=patch_size))

    def forward_inputs(self, transformer, batch, height, width, seed):
        return TinySD3Pipeline(transformer).forward_inputs(batch, height, width, seed)


class TestSD35Adapter(AdapterContract):
    """qk-norm and dual-attention layers (SD3.5 layout)."""

    patch_sizes = (2,)
    size = (16, 16)

    def make_pipe(self, patch_size):
        return TinySD3Pipeline(tiny_sd3_transformer(patch_size=patch_size, sd35=True))

    def forward_inputs(self, transformer, batch, height, width, seed):
        return TinySD3Pipeline(transformer).forward_inputs(batch, height, width, seed)


def test_unsupported_transformer_is_a_type_error():
    class Pipe:
        transformer = torch.nn.Linear(2, 2)
        scheduler = object()

    with pytest.raises(TypeError, match="does not support transformer Linear; supported: .*SD3Transformer2DModel"):
        apply_ras(Pipe(), RegionAdaptiveSampler())


def test_pipeline_without_transformer_is_a_type_error():
    with pytest.raises(TypeError, match="needs a pipeline with .transformer and .scheduler"):
        apply_ras(object(), RegionAdaptiveSampler())


def test_odd_latent_size_names_the_patch_size():
    pipe = TinySD3Pipeline(tiny_sd3_transformer(patch_size=2))
    apply_ras(pipe, RegionAdaptiveSampler(reset=NoReset()))
    with pytest.raises(ValueError, match="divisible by the patch size 2"):
        pipe(batch=1, height=15, width=16, steps=4, guidance=1.0, seed=0)
