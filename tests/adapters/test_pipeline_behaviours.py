"""The behaviours diffusers' `PipelineTesterMixin` checks, with RAS attached, on one pipeline per family RAS supports
(SD3, Flux, Lumina-Next, Wan 2.1: diffusers' own pipeline classes around tiny parts, `tests/compat_cases.py`).

For each behaviour, RAS at ratio 1 is bit for bit the plain pipeline (a second one built alike: the builders are
seeded) doing the same thing, and RAS at `sparse()` (0.25 from the second step on) runs, is finite and differs:

* `callback_on_step_end`: the latents a callback sees at every step, and a callback that changes them;
* `return_dict=False`: the tuple holds the output's images (frames);
* `num_images_per_prompt` (`num_videos_per_prompt` for Wan);
* a batch of two requests;
* `save_pretrained` / `from_pretrained` with RAS attached: the saved pipeline loads plain, and the transformer's
  `state_dict` is untouched by RAS;
* `enable_attention_slicing` (a no-op on these DiT pipelines: none of their parts has `set_attention_slice`);
* two calls in a row agree, and `remove_ras` gives the plain pipeline back;
* layerwise casting (float8 storage), and diffusers' step caches with no warm-up: First Block Cache and TaylorSeer
  follow RAS, FasterCache and Pyramid Attention Broadcast are refused before any step.

A behaviour the plain pipeline cannot run (it raises without RAS) is skipped, naming diffusers' error.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import NoReset
from tests.compat_cases import CASES, Request, call, exact, generator
from tests.helpers import relative

FAMILIES = ["sd3", "flux", "lumina_next", "wan2.1"]
CLOSE = 0.5
STEPS = 4
ONE, TWO = Request(steps=STEPS), Request(steps=STEPS, batch=2)


def sparse() -> RegionAdaptiveSampler:
    """RAS at 0.25 with no warm-up: every step after the first is sparse."""
    return RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 0), reset=NoReset())


def raw(pipe, inputs: dict):
    with torch.no_grad():
        return pipe(**inputs)


def ras_runs(case, run, prepare=None) -> tuple:
    """`run(pipe)` on a plain pipeline, on one with RAS at ratio 1 and on one with `sparse()` (each built fresh;
    `prepare(pipe)` runs on each before `apply_ras`)."""

    def built():
        pipe = case.make()
        if prepare is not None:
            prepare(pipe)
        return pipe

    results = [run(built())]
    for sampler in (exact(), sparse()):
        pipe = built()
        apply_ras(pipe, sampler)
        try:
            results.append(run(pipe))
        finally:
            remove_ras(pipe)
    return tuple(results)


def check(plain: torch.Tensor, ratio_one: torch.Tensor, sparse_out: torch.Tensor) -> None:
    assert torch.equal(ratio_one, plain)
    assert torch.isfinite(sparse_out).all() and not torch.equal(sparse_out, plain)


def no_ras_left(pipe) -> None:
    """No rasfw hook on any module of the transformer, diffusers' processors, the scheduler's own methods."""
    for name, module in pipe.transformer.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        assert registry is None or registry.get_hook("rasfw") is None, name
        processor = getattr(module, "processor", None)
        assert processor is None or type(processor).__module__.startswith("diffusers."), (name, type(processor))
    assert not {"step", "set_timesteps"} & set(vars(pipe.scheduler))
    assert not hasattr(pipe, "_rasfw_attachment")


# -- callbacks ---------------------------------------------------------------------------------------------------


def recorded(inputs: dict):
    """`run(pipe)`: the latents after every step (stacked, as the callback saw them) and the output."""

    def run(pipe):
        seen = []

        def record(p, i, t, kwargs):
            seen.append(kwargs["latents"].clone())
            return {}

        out = call(pipe, {**inputs, "callback_on_step_end": record, "callback_on_step_end_tensor_inputs": ["latents"]})
        return torch.stack(seen), out

    return run


@pytest.mark.parametrize("name", FAMILIES)
def test_callback_on_step_end_sees_the_plain_latents_at_every_step(name):
    case = CASES[name]
    (plain, plain_out), (ras, ras_out), (sp, sp_out) = ras_runs(case, recorded(case.inputs(ONE)))
    assert len(plain) == len(ras) == len(sp) == STEPS
    for step in range(STEPS):
        assert torch.equal(ras[step], plain[step]), step
    assert torch.equal(ras_out, plain_out)
    assert torch.equal(sp[0], plain[0])  # the first step is dense
    check(plain[-1], ras[-1], sp[-1])
    assert torch.equal(sp[-1], sp_out)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_callback_that_changes_the_latents_is_followed(name):
    case = CASES[name]

    def halve_at_2(p, i, t, kwargs):
        return {"latents": kwargs["latents"] * 0.5} if i == 2 else {}

    changed = {**case.inputs(ONE), "callback_on_step_end": halve_at_2, "callback_on_step_end_tensor_inputs": ["latents"]}
    unchanged = call(case.make(), case.inputs(ONE))
    plain, ratio_one, sparse_out = ras_runs(case, lambda pipe: call(pipe, changed))
    assert not torch.equal(plain, unchanged)  # the callback matters
    check(plain, ratio_one, sparse_out)


# -- outputs -----------------------------------------------------------------------------------------------------


def images(out):
    return out.frames if hasattr(out, "frames") else out.images


@pytest.mark.parametrize("name", FAMILIES)
def test_return_dict_false_gives_the_images_in_a_tuple(name):
    case = CASES[name]

    def run(pipe):
        as_dict, as_tuple = raw(pipe, case.inputs(ONE)), raw(pipe, {**case.inputs(ONE), "return_dict": False})
        assert isinstance(as_tuple, tuple)
        assert torch.equal(as_tuple[0], images(as_dict))
        return images(as_dict)

    check(*ras_runs(case, run))


def per_prompt(pipe) -> str:
    """Wan's pipelines name it `num_videos_per_prompt`."""
    videos = "num_videos_per_prompt" in inspect.signature(type(pipe).__call__).parameters
    return "num_videos_per_prompt" if videos else "num_images_per_prompt"


@pytest.mark.parametrize("name", FAMILIES)
def test_num_images_per_prompt(name):
    """Two images of one prompt, their noise drawn from a generator (supplied latents are one image's)."""
    case = CASES[name]
    inputs = {k: v for k, v in case.inputs(ONE).items() if k != "latents"}
    reference = case.make()
    run_inputs = {**inputs, per_prompt(reference): 2}
    try:
        call(reference, {**run_inputs, "generator": generator()})
    except Exception as exc:  # noqa: BLE001 - whatever diffusers raises without RAS
        pytest.skip(f"{type(reference).__name__} without RAS cannot take {per_prompt(reference)}=2 with supplied "
                    f"prompt_embeds (it does not repeat them): {type(exc).__name__}: {exc}")  # fmt: skip
    plain, ratio_one, sparse_out = ras_runs(case, lambda pipe: call(pipe, {**run_inputs, "generator": generator()}))
    assert plain.shape[0] == sparse_out.shape[0] == 2
    check(plain, ratio_one, sparse_out)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_batch_of_two(name):
    case = CASES[name]
    plain, ratio_one, sparse_out = ras_runs(case, lambda pipe: call(pipe, case.inputs(TWO)))
    assert plain.shape[0] == sparse_out.shape[0] == 2
    check(plain, ratio_one, sparse_out)
    for i in range(2):
        assert not torch.equal(sparse_out[i], plain[i]), i
        assert relative(sparse_out[i], plain[i]) < CLOSE, (i, relative(sparse_out[i], plain[i]))


# -- saving, loading, state dicts --------------------------------------------------------------------------------


def same_weights(transformer, weights: dict) -> None:
    state = transformer.state_dict()
    assert list(state) == list(weights)
    assert all(torch.equal(state[k], weights[k]) for k in weights)


@pytest.mark.parametrize("name", FAMILIES)
def test_save_pretrained_with_ras_attached_loads_a_plain_pipeline(name, tmp_path):
    """The components the tiny pipelines lack (text encoders, tokenizers) are passed to `from_pretrained` as None.

    What a pipeline saved with RAS attached loads into is compared with what the same pipeline saved without RAS
    loads into: loaded weights may sit at other memory alignments than built ones, and matrix kernels then sum in
    another order (Wan's condition embedder differs by 1e-6), so a built pipeline is no exact reference."""
    case = CASES[name]
    plain_pipe = case.make()
    weights = plain_pipe.transformer.state_dict()
    plain_pipe.save_pretrained(tmp_path / "plain")
    missing = {k: None for k, v in plain_pipe.components.items() if v is None}
    reloaded = type(plain_pipe).from_pretrained(tmp_path / "plain", **missing)
    reloaded.set_progress_bar_config(disable=True)
    plain = call(reloaded, case.inputs(ONE))
    outputs = []
    for sampler in (exact(), sparse()):
        pipe = case.make()
        apply_ras(pipe, sampler)
        try:
            same_weights(pipe.transformer, weights)
            outputs.append(call(pipe, case.inputs(ONE)))
            same_weights(pipe.transformer, weights)  # nothing RAS caches during a call is registered on the model
            folder = tmp_path / str(len(outputs))
            pipe.save_pretrained(folder)
        finally:
            remove_ras(pipe)
        assert not [f for f in folder.rglob("*.json") if "rasfw" in f.read_text().lower()]
        missing = {k: None for k, v in pipe.components.items() if v is None}
        loaded = type(pipe).from_pretrained(folder, **missing)
        loaded.set_progress_bar_config(disable=True)
        no_ras_left(loaded)
        same_weights(loaded.transformer, weights)
        assert torch.equal(call(loaded, case.inputs(ONE)), plain)
    check(call(plain_pipe, case.inputs(ONE)), *outputs)


# -- attention slicing, repeated calls ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_attention_slicing(name):
    """Slicing enabled before `apply_ras`, and again (a smaller slice) after it; the same on the plain pipeline."""
    case = CASES[name]

    def run(pipe):
        pipe.enable_attention_slicing(1)
        out = call(pipe, case.inputs(ONE))
        pipe.disable_attention_slicing()
        assert torch.equal(call(pipe, case.inputs(ONE)), out)
        return out

    without = call(case.make(), case.inputs(ONE))
    plain, ratio_one, sparse_out = ras_runs(case, run, prepare=lambda p: p.enable_attention_slicing())
    assert torch.equal(plain, without)  # as diffusers' test_attention_slicing_forward_pass: slicing changes nothing
    check(plain, ratio_one, sparse_out)


@pytest.mark.parametrize("name", FAMILIES)
def test_two_calls_in_a_row_agree_and_remove_ras_gives_the_plain_pipeline(name):
    case = CASES[name]
    pipe = case.make()
    plain = call(pipe, case.inputs(ONE))
    outputs = []
    for sampler in (exact(), sparse()):
        apply_ras(pipe, sampler)
        try:
            first, second = call(pipe, case.inputs(ONE)), call(pipe, case.inputs(ONE))
        finally:
            remove_ras(pipe)
        assert torch.equal(first, second)
        no_ras_left(pipe)
        assert torch.equal(call(pipe, case.inputs(ONE)), plain)
        outputs.append(first)
    check(plain, *outputs)


# -- layerwise casting, diffusers' caches --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_layerwise_casting(name):
    case = CASES[name]

    def cast(pipe):
        pipe.transformer.enable_layerwise_casting(torch.float8_e4m3fn, torch.float32)

    check(*ras_runs(case, lambda pipe: call(pipe, case.inputs(ONE)), prepare=cast))


def _cache(kind: str, pipe):
    """diffusers' config of cache `kind`; an older diffusers release without it skips, naming the release."""
    import diffusers

    timestep = {"current_timestep_callback": lambda: pipe.current_timestep}
    name, settings = {
        "first_block": ("FirstBlockCacheConfig", {"threshold": 0.2}),
        "taylorseer": ("TaylorSeerCacheConfig", {"cache_interval": 2, "disable_cache_before_step": 1}),
        "faster": ("FasterCacheConfig", {"spatial_attention_block_skip_range": 2, "is_guidance_distilled": True, **timestep}),
        "pyramid": ("PyramidAttentionBroadcastConfig", {"spatial_attention_block_skip_range": 2, **timestep}),
    }[kind]
    config = getattr(diffusers, name, None)
    if config is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {name}")
    return config(**settings)


@pytest.mark.parametrize("kind", ["first_block", "taylorseer"])
@pytest.mark.parametrize("name", ["flux", "wan2.1"])  # the families whose pipelines open cache contexts
def test_diffusers_step_caches_that_ras_follows_run_with_no_warm_up(name, kind):
    case = CASES[name]
    plain, ratio_one, sparse_out = ras_runs(
        case, lambda pipe: call(pipe, case.inputs(ONE)), prepare=lambda pipe: pipe.transformer.enable_cache(_cache(kind, pipe))
    )
    check(plain, ratio_one, sparse_out)
    assert relative(sparse_out, plain) < CLOSE


@pytest.mark.parametrize("kind", ["faster", "pyramid"])
@pytest.mark.parametrize("name", ["flux", "wan2.1"])
def test_diffusers_step_caches_with_per_token_state_are_refused_before_any_step(name, kind):
    case = CASES[name]
    pipe = case.make()
    state = apply_ras(pipe, sparse())
    try:
        pipe.transformer.enable_cache(_cache(kind, pipe))
        with pytest.raises(ValueError, match=r"stateful hook .* RAS cannot follow; remove it \(transformer.disable_cache\(\)\)"):
            call(pipe, case.inputs(ONE))
        assert state.update_count is None  # no step ran
    finally:
        remove_ras(pipe)
