"""The Wan adapter against the adapter contract, through diffusers' real `WanPipeline` (Wan 2.1 and 2.2)."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from rasfw import RegionAdaptiveSampler, apply_ras, ras_execution, remove_ras
from rasfw.pipelines.tiny import TEXT_DIM, TEXT_LEN, tiny_wan_pipeline
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import NoReset
from rasfw.testing.tiny import WanCall
from tests.adapters.contract import AdapterContract
from tests.helpers import kv_cache_off_and_on, ras, relative

WAN_CHANNELS = 4


class TestWanAdapter(AdapterContract):
    """3-D RoPE over frames x rows x cols, RMS qk-norm, cond and uncond calls in their own cache contexts."""

    patch_sizes = (2,)
    size = (8, 12)
    cfg_copies = 1  # Wan calls the transformer once per branch (cond, then uncond), each with the batch

    def make_pipe(self, patch_size):
        return WanCall(tiny_wan_pipeline())

    def forward_inputs(self, transformer, batch, height, width, seed):
        gen = torch.Generator().manual_seed(seed)
        return {
            "hidden_states": torch.randn(batch, WAN_CHANNELS, 2, height, width, generator=gen),  # 2 latent frames
            "timestep": torch.rand(batch, generator=gen) * 1000,
            "encoder_hidden_states": torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=gen),
        }


def test_tokens_span_frames_rows_and_cols():
    pipe = WanCall(tiny_wan_pipeline())
    state = apply_ras(pipe, ras())
    pipe(batch=1, height=8, width=12, steps=6)
    assert state.grid_shape == (3, 4, 6)  # latent frames x (8 / 2) x (12 / 2)
    assert state.active_tokens_per_step[2] == 72 - int(0.75 * 72)


def test_each_cfg_branch_has_its_own_caches_and_cross_attention_is_left_alone():
    pipe = WanCall(tiny_wan_pipeline())
    state = apply_ras(pipe, ras())
    blocks = pipe.transformer.blocks
    assert all(type(block.attn2.processor) is WanAttnProcessor for block in blocks)  # cross-attention untouched
    assert all(type(block.attn1.processor) is not WanAttnProcessor for block in blocks)
    seen: list[tuple[str, tuple[str, ...]]] = []
    handle = pipe.transformer.register_forward_hook(
        lambda module, args, out: seen.append((state.forward.context, tuple(sorted(state.kv))))
        if state.forward.index is not None else None
    )
    pipe(batch=2, height=8, width=12, steps=6, guidance=4.0)
    handle.remove()
    contexts = [context for context, _ in seen]
    assert contexts[:2] == ["cond", "uncond"] and set(contexts) == {"cond", "uncond"}
    keys = set(seen[-1][1])
    assert keys == {f"{c}/blocks.{i}.attn1" for c in ("cond", "uncond") for i in range(len(blocks))}
    assert not state.caches  # freed when the generation ended


def test_swapping_the_branches_order_changes_nothing():
    """Each branch reads only its own caches, so calling uncond before cond gives the same video."""
    pipe = WanCall(tiny_wan_pipeline())
    apply_ras(pipe, ras())
    expected = pipe(batch=1, height=8, width=12, steps=6, guidance=4.0)
    inner = pipe.transformer
    real_context = inner.cache_context

    def swapped(name, **kwargs):
        return real_context({"cond": "uncond", "uncond": "cond"}.get(name, name), **kwargs)

    inner.cache_context = swapped  # the cond call now runs in context 'uncond' and vice versa
    try:
        swapped_result = pipe(batch=1, height=8, width=12, steps=6, guidance=4.0)
    finally:
        del inner.cache_context
    assert torch.equal(swapped_result, expected)


def test_ras_changes_the_video_and_stays_finite():
    pipe = WanCall(tiny_wan_pipeline())
    dense = pipe(batch=1, height=8, width=12, steps=8)
    apply_ras(pipe, ras(0.25))
    out = pipe(batch=1, height=8, width=12, steps=8)
    assert torch.isfinite(out).all() and not torch.equal(out, dense)
    remove_ras(pipe)
    assert torch.equal(pipe(batch=1, height=8, width=12, steps=8), dense)


def test_kv_cache_off_differs_from_kv_cache_on_but_stays_close():
    """With the K/V cache off a RAS step's self-attention sees only the active tokens' keys and values, so the
    video differs from the cached run's, but not by much."""
    off, on = kv_cache_off_and_on(WanCall(tiny_wan_pipeline()), batch=1, height=8, width=12, steps=6)
    assert not torch.equal(off, on)  # the setting took effect
    # measured on these inputs (float32, CPU): relative L2 0.029, max abs 0.25 of values up to 4.3; bound ~3x that
    assert relative(off, on) < 0.08, relative(off, on)


def test_per_token_timesteps_are_refused_with_one_line():
    pipe = tiny_wan_pipeline()
    pipe.register_to_config(expand_timesteps=True)  # Wan 2.2 TI2V
    apply_ras(pipe, ras())
    embeds = torch.randn(1, TEXT_LEN, TEXT_DIM)
    with pytest.raises(ValueError, match="per-token timesteps"):
        pipe(prompt_embeds=embeds, negative_prompt_embeds=embeds, height=64, width=96, num_frames=5,
             num_inference_steps=6, output_type="latent")  # fmt: skip


# -- Wan 2.2: two transformers, switched at a boundary timestep ---------------------------------------


class TwoStage(WanCall):
    def __init__(self, pipe) -> None:
        super().__init__(pipe)
        self.transformer_2 = pipe.transformer_2


def test_two_stage_ratio_one_is_bitwise_and_remove_restores_both():
    pipe = TwoStage(tiny_wan_pipeline(two_stage=True))
    dense = pipe(batch=2, height=8, width=12, steps=8)
    apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(1.0, 2), reset=NoReset()))
    assert torch.equal(pipe(batch=2, height=8, width=12, steps=8), dense)
    remove_ras(pipe)
    for transformer in (pipe.transformer, pipe.transformer_2):  # the pipeline's cache_context made the registries
        assert transformer._diffusers_hook.get_hook("rasfw") is None
        assert all(type(block.attn1.processor) is WanAttnProcessor for block in transformer.blocks)
    assert torch.equal(pipe(batch=2, height=8, width=12, steps=8), dense)


def test_two_stage_switch_step_is_dense_and_both_transformers_run_ras():
    pipe = TwoStage(tiny_wan_pipeline(two_stage=True))
    state = apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 1), reset=NoReset()))
    called: list[tuple[str, bool]] = []
    for name in ("transformer", "transformer_2"):
        getattr(pipe, name).register_forward_hook(
            lambda module, args, out, name=name: called.append((name, state.forward.index is None))
        )
    out = pipe(batch=1, height=8, width=12, steps=8, guidance=4.0)
    assert torch.isfinite(out).all()
    switch = next(i for i, (name, _) in enumerate(called) if name == "transformer_2") // 2  # two calls a step
    assert 1 < switch < 8
    n = 72
    assert state.active_tokens_per_step[switch] == n  # the first step on transformer_2 refills its caches
    assert state.active_tokens_per_step[switch - 1] < n and state.active_tokens_per_step[switch + 1] < n
    partial = {name for name, dense in called if not dense}
    assert partial == {"transformer", "transformer_2"}  # both models ran RAS steps
    assert ras_execution(pipe, "transformer_2").describe()["execution"] == "eager"
    with pytest.raises(ValueError, match="transformer must be one of transformer, transformer_2"):
        ras_execution(pipe, "transformer_3")


def test_two_stage_drop_counts_forget_the_withdrawn_selection():
    """The planned selection of the switch step is withdrawn: no token counts as dropped at it."""
    pipe = TwoStage(tiny_wan_pipeline(two_stage=True))
    state = apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 1), reset=NoReset()))
    pipe(batch=1, height=8, width=12, steps=8)
    dense_steps = sum(1 for a in state.active_tokens_per_step if a == 72)
    assert int(state.update_count.sum()) == sum(state.active_tokens_per_step)
    assert int(state.update_count.min()) >= dense_steps


def test_one_executor_instance_cannot_serve_two_transformers():
    from rasfw.execution.eager import EagerExecution

    pipe = TwoStage(tiny_wan_pipeline(two_stage=True))
    with pytest.raises(ValueError, match="two transformers needs an execution mode by name"):
        apply_ras(pipe, ras(), execution=EagerExecution())
    assert not hasattr(pipe.transformer, "_diffusers_hook")


def test_temporal_difference_metric_selects_differently_and_forgets_its_memory():
    from rasfw.strategies.metrics import TemporalDifference

    pipe = WanCall(tiny_wan_pipeline())
    state = apply_ras(pipe, ras(metric=TemporalDifference()))
    seen: list[torch.Tensor] = []
    handle = pipe.transformer.register_forward_hook(
        lambda module, args, out: seen.append(state.forward.index.clone()) if state.forward.index is not None else None
    )
    temporal = pipe(batch=1, height=8, width=12, steps=8)
    handle.remove()
    assert torch.isfinite(temporal).all() and not state.metric_memory  # freed with the caches
    remove_ras(pipe)
    state = apply_ras(pipe, ras())
    std: list[torch.Tensor] = []
    handle = pipe.transformer.register_forward_hook(
        lambda module, args, out: std.append(state.forward.index.clone()) if state.forward.index is not None else None
    )
    pipe(batch=1, height=8, width=12, steps=8)
    handle.remove()
    assert len(seen) == len(std) and torch.equal(seen[0], std[0])  # the first selection: std_noise either way
    assert any(not torch.equal(a, b) for a, b in zip(seen, std, strict=True))  # later ones follow the change between steps


def test_compile_runs_each_wan_call_as_one_full_graph():
    """fullgraph=True: no graph break in the transformer call, hooks and RAS processors included."""
    pipe = WanCall(tiny_wan_pipeline())
    apply_ras(pipe, ras())
    eager = pipe(batch=2, height=8, width=12, steps=8, guidance=4.0)
    remove_ras(pipe)
    apply_ras(pipe, ras(), execution="compile", compile_backend="aot_eager")
    compiled = pipe(batch=2, height=8, width=12, steps=8, guidance=4.0)
    executor = ras_execution(pipe)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    graphs = executor.graphs
    assert 0 < graphs <= len(executor.keys)  # at most one graph per call shape (the two contexts may share one)
    contexts = {key[0][-1] for key in executor.keys if key[0][0] in ("capture", "ras")}
    assert contexts == {"cond", "uncond"}
    assert torch.equal(pipe(batch=2, height=8, width=12, steps=8, guidance=4.0), compiled)
    assert executor.graphs == graphs  # a second generation builds nothing


def test_image_to_video_layout_partial_forward_matches_dense_at_active_tokens():
    """Wan I2V: the cross-attention also attends to image-encoder tokens (added k/v); RAS leaves it alone."""
    from diffusers import WanTransformer3DModel

    from rasfw.adapters.partial import PartialForward
    from rasfw.adapters.wan import WanAdapter
    from rasfw.backends import TorchBackend

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=8, out_channels=4,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, image_dim=16, added_kv_proj_dim=24,
        rope_max_seq_len=32,
    ).eval()  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    inputs = {
        "hidden_states": torch.randn(2, 8, 2, 6, 8, generator=gen),  # latent + condition channels
        "timestep": torch.tensor([500.0, 700.0]),
        "encoder_hidden_states": torch.randn(2, 512, TEXT_DIM, generator=gen),  # Wan's fixed 512 text tokens
        "encoder_hidden_states_image": torch.randn(2, 5, 16, generator=gen),
    }
    index = torch.stack([torch.randperm(24, generator=gen)[:7].sort().values for _ in range(2)])  # (2, 7)
    with torch.no_grad(), PartialForward(transformer, inputs, TorchBackend()) as calls:
        assert isinstance(calls.adapter, WanAdapter)
        assert calls.state.grid.channels == 4 and calls.num_tokens == 2 * 3 * 4
        dense = calls.capture()
        partial = calls.ras(index)
        grid = calls.adapter.grid(dense)
    d, p = grid.to_tokens(dense), grid.to_tokens(partial)  # (B, N, P, C)
    take = index[:, :, None, None].expand(-1, -1, *d.shape[2:])
    torch.testing.assert_close(torch.gather(p, 1, take), torch.gather(d, 1, take), rtol=1e-4, atol=1e-5)
