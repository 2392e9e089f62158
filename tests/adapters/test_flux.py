"""The Flux adapter against the adapter contract, through Flux's denoising loop on packed latents."""

from __future__ import annotations

import pytest
import torch

from rasfw import apply_ras, remove_ras
from rasfw.adapters.flux import FluxAdapter
from rasfw.adapters.flux import latent_image_ids as image_ids
from rasfw.pipelines.tiny import tiny_flux_transformer
from rasfw.testing.tiny import FluxLoop
from tests.adapters.contract import AdapterContract
from tests.helpers import kv_cache_off_and_on, ras, relative


class TestFluxAdapter(AdapterContract):
    """Double- and single-stream blocks, 3-axis RoPE, guidance embedding; 2x2 packing."""

    patch_sizes = (2,)
    size = (16, 24)
    cfg_copies = 1  # guidance is an embedding: one transformer row per image

    def make_pipe(self, patch_size):
        return FluxLoop(tiny_flux_transformer())

    def forward_inputs(self, transformer, batch, height, width, seed):
        return FluxLoop(transformer).forward_inputs(batch, height, width, seed)


def test_grid_comes_from_img_ids():
    loop = FluxLoop(tiny_flux_transformer())
    state = apply_ras(loop, ras())
    loop(batch=1, height=8, width=12, steps=6)
    assert state.grid_shape == (1, 4, 6)


def test_two_calls_of_a_step_without_cache_context_have_caches_each():
    """A pipeline calling the transformer twice a step without `cache_context` (Flux img2img's true CFG): the
    second call of every step is a cache context of its own, so it neither overwrites nor reads the first's."""

    def run(twice: bool) -> tuple[torch.Tensor, set[str]]:
        loop = FluxLoop(tiny_flux_transformer())
        state = apply_ras(loop, ras())
        inner = loop.transformer

        class Twice(torch.nn.Module):
            def forward(self, *args, **kwargs):
                inner(*args, **{**kwargs, "encoder_hidden_states": -kwargs["encoder_hidden_states"]})
                return inner(*args, **kwargs)

        if twice:
            loop.transformer = Twice()
        out = loop(batch=1, height=8, width=8, steps=6)
        return out, set(state.calls)

    once, contexts = run(False)
    twice, both = run(True)
    assert contexts == {"default"} and both == {"default", "default#2"}
    assert torch.equal(twice, once)  # the second call (the one returned) is sampled as if it were alone


def true_cfg(loop: FluxLoop, order: tuple[str, str], scale: float = 4.0) -> torch.Tensor:
    """Flux's true CFG: a `cond` and an `uncond` (other prompt) call per step, each in its cache context."""
    transformer = loop.transformer

    def two_calls(**inputs):
        negative = {**inputs, "encoder_hidden_states": -inputs["encoder_hidden_states"]}
        outs = {}
        for name in order:
            with transformer.cache_context(name):
                outs[name] = transformer(**(inputs if name == "cond" else negative))[0]
        return (outs["uncond"] + scale * (outs["cond"] - outs["uncond"]),)

    loop.transformer = lambda **inputs: two_calls(**{k: v for k, v in inputs.items() if k != "return_dict"})
    try:
        return loop(batch=2, height=8, width=12, steps=6)
    finally:
        loop.transformer = transformer


def test_true_cfg_keeps_one_cache_per_context():
    """Each context has its own caches, so the order of the two calls changes nothing; shared caches would."""
    loop = FluxLoop(tiny_flux_transformer())
    dense = true_cfg(loop, ("cond", "uncond"))
    state = apply_ras(loop, ras())
    seen: list[set[str]] = []
    handle = loop.transformer.register_forward_hook(lambda *_: seen.append(set(state.caches)))
    first = true_cfg(loop, ("cond", "uncond"))
    handle.remove()
    assert {"cond", "uncond"} in seen
    assert torch.equal(true_cfg(loop, ("uncond", "cond")), first)
    assert not torch.equal(first, dense)  # both branches sampled with RAS: not dense, but close to it
    # measured on these inputs (float32, CPU): relative L2 0.033, max abs 0.17 of values up to 3.3 (RAS on the
    # plain loop, without CFG, is as far from dense: 0.033); bound 3x that
    assert relative(first, dense) < 0.1, relative(first, dense)


def test_kv_cache_off_differs_from_kv_cache_on_but_stays_close():
    """With the K/V cache off a RAS step's attention sees only the active tokens' keys and values, so the result
    differs from the cached run's, but not by much."""
    off, on = kv_cache_off_and_on(FluxLoop(tiny_flux_transformer()), batch=1, height=8, width=8, steps=6)
    assert not torch.equal(off, on)  # the setting took effect
    # measured on these inputs (float32, CPU): relative L2 0.0066, max abs 0.028 of values up to 3.8; bound 3x that
    assert relative(off, on) < 0.02, relative(off, on)


def test_img_ids_that_are_not_one_grid_are_refused():
    adapter = FluxAdapter()
    ids = torch.cat([image_ids(2, 2), image_ids(2, 2)])  # a reference image's tokens appended (Kontext)
    with pytest.raises(ValueError, match="one rows x cols grid"):
        adapter.call_grid((), {"hidden_states": torch.zeros(1, 8, 16), "img_ids": ids, "txt_ids": torch.zeros(3, 3)})


def test_grid_before_any_transformer_call_explains():
    with pytest.raises(ValueError, match="no transformer call with 6 image tokens"):
        FluxAdapter().grid(torch.zeros(1, 6, 16))


def test_a_context_first_called_at_a_ras_step_runs_dense_and_fills_its_caches():
    """Its caches were never filled, so a RAS call would attend to nothing real: its first call runs dense (equal
    to the plain transformer) and captures; from the next step on it recomputes the active tokens only."""
    loop = FluxLoop(tiny_flux_transformer())
    state = apply_ras(loop, ras())
    transformer, seen, late = loop.transformer, {"calls": 0}, []

    def late_uncond(**inputs):
        seen["calls"] += 1
        with transformer.cache_context("cond"):
            out = transformer(**inputs)
        if seen["calls"] > 3:  # "uncond" joins only from step 3, a RAS step
            with transformer.cache_context("uncond"):
                out_uncond = transformer(**inputs)[0]
                late.append((state.forward.dense, out_uncond, inputs))
        return out

    loop.transformer = late_uncond
    loop(batch=1, height=8, width=8, steps=6)
    assert [dense for dense, _, _ in late] == [True, False, True]  # steps 3 (its first), 4 (RAS), 5 (a reset)
    _, first, inputs = late[0]
    remove_ras(loop)
    loop.transformer = transformer
    with torch.no_grad():
        assert torch.equal(first, transformer(**inputs)[0])


def test_packing_and_ids_match_the_flux_pipeline():
    """rasfw's one copy of Flux's 2x2 packing and position ids equals diffusers' own."""
    from diffusers import FluxPipeline

    from rasfw.adapters.flux import latent_image_ids, pack_latents

    latents = torch.randn(2, 4, 6, 10)
    assert torch.equal(pack_latents(latents), FluxPipeline._pack_latents(latents, 2, 4, 6, 10))
    expected = FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32)
    assert torch.equal(latent_image_ids(3, 5), expected)
