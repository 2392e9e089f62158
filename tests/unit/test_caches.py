"""diffusers' step caches on the embedded pipeline: applied through diffusers' own hooks, removed exactly."""

from __future__ import annotations

import pytest
import torch

from rasfw import apply_ras, remove_ras
from rasfw.build import build
from rasfw.caches import FirstBlockCache, TaylorSeerCache
from rasfw.embedded.models import load_pipeline
from rasfw.flops import count_flops
from rasfw.sampler import DenseSampler, RegionAdaptiveSampler
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset
from tests.markers import needs_step_caches

PROMPTS = ["a small red circle at the top left", "a large blue square at the center"]


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()


def sample(pipe, steps=12):
    return count_flops(lambda: pipe(PROMPTS, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                                    output_type="pt", progress=False).images)  # fmt: skip


def hooks(pipe):
    return sorted((name, hook) for name, m in pipe.transformer.named_modules()
                  for hook in getattr(getattr(m, "_diffusers_hook", None), "hooks", {}))  # fmt: skip


@needs_step_caches
@pytest.mark.parametrize("cache", [FirstBlockCache(threshold=0.5), TaylorSeerCache(cache_interval=3, disable_cache_before_step=2)])
def test_a_step_cache_saves_flops_and_its_removal_restores_the_pipeline(pipe, cache):
    dense, dense_flops = sample(pipe)
    before = hooks(pipe)
    cache.apply(pipe.transformer)
    try:
        assert hooks(pipe) != before  # diffusers' hooks are on the blocks
        cached, flops = sample(pipe)
    finally:
        cache.remove(pipe.transformer)
    assert hooks(pipe) == before
    assert flops < dense_flops and not torch.equal(cached, dense)
    assert torch.equal(sample(pipe)[0], dense)


@needs_step_caches
def test_a_step_cache_runs_beside_the_dense_sampler_hooks(pipe):
    """`sampler=dense cache=...`: the RAS hooks (dense) and diffusers' cache hooks on one transformer."""
    cache = FirstBlockCache(threshold=0.5)
    alone = None
    cache.apply(pipe.transformer)
    try:
        alone = sample(pipe)[0]
        apply_ras(pipe, DenseSampler())
        try:
            both = sample(pipe)[0]
        finally:
            remove_ras(pipe)
    finally:
        cache.remove(pipe.transformer)
    assert torch.equal(alone, both)


@needs_step_caches
def test_the_pipeline_opens_the_cache_context_diffusers_hooks_need(pipe):
    """diffusers' own `apply_first_block_cache` on blocks of the embedded transformer: no "No cache context is set"."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    view = torch.nn.Module()
    view.transformer_blocks = torch.nn.ModuleList(list(pipe.transformer.transformer_blocks)[:-1])
    cache = FirstBlockCache(threshold=0.5)
    before = hooks(pipe)
    apply_first_block_cache(view, FirstBlockCacheConfig(threshold=0.5))
    try:
        sample(pipe, steps=4)
    finally:
        cache._added = sorted(set(hooks(pipe)) - set(before))
        cache.remove(pipe.transformer)
    assert hooks(pipe) == before


@needs_step_caches
def test_applying_twice_is_an_error(pipe):
    cache = TaylorSeerCache()
    cache.apply(pipe.transformer)
    try:
        with pytest.raises(ValueError, match="cache=taylorseer is already applied"):
            cache.apply(pipe.transformer)
    finally:
        cache.remove(pipe.transformer)


def test_a_cache_missing_from_the_installed_diffusers_is_one_line(pipe, monkeypatch):
    import diffusers.hooks

    monkeypatch.delattr(diffusers.hooks, "TaylorSeerCacheConfig", raising=False)  # absent before 0.36 anyway
    with pytest.raises(ValueError, match=r"^cache=taylorseer: the installed diffusers [\d.]+\S* has no TaylorSeerCacheConfig"):
        TaylorSeerCache().apply(pipe.transformer)


def test_first_block_cache_needs_three_blocks():
    from rasfw.embedded.models.pipeline import DEFAULT_CONFIG, build_pipeline

    config = {**DEFAULT_CONFIG, "transformer": {**DEFAULT_CONFIG["transformer"], "num_layers": 2}}
    with pytest.raises(ValueError, match="cache=first_block needs at least 3 transformer blocks"):
        FirstBlockCache().apply(build_pipeline(config).transformer)


@needs_step_caches
def test_cache_configs_build_with_diffusers_parameter_names():
    cache = build({"_target_": "rasfw.caches.TaylorSeerCache", "cache_interval": 4, "max_order": 2}, "cache", "cache")
    assert cache.params()["cache_interval"] == 4 and cache.params()["max_order"] == 2
    assert build({"_target_": "rasfw.caches.NoCache"}, "cache", "cache").params() == {}
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    for cls, config in ((FirstBlockCache, FirstBlockCacheConfig), (TaylorSeerCache, TaylorSeerCacheConfig)):
        assert set(cls().params()) <= set(config.__dataclass_fields__)  # named as diffusers names them


@needs_step_caches
@pytest.mark.parametrize("cache", [FirstBlockCache(threshold=0.5), TaylorSeerCache(cache_interval=3, disable_cache_before_step=2)])
def test_a_generation_starts_without_the_last_ones_cache_state(pipe, cache):
    """The embedded pipeline resets diffusers' stateful hooks after each call, as diffusers' pipelines do:
    TaylorSeer carried its step count and factors into the next call, which then gave another image."""
    cache.apply(pipe.transformer)
    try:
        first, second = sample(pipe)[0], sample(pipe)[0]
    finally:
        cache.remove(pipe.transformer)
    assert torch.equal(first, second)


def ras_beside(pipe, cache, sampler):
    """What `python -m rasfw sampler=ras cache=...` runs: the cache, RAS, and the cache following RAS's tokens."""
    cache.apply(pipe.transformer)
    try:
        state = apply_ras(pipe, sampler)
        cache.follow(state, pipe.transformer)
        try:
            return sample(pipe)
        finally:
            remove_ras(pipe)
    finally:
        cache.remove(pipe.transformer)


def ras_sampler():
    return RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 4), reset=FixedReset([8]))


@needs_step_caches
def test_taylorseer_beside_ras_never_extrapolates_across_token_sets(pipe):
    """Every RAS step computes a new token set, so the cache forgets its factors around it and never predicts a
    RAS step: with no prediction possible in the 4 dense warm-up steps, the image is RAS's own, bit for bit.
    Without `follow`, state kept from a dense step meets a RAS step's fewer tokens: a shape error."""
    alone, ras_flops = sample_with(pipe, ras_sampler())
    both, flops = ras_beside(pipe, TaylorSeerCache(cache_interval=2, disable_cache_before_step=4), ras_sampler())
    assert torch.equal(both, alone) and flops == ras_flops
    unfollowed = TaylorSeerCache(cache_interval=2, disable_cache_before_step=4)
    unfollowed.follow = lambda state, transformer: None
    with pytest.raises(RuntimeError, match="must match the size"):
        ras_beside(pipe, unfollowed, ras_sampler())


@needs_step_caches
def test_first_block_cache_beside_ras_acts_on_the_dense_warm_up_only(pipe):
    """A loose threshold lets the cache skip blocks at dense warm-up steps 1-3; RAS steps, whose token sets
    change, run every block. Dense and RAS calls alternate without a shape error."""
    alone, ras_flops = sample_with(pipe, ras_sampler())
    both, flops = ras_beside(pipe, FirstBlockCache(threshold=100.0), ras_sampler())
    _, dense_flops = sample(pipe)
    block_flops = dense_flops / 12 / len(pipe.transformer.transformer_blocks)  # about one block of one dense step
    skipped = ras_flops - flops
    assert 2 * block_flops < skipped < 3 * (dense_flops / 12)  # blocks of warm-up steps 1-3, no more
    assert not torch.equal(both, alone)


def sample_with(pipe, sampler):
    apply_ras(pipe, sampler)
    try:
        return sample(pipe)
    finally:
        remove_ras(pipe)
