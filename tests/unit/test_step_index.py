"""RAS's step is the scheduler's (`step_index` less `begin_index`), not a count of `scheduler.step` calls: a loop
that starts inside the timesteps without `set_begin_index` keeps RAS on the schedule's own positions."""

from __future__ import annotations

import torch

from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
from rasfw.attach import scheduler_step
from rasfw.pipelines.tiny import LATENT_CHANNELS, POOLED_DIM, TEXT_DIM, TEXT_LEN
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset
from rasfw.testing.tiny import tiny_sd3_loop


def run_tail(pipe, steps: int, start: int) -> torch.Tensor:
    """Sample over `timesteps[start:]` as old img2img loops did: no `set_begin_index`, the scheduler finds its
    index from the first timestep it is given."""
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, LATENT_CHANNELS, 16, 16, generator=gen)
    context, pooled = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=gen), torch.randn(1, POOLED_DIM, generator=gen)
    pipe.scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in pipe.scheduler.timesteps[start:]:
            out = pipe.transformer(hidden_states=latents, encoder_hidden_states=context, pooled_projections=pooled,
                                   timestep=t.expand(1), return_dict=False)[0]  # fmt: skip
            latents = pipe.scheduler.step(out, t, latents, return_dict=False)[0]
    return latents


def test_a_loop_that_starts_inside_the_timesteps_follows_the_schedulers_positions():
    pipe = tiny_sd3_loop()
    sampler = RegionAdaptiveSampler(ratio=ConstantRatio(0.5, warmup=2), reset=FixedReset([8]))
    state = apply_ras(pipe, sampler)
    seen = []
    state.step_callbacks.append(lambda s: seen.append(s.step))
    run_tail(pipe, steps=12, start=4)
    assert seen == list(range(5, 13))  # counted calls would say 1..8: the schedule read at the wrong positions
    assert state.step == state.num_steps == 12 and not state.caches  # the generation ended: its caches are freed
    remove_ras(pipe)


def test_the_step_falls_back_to_the_count_for_a_scheduler_without_a_step_index():
    class Plain:
        pass

    class Indexed:
        step_index, begin_index = 7, 3

    assert scheduler_step(Plain(), 5) == 5
    assert scheduler_step(Indexed(), 5) == 4
