"""diffusers' step caches on the embedded pipeline: applied through diffusers' own hooks, removed exactly."""

from __future__ import annotations

import pytest
import torch

from rasfw import apply_ras, remove_ras
from rasfw.build import build
from rasfw.embedded.models import load_pipeline
from rasfw.flops import count_flops
from rasfw.sampler import DenseSampler, RegionAdaptiveSampler
from rasfw.step_caches import FirstBlockCache, TaylorSeerCache
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
    cache = build({"_target_": "rasfw.step_caches.TaylorSeerCache", "cache_interval": 4, "max_order": 2}, "cache", "cache")
    assert cache.params()["cache_interval"] == 4 and cache.params()["max_order"] == 2
    assert build({"_target_": "rasfw.step_caches.NoCache"}, "cache", "cache").params() == {}
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
        apply_ras(pipe, sampler)  # finds the cache's hooks at each generation and has them follow RAS's tokens
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
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("rasfw.attach._forget_step_caches", lambda sampler, state: None)
        with pytest.raises(RuntimeError, match="must match the size"):
            ras_beside(pipe, unfollowed, ras_sampler())


@needs_step_caches
def test_taylorseer_with_the_cli_defaults_computes_the_capture_step(pipe):
    """`cache=taylorseer` as the CLI builds it (interval 5, 3 steps before) would predict step 3, the dense step
    that fills every key/value cache before the first RAS step: the caches stayed zero. The cache forgets its
    state before a capture step, so that step runs every block: the image is RAS's own, bit for bit."""
    from pathlib import Path

    from omegaconf import OmegaConf

    cache = build(OmegaConf.load(Path(__file__).parents[2] / "conf" / "cache" / "taylorseer.yaml"), "cache", "cache")
    assert cache.disable_cache_before_step == 3 and cache.cache_interval == 5
    alone, _ = sample_with(pipe, ras_sampler())
    both, _ = ras_beside(pipe, cache, ras_sampler())
    assert torch.equal(both, alone)


@needs_step_caches
@pytest.mark.parametrize("name", ["first_block", "taylorseer"])
@pytest.mark.parametrize("order", ["before", "after"])
def test_diffusers_own_cache_functions_beside_ras_are_followed(pipe, name, order):
    """The same caches attached with diffusers' own functions (`transformer.enable_cache(TaylorSeerCacheConfig(...))`;
    `apply_first_block_cache` on the blocks before SD3's last), before or after `apply_ras`, are found at each
    generation and followed: the image equals the pairing through `cache=`, bit for bit."""
    import diffusers.hooks

    ours = FirstBlockCache(threshold=100.0) if name == "first_block" else TaylorSeerCache()
    expected, _ = ras_beside(pipe, ours, ras_sampler())
    transformer = pipe.transformer
    config = getattr(diffusers.hooks, ours.config_class)(**ours._config_kwargs())

    def attach():
        if name == "taylorseer":
            transformer.enable_cache(config)
        else:
            diffusers.hooks.apply_first_block_cache(ours._target(transformer), config)

    try:
        if order == "before":
            attach()
            apply_ras(pipe, ras_sampler())
        else:
            apply_ras(pipe, ras_sampler())
            attach()
        got, _ = sample(pipe)
    finally:
        remove_ras(pipe)
        if name == "taylorseer":
            transformer.disable_cache()
        else:
            ours._added = hooks(pipe)  # what diffusers attached, taken off as `cache=` takes its own off
            ours.remove(transformer)
    assert torch.equal(got, expected)
    assert hooks(pipe) == []


@needs_step_caches
def test_a_stateful_hook_rasfw_cannot_follow_is_refused_before_the_first_step(pipe):
    """A step cache that keeps per-token state RAS cannot follow (here: any stateful hook but First Block Cache
    and TaylorSeer) is refused in one line at `apply_ras`, or at the first transformer call when it was
    attached after: before any step runs, and nothing changes."""
    from diffusers.hooks import HookRegistry, ModelHook

    class Remember(ModelHook):
        _is_stateful = True

        def reset_state(self, module):
            return module

    block = pipe.transformer.transformer_blocks[0]
    registry = HookRegistry.check_if_exists_or_initialize(block)
    registry.register_hook(Remember(), "remember")
    try:
        with pytest.raises(ValueError, match=r"transformer_blocks\.0 carries the stateful hook 'remember' \(Remember\)"):
            apply_ras(pipe, ras_sampler())
        registry.remove_hook("remember", recurse=False)
        state = apply_ras(pipe, ras_sampler())
        registry.register_hook(Remember(), "remember")
        try:
            with pytest.raises(ValueError, match="carries the stateful hook 'remember'"):
                sample(pipe)
            assert state.update_count is None  # no step ran
        finally:
            remove_ras(pipe)
    finally:
        if registry.get_hook("remember") is not None:
            registry.remove_hook("remember", recurse=False)
        del block._diffusers_hook


@needs_step_caches
def test_first_block_cache_beside_ras_acts_on_the_dense_warm_up_only(pipe):
    """A loose threshold lets the cache skip blocks at dense warm-up steps 1-2; step 3, which fills the key/value
    caches, and RAS steps, whose token sets change, run every block. Dense and RAS calls alternate without a shape error."""
    alone, ras_flops = sample_with(pipe, ras_sampler())
    both, flops = ras_beside(pipe, FirstBlockCache(threshold=100.0), ras_sampler())
    _, dense_flops = sample(pipe)
    block_flops = dense_flops / 12 / len(pipe.transformer.transformer_blocks)  # about one block of one dense step
    skipped = ras_flops - flops
    assert 2 * block_flops < skipped < 2 * (dense_flops / 12)  # blocks of warm-up steps 1-2 (3 fills the caches)
    assert not torch.equal(both, alone)


def sample_with(pipe, sampler):
    apply_ras(pipe, sampler)
    try:
        return sample(pipe)
    finally:
        remove_ras(pipe)


@pytest.mark.parametrize("skipped_at", [3, 4])
def test_a_hook_that_skips_a_block_is_caught_before_its_stale_cache_is_used(pipe, skipped_at):
    """Every cache records the step it was written at. A hook that returns a block's inputs without running it, at
    the capture step (3) or at a RAS step (4), leaves that block's key/value cache stale: the next read (or the
    end of the step) raises one line naming the module and the hook, instead of a silently wrong image."""
    from diffusers.hooks import HookRegistry, ModelHook

    from rasfw.state import StaleCacheError

    class Skip(ModelHook):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def new_forward(self, module, hidden_states, encoder_hidden_states, *args, **kwargs):
            self.calls += 1
            if self.calls - 1 == skipped_at:  # one call per step (the embedded pipeline batches its CFG halves)
                return encoder_hidden_states, hidden_states
            return self.fn_ref.original_forward(hidden_states, encoder_hidden_states, *args, **kwargs)

    block = pipe.transformer.transformer_blocks[1]
    state = apply_ras(pipe, ras_sampler())
    registry = HookRegistry.check_if_exists_or_initialize(block)
    registry.register_hook(Skip(), "skipper")
    try:
        with pytest.raises(StaleCacheError, match=r"transformer_blocks\.1\.attn did not run at step "
                           rf"{skipped_at}.*hooks on its path: transformer_blocks\.1: skipper") as caught:
            sample(pipe)
        assert "\n" not in str(caught.value)
        assert state.caches == {}  # the failed generation's caches are freed at once
    finally:
        registry.remove_hook("skipper", recurse=False)
        del block._diffusers_hook
        remove_ras(pipe)
