"""RAS composed with what diffusers users combine it with, on diffusers' own pipeline classes with tiny parts.

Every composition is checked the way diffusers' cache tester mixins check a cache: at ratio 1 the images are
bit for bit the plain pipeline's, at ratio 0.25 they are finite, differ and stay close to dense, and after
`remove_ras` the pipeline is the plain one again. `docs/compatibility.md` is the matrix these tests back.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3ControlNetPipeline

from rasfw import apply_ras, remove_ras
from rasfw.pipelines.tiny import _seeded, tiny_sd3_pipeline
from tests.compat_cases import (
    Request,
    call,
    exact,
    pixels,
    quarter,
    sd3,
    sd3_controlnet_inputs,
    sd3_controlnet_model,
    sd3_img2img,
    sd3_slg_inputs,
    sd3_txt2img,
)
from tests.helpers import relative


def check(pipe, run, close: float = 0.5) -> None:
    """Ratio 1 exact, 0.25 finite, different and within `close` (relative L2) of dense, removal exact."""
    dense = run()
    apply_ras(pipe, exact())
    try:
        assert torch.equal(run(), dense)
    finally:
        remove_ras(pipe)
    apply_ras(pipe, quarter())
    try:
        out = run()
    finally:
        remove_ras(pipe)
    assert torch.isfinite(out).all() and not torch.equal(out, dense)
    assert relative(out, dense) < close, relative(out, dense)
    assert torch.equal(run(), dense)


STEPS8 = Request(steps=8)


def sd3_inputs() -> dict:
    return sd3_txt2img(STEPS8)


def run(pipe, **kwargs):
    return call(pipe, kwargs)


# -- SD3 (beyond the matrix) -------------------------------------------------------------------------------------


def test_sd3_skip_layer_guidance_starting_at_a_ras_step_runs_its_first_call_dense():
    """The skip-layer call is a cache context of its own; here it first comes at step 3, a RAS step: that call runs
    dense and fills its caches, and the next ones recompute the active tokens (the matrix starts it at step 1)."""
    pipe = tiny_sd3_pipeline()
    slg = {"skip_guidance_layers": [0], "skip_layer_guidance_start": 0.3, "skip_layer_guidance_stop": 0.9}
    check(pipe, lambda: run(pipe, **{**sd3_slg_inputs(STEPS8), **slg}))


def test_sd3_multi_controlnet():
    """Two ControlNets (`SD3MultiControlNetModel`): their summed per-block residuals are kept at the active tokens."""
    pipe = sd3(StableDiffusion3ControlNetPipeline, controlnet=[sd3_controlnet_model(3), sd3_controlnet_model(4)])
    inputs = {**sd3_controlnet_inputs(STEPS8), "control_image": [pixels(Request(), 7), pixels(Request(), 8)]}
    with_control = run(pipe, **{**inputs, "controlnet_conditioning_scale": [0.7, 0.5]})
    without = run(pipe, **{**inputs, "controlnet_conditioning_scale": [0.0, 0.0]})
    assert not torch.equal(with_control, without)  # the residuals matter
    check(pipe, lambda: run(pipe, **{**inputs, "controlnet_conditioning_scale": [0.7, 0.5]}))


# -- ownership: shared parts, swapped parts, later hooks ------------------------------------------------------


def img2img_inputs() -> dict:
    return sd3_img2img(STEPS8)


def test_a_from_pipe_sibling_samples_without_ras_and_an_interrupted_call_frees_its_caches():
    """`from_pipe` shares the transformer and scheduler objects: the sibling's generations pass through RAS's hooks
    untouched (bit for bit its plain images), interleaved with the owner's RAS generations in any order; an
    interrupted owner call frees its caches at its end and leaves nothing for the sibling to trip on."""
    from diffusers import StableDiffusion3Img2ImgPipeline

    pipe = tiny_sd3_pipeline()
    sibling = StableDiffusion3Img2ImgPipeline.from_pipe(pipe)
    assert sibling.transformer is pipe.transformer and sibling.scheduler is pipe.scheduler
    plain_sibling, dense = run(sibling, **img2img_inputs()), run(pipe, **sd3_inputs())
    state = apply_ras(pipe, quarter())
    try:
        ras = run(pipe, **sd3_inputs())
        assert not torch.equal(ras, dense)
        assert torch.equal(run(sibling, **img2img_inputs()), plain_sibling)
        assert torch.equal(run(pipe, **sd3_inputs()), ras)

        def stop_at_4(p, i, t, kwargs):
            p._interrupt = i == 4
            return {}

        run(pipe, **sd3_inputs(), callback_on_step_end=stop_at_4)
        assert state.caches == {} and state.memory_bytes() == 0  # freed when the interrupted call ended
        assert torch.equal(run(sibling, **img2img_inputs()), plain_sibling)
        assert torch.equal(run(pipe, **sd3_inputs()), ras)
    finally:
        remove_ras(pipe)
    assert torch.equal(run(sibling, **img2img_inputs()), plain_sibling)


@pytest.mark.parametrize("scheduler", ["euler_shift", "heun"])
def test_a_scheduler_swapped_after_apply_ras_is_followed(scheduler):
    """`pipe.scheduler = ...from_config(...)` after `apply_ras`: RAS moves to the new scheduler at the next call and
    samples exactly as if it had been applied with that scheduler in place; removal restores both."""
    from diffusers import FlowMatchHeunDiscreteScheduler

    def swapped(pipe):
        if scheduler == "heun":
            return FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
        return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=3.0)

    reference = tiny_sd3_pipeline()
    reference.scheduler = swapped(reference)
    dense = run(reference, **sd3_inputs())
    apply_ras(reference, quarter())
    expected = run(reference, **sd3_inputs())
    remove_ras(reference)
    assert not torch.equal(expected, dense)

    pipe = tiny_sd3_pipeline()
    old = pipe.scheduler
    state = apply_ras(pipe, quarter())
    pipe.scheduler = swapped(pipe)
    assert torch.equal(run(pipe, **sd3_inputs()), expected)
    assert state.num_steps == len(pipe.scheduler.timesteps)
    remove_ras(pipe)
    assert not {"step", "set_timesteps"} & (set(vars(old)) | set(vars(pipe.scheduler)))
    assert torch.equal(run(pipe, **sd3_inputs()), dense)


def test_remove_ras_keeps_model_cpu_offload_added_after_it():
    """accelerate's offload hook wraps the transformer's forward after `apply_ras`; `remove_ras` takes RAS out from
    under it: the offload hook still runs at every call, and the images are the plain pipeline's."""
    pytest.importorskip("accelerate")
    pipe = tiny_sd3_pipeline()
    dense = run(pipe, **sd3_inputs())
    apply_ras(pipe, quarter())
    ras = run(pipe, **sd3_inputs())
    pipe.enable_model_cpu_offload(device="cpu")
    assert torch.equal(run(pipe, **sd3_inputs()), ras)
    hook, calls = pipe.transformer._hf_hook, []
    original = hook.pre_forward
    hook.pre_forward = lambda module, *args, **kwargs: (calls.append(1), original(module, *args, **kwargs))[1]
    remove_ras(pipe)
    assert pipe.transformer._hf_hook is hook
    assert torch.equal(run(pipe, **sd3_inputs()), dense)
    assert len(calls) == STEPS8.steps  # one offload pre-forward per transformer call (CFG is one batched call)
    pipe.remove_all_hooks()
    assert torch.equal(run(pipe, **sd3_inputs()), dense)


def test_a_forward_replaced_after_apply_ras_is_refused_by_remove_ras_and_nothing_changes():
    pipe = tiny_sd3_pipeline()
    apply_ras(pipe, quarter())
    transformer = pipe.transformer
    ours = transformer.forward
    transformer.forward = lambda *a, **k: ours(*a, **k)
    with pytest.raises(ValueError, match=r"remove_ras: transformer.forward was replaced after apply_ras"):
        remove_ras(pipe)
    transformer.forward = ours
    remove_ras(pipe)


def test_a_transformer_compiled_by_the_user_is_refused_naming_execution_compile():
    """Before `apply_ras` (`torch.compile(...)` wrapper or `.compile()` in place) at `apply_ras`; compiled in place
    after it, at the first call, before any step: both say to pass `execution="compile"`."""
    pipe = tiny_sd3_pipeline()
    transformer = pipe.transformer
    pipe.transformer = torch.compile(transformer)
    with pytest.raises(ValueError, match='pipe.transformer is already compiled.*execution="compile"'):
        apply_ras(pipe, quarter())
    pipe.transformer = transformer
    state = apply_ras(pipe, quarter())
    transformer.compile()
    try:
        with pytest.raises(ValueError, match='compiled in place after apply_ras.*execution="compile"'):
            run(pipe, **sd3_inputs())
        assert state.update_count is None
    finally:
        remove_ras(pipe)
        transformer._compiled_call_impl = None
    with pytest.raises(ValueError, match="already compiled"):
        transformer.compile()
        apply_ras(pipe, quarter())


# -- LoRA ----------------------------------------------------------------------------------------------------


def lora_config(targets):
    from peft import LoraConfig

    return LoraConfig(r=2, lora_alpha=2, target_modules=targets, init_lora_weights=False)


def plain(pipe, call):
    """`call()` on the pipeline with RAS taken off for the moment (same sampler put back)."""
    from rasfw.attach import _attachment

    sampler = _attachment(pipe).sampler
    remove_ras(pipe)
    try:
        return call()
    finally:
        apply_ras(pipe, sampler)


@pytest.mark.parametrize("order", ["before", "after"])
def test_lora_on_any_module_before_or_after_apply_ras(order):
    """peft LoRA layers on the attention projections and on `proj_out` (which RAS hooks: the hook follows the LoRA
    layer that wraps it, and the base layer back after unloading), loaded before or after `apply_ras`, then
    `set_adapters` with a weight, `fuse_lora`, `unfuse_lora` and `unload_lora` with RAS attached: at ratio 1 every
    stage is bit for bit the plain pipeline in the same LoRA state; at 0.25, finite and close to it."""
    pytest.importorskip("peft")
    for sampler in (exact, quarter):
        pipe = tiny_sd3_pipeline()
        transformer = pipe.transformer
        base = run(pipe, **sd3_inputs())

        def call(pipe=pipe):
            return run(pipe, **sd3_inputs())

        def load(transformer=transformer):
            with _seeded(11):
                transformer.add_adapter(lora_config(["to_q", "to_k", "to_v", "proj_out"]), adapter_name="style")

        if order == "before":
            load()
        apply_ras(pipe, sampler())
        if order == "after":
            load()
        stages = [
            ("loaded", lambda: None),
            ("weighted", lambda t=transformer: t.set_adapters(["style"], weights=[0.5])),
            ("fused", lambda t=transformer: t.fuse_lora(lora_scale=1.0)),
            ("unfused", lambda t=transformer: t.unfuse_lora()),
            ("unloaded", lambda t=transformer: t.unload_lora()),
        ]
        for stage, action in stages:
            action()
            got, want = call(), plain(pipe, call)
            if stage != "unloaded":
                assert not torch.equal(want, base), stage  # the LoRA changes the images
            if sampler is exact:
                assert torch.equal(got, want), stage
            else:
                assert torch.isfinite(got).all() and not torch.equal(got, want), stage
                assert relative(got, want) < 0.5, (stage, relative(got, want))
        remove_ras(pipe)
        assert torch.equal(call(), want)  # (not `base`: fusing and unfusing rounds the weights)


def test_a_guidance_scale_that_is_not_finite_is_refused_before_the_first_step():
    """`guidance_scale=nan` in Python (the command line refuses it already): one line at the first call."""
    pipe = tiny_sd3_pipeline()
    state = apply_ras(pipe, quarter())
    try:
        with pytest.raises(ValueError, match="guidance_scale must be a finite number; got nan"):
            run(pipe, **{**sd3_inputs(), "guidance_scale": float("nan")})
        assert state.update_count is None
        assert torch.isfinite(run(pipe, **sd3_inputs())).all()
    finally:
        remove_ras(pipe)


# -- refused before anything changes (docs/compatibility.md, "Refused") ----------------------------------------------


def test_flux_kontext_is_refused_at_apply_ras_and_nothing_changes():
    from diffusers import FluxKontextPipeline

    from tests.compat_cases import flux

    pipe = flux(FluxKontextPipeline)
    with pytest.raises(ValueError, match=r"apply_ras does not support FluxKontextPipeline: .*sample it without RAS"):
        apply_ras(pipe, quarter())
    assert not hasattr(pipe.transformer, "_diffusers_hook") and "step" not in vars(pipe.scheduler)


def _tiny_ip_adapter(transformer) -> dict:
    """An IP-Adapter state dict for the tiny Flux transformer, in the layout `load_ip_adapter` reads."""
    width, text = transformer.inner_dim, transformer.config.joint_attention_dim
    ip = {}
    for i in range(len(transformer.transformer_blocks)):
        for kind in ("to_k_ip", "to_v_ip"):
            ip[f"{i}.{kind}.weight"], ip[f"{i}.{kind}.bias"] = torch.randn(width, text) * 0.1, torch.zeros(width)
    proj = {"proj.weight": torch.randn(4 * text, 8) * 0.1, "proj.bias": torch.zeros(4 * text),
            "norm.weight": torch.ones(text), "norm.bias": torch.zeros(text)}  # fmt: skip
    return {"image_proj": proj, "ip_adapter": ip}


def test_an_ip_adapter_is_refused_in_either_order_and_nothing_changes():
    """Loaded after `apply_ras`: diffusers rebuilds processors as `type(processor)()`, which stops with one line
    before any is set. Loaded before: `apply_ras` names the IP-Adapter processor it cannot run."""
    from rasfw.pipelines.tiny import tiny_flux_pipeline
    from tests.compat_cases import flux_txt2img

    pipe = tiny_flux_pipeline()
    apply_ras(pipe, exact())
    ours = dict(pipe.transformer.attn_processors)
    with pytest.raises(TypeError, match=r"FluxRASAttnProcessor is rasfw's .*call remove_ras\(pipe\) before"):
        pipe.transformer._load_ip_adapter_weights(_tiny_ip_adapter(pipe.transformer))
    assert pipe.transformer.attn_processors == ours
    dense = tiny_flux_pipeline()
    assert torch.equal(call(pipe, flux_txt2img()), call(dense, flux_txt2img()))
    remove_ras(pipe)
    pipe.transformer._load_ip_adapter_weights(_tiny_ip_adapter(pipe.transformer))
    with pytest.raises(ValueError, match=r"transformer_blocks.0.attn uses FluxIPAdapterAttnProcessor"):
        apply_ras(pipe, exact())
    assert not hasattr(pipe, "_rasfw_attachment")


def test_an_attention_processor_ras_cannot_run_set_after_apply_ras_is_refused_before_the_first_step():
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = tiny_sd3_pipeline()
    state = apply_ras(pipe, quarter())
    attention = pipe.transformer.transformer_blocks[1].attn
    theirs = AttnProcessor2_0()
    attention.set_processor(theirs)
    with pytest.raises(ValueError, match=r"processor of transformer_blocks.1.attn was replaced after apply_ras by "
                                         r"AttnProcessor2_0, which RAS cannot run \(.*JointAttnProcessor2_0\)"):  # fmt: skip
        run(pipe, **sd3_inputs())
    assert state.update_count is None  # no step ran
    remove_ras(pipe)
    assert attention.processor is theirs  # what the user set stays


def test_a_control_lora_that_widens_x_embedder_after_apply_ras_is_followed():
    """Flux Control LoRAs widen `x_embedder` (diffusers replaces it with a wider layer, then wraps it in a LoRA
    layer): RAS's hook follows the new module; ratio 1 exact, 0.25 close, removal exact."""
    pytest.importorskip("peft")
    from diffusers import FluxControlPipeline

    from tests.compat_cases import flux, flux_text, generator

    def control_lora(pipe) -> dict:
        t = pipe.transformer
        inner, width = t.x_embedder.out_features, t.x_embedder.in_features
        with _seeded(4):
            return {"transformer.x_embedder.lora_A.weight": torch.randn(2, 2 * width) * 0.1,
                    "transformer.x_embedder.lora_B.weight": torch.randn(inner, 2) * 0.1,
                    "transformer.transformer_blocks.0.attn.to_k.lora_A.weight": torch.randn(2, inner) * 0.1,
                    "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": torch.randn(inner, 2) * 0.1}  # fmt: skip

    def inputs() -> dict:
        return {**flux_text(), "control_image": pixels(Request(), 7), "generator": generator()}

    plain = flux(FluxControlPipeline)
    plain.load_lora_weights(control_lora(plain))
    dense = call(plain, inputs())
    for sampler, ratio_one in ((exact(), True), (quarter(), False)):
        pipe = flux(FluxControlPipeline)
        width = pipe.transformer.x_embedder.in_features
        apply_ras(pipe, sampler)
        pipe.load_lora_weights(control_lora(pipe))
        assert pipe.transformer.x_embedder.in_features == 2 * width
        out = call(pipe, inputs())
        remove_ras(pipe)
        if ratio_one:
            assert torch.equal(out, dense)
        else:
            assert torch.isfinite(out).all() and not torch.equal(out, dense) and relative(out, dense) < 0.5
        assert torch.equal(call(pipe, inputs()), dense)
