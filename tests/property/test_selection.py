"""Properties of token selection and step planning, on random shapes, ratios and schedules."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rasfw import RegionAdaptiveSampler, RegionState, TokenGrid
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset, NoReset


@settings(max_examples=200, deadline=None)
@given(
    batch=st.integers(1, 4),
    n=st.integers(1, 300),
    skip_share=st.floats(0, 0.999),
    high=st.floats(0, 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_selection_returns_the_exact_count_of_unique_sorted_in_range_indices(batch, n, skip_share, high, seed):
    skip = min(int(skip_share * n), n - 1)
    sampler = RegionAdaptiveSampler(high_ratio=high)
    score = torch.rand(batch, n, generator=torch.Generator().manual_seed(seed))
    active = sampler.select(score, skip)
    assert active.shape == (batch, n - skip)
    for row in active:
        assert row.unique().numel() == n - skip
        assert torch.equal(row, row.sort().values)
        assert 0 <= int(row.min()) and int(row.max()) < n


@settings(max_examples=100, deadline=None)
@given(n=st.integers(4, 200), skip_share=st.floats(0.05, 0.95), high=st.floats(0, 1), seed=st.integers(0, 1000))
def test_high_ratio_caches_the_top_share_and_the_bottom_rest(n, skip_share, high, seed):
    skip = max(1, min(int(skip_share * n), n - 1))
    score = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).float()[None]  # distinct scores
    active = RegionAdaptiveSampler(high_ratio=high).select(score, skip)[0]
    cached = sorted(set(range(n)) - set(active.tolist()), key=lambda i: float(score[0, i]))
    ranks = sorted(int(score[0, i]) for i in cached)
    top = math.floor(skip * high)
    assert ranks == list(range(skip - top)) + list(range(n - top, n))


@settings(max_examples=200, deadline=None)
@given(
    steps=st.integers(1, 40),
    n=st.integers(1, 5000),
    ratio=st.floats(0.001, 1.0),
    warmup=st.integers(0, 10),
)
def test_a_ras_step_always_skips_at_least_one_token_and_keeps_at_least_one(steps, n, ratio, warmup):
    sampler = RegionAdaptiveSampler(ratio=ConstantRatio(ratio, warmup), reset=NoReset())
    for step in range(steps):
        skip = sampler.skip_count(step, steps, n)
        assert 0 <= skip <= n - 1
        if step == 0 or step < warmup:
            assert skip == 0
        else:
            assert skip == min(int(math.floor((1 - ratio) * n + 1e-6)), n - 1)


@settings(max_examples=50, deadline=None)
@given(steps=st.integers(2, 30), rows=st.integers(1, 6), cols=st.integers(1, 6), batch=st.integers(1, 3))
def test_planning_marks_dense_steps_and_captures_before_each_ras_step(steps, rows, cols, batch):
    grid = TokenGrid(rows, cols, 2, 4)
    sampler = RegionAdaptiveSampler(ratio=ConstantRatio(0.5, 1), reset=FixedReset([s for s in (3, 7) if s < steps]))
    state = RegionState()
    sampler.begin(state, steps)
    output = torch.randn(batch, 4, rows * 2, cols * 2)
    for step in range(steps):
        plan = sampler.prepare_forward(state, 2 * batch, grid)
        assert plan.dense == (state.skips[step] == 0)
        if plan.dense:
            assert plan.capture == (step + 1 < steps and state.skips[step + 1] > 0)
        else:
            assert plan.index.shape == (2 * batch, grid.num_tokens - state.skips[step])
        sampler.observe(state, output, grid)
        state.step += 1
    assert state.update_count.shape == (batch, grid.num_tokens)
    assert int(state.update_count.sum()) == batch * sum(state.active_tokens_per_step)


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(1, 3),
    frames=st.integers(1, 4),
    rows=st.integers(1, 4),
    cols=st.integers(1, 4),
    patch=st.integers(1, 3),
    patch_t=st.integers(1, 2),
    channels=st.integers(1, 4),
)
def test_video_token_grid_round_trips_and_numbers_tokens_frame_then_row_then_col(
    batch, frames, rows, cols, patch, patch_t, channels
):
    grid = TokenGrid(rows, cols, patch, channels, layout="bcfhw", frames=frames, patch_t=patch_t)
    latent = torch.randn(batch, channels, frames * patch_t, rows * patch, cols * patch)
    tokens = grid.to_tokens(latent)
    assert tokens.shape == (batch, frames * rows * cols, patch_t * patch * patch, channels)
    assert torch.equal(grid.from_tokens(tokens), latent)
    # token (f, r, c) holds the latent block at frame f, row r, column c, as Wan's Conv3d patches are flattened
    f, r, c = frames - 1, rows - 1, cols - 1
    token = tokens[:, (f * rows + r) * cols + c]  # (B, P, C)
    block = latent[:, :, f * patch_t:(f + 1) * patch_t, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
    assert torch.equal(token, block.flatten(2).transpose(1, 2))  # P ordered (t, y, x)
