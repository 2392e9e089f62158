"""The SD3 adapter against the adapter contract, on tiny random SD3 and SD3.5-style transformers."""

from __future__ import annotations

import pytest
import torch

from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
from rasfw.pipelines.tiny import tiny_sd3_transformer
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset, NoReset
from rasfw.testing.tiny import TinySD3Pipeline
from tests.adapters.contract import AdapterContract


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


def test_hooks_of_other_libraries_survive_apply_and_remove():
    """rasfw's hooks stack with diffusers hooks registered before it, and removal leaves those in place."""
    from diffusers.hooks import HookRegistry, ModelHook

    class Counting(ModelHook):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def pre_forward(self, module, *args, **kwargs):
            self.calls += 1
            return args, kwargs

    pipe = TinySD3Pipeline(tiny_sd3_transformer())
    outer, inner = Counting(), Counting()
    HookRegistry.check_if_exists_or_initialize(pipe.transformer).register_hook(outer, "count")
    HookRegistry.check_if_exists_or_initialize(pipe.transformer.pos_embed).register_hook(inner, "count")
    dense = pipe(batch=1)
    apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 2), reset=FixedReset([5])))
    ras = pipe(batch=1)
    remove_ras(pipe)
    assert outer.calls == inner.calls == 16  # 8 steps before RAS and 8 with it: the hooks ran every call
    assert not torch.equal(ras, dense)
    assert torch.equal(pipe(batch=1), dense) and outer.calls == inner.calls == 24
    assert pipe.transformer._diffusers_hook.get_hook("count") is outer
    assert pipe.transformer._diffusers_hook.get_hook("rasfw") is None


def test_a_transformer_shared_by_two_pipelines_is_refused():
    transformer = tiny_sd3_transformer()
    first, second = TinySD3Pipeline(transformer), TinySD3Pipeline(transformer)
    apply_ras(first, RegionAdaptiveSampler())
    with pytest.raises(ValueError, match="already applied to this transformer"):
        apply_ras(second, RegionAdaptiveSampler())
    assert "step" not in vars(second.scheduler)  # nothing half-applied
