"""RAS on diffusers' SD3 image-to-image pipeline: the schedule follows the steps that run (`strength`)."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusion3Img2ImgPipeline

from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
from rasfw.pipelines.tiny import POOLED_DIM, TEXT_DIM, TEXT_LEN, tiny_sd3_pipeline
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset, NoReset
from rasfw.testing.tiny import VAE_SCALE, per_image

STEPS, STRENGTH = 10, 0.6  # diffusers runs the last int(10 * 0.6) = 6 of 10 steps (set_begin_index(4))


def img2img() -> StableDiffusion3Img2ImgPipeline:
    pipe = StableDiffusion3Img2ImgPipeline(**tiny_sd3_pipeline().components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def run(pipe, steps: int = STEPS, strength: float = STRENGTH) -> torch.Tensor:
    text, pooled, neg_text, neg_pooled = per_image(2, 0, (TEXT_LEN, TEXT_DIM), (POOLED_DIM,), (TEXT_LEN, TEXT_DIM), (POOLED_DIM,))
    image = torch.rand(2, 3, 8 * VAE_SCALE, 12 * VAE_SCALE, generator=torch.Generator().manual_seed(1))  # [0, 1]
    return pipe(
        image=image, strength=strength, prompt_embeds=text, pooled_prompt_embeds=pooled, negative_prompt_embeds=neg_text,
        negative_pooled_prompt_embeds=neg_pooled, num_inference_steps=steps, guidance_scale=3.0, output_type="latent",
        generator=torch.Generator().manual_seed(2),
    ).images  # fmt: skip


def test_ratio_one_is_bitwise_the_unmodified_img2img_pipeline():
    pipe = img2img()
    dense = run(pipe)
    apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(1.0, 2), reset=NoReset()))
    assert torch.equal(run(pipe), dense)
    remove_ras(pipe)
    assert torch.equal(run(pipe), dense) and not vars(pipe.scheduler).keys() & {"step", "set_timesteps", "set_begin_index"}


def test_the_schedule_is_planned_over_the_steps_that_run_and_the_caches_are_freed():
    pipe = img2img()
    dense = run(pipe)
    state = apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 2), reset=FixedReset([3])))
    out = run(pipe)
    n = state.num_tokens
    assert state.num_steps == 6 and state.step == 6  # 6 of the 10 steps ran, and the generation ended
    assert state.active_tokens_per_step == [n, n, n - int(0.75 * n), n, n - int(0.75 * n), n - int(0.75 * n)]
    assert state.memory_bytes() == 0 and not state.caches  # freed after the last step that ran
    assert torch.isfinite(out).all() and not torch.equal(out, dense)
    remove_ras(pipe)


def test_a_reset_past_the_steps_that_run_names_the_setting():
    pipe = img2img()
    apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 2), reset=FixedReset([8])))
    with pytest.raises(ValueError, match=r"reset.steps \(FixedReset\(steps=...\)\) must lie in \[0, 6\) for steps=6"):
        run(pipe)
    remove_ras(pipe)


def test_remove_refuses_to_restore_over_a_scheduler_method_replaced_since():
    pipe = img2img()
    apply_ras(pipe, RegionAdaptiveSampler())
    ours = pipe.scheduler.step
    pipe.scheduler.step = lambda *args, **kwargs: ours(*args, **kwargs)  # another library wraps it after rasfw
    with pytest.raises(ValueError, match=r"remove_ras: scheduler.step was replaced after apply_ras .*nothing was removed"):
        remove_ras(pipe)
    pipe.scheduler.step = ours
    remove_ras(pipe)  # everything is rasfw's again: removal goes through
    assert "step" not in vars(pipe.scheduler)
