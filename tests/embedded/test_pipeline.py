import numpy as np
import pytest
import torch

from rasfw.embedded.models import MiniPipeline, load_pipeline
from rasfw.embedded.models.pipeline import DEFAULT_CONFIG, build_pipeline, save_pipeline

TINY = {
    "transformer": {
        **DEFAULT_CONFIG["transformer"],
        "num_layers": 1,
        "attention_head_dim": 8,
        "num_attention_heads": 2,
        "joint_attention_dim": 16,
        "caption_projection_dim": 16,
        "pooled_projection_dim": 16,
    },
    "text_encoder": {"dim": 16, "pooled_dim": 16, "max_length": 8, "layers": 1, "heads": 2},
    "scheduler": dict(DEFAULT_CONFIG["scheduler"]),
}


def test_random_pipeline_non_square_in_unit_range():
    pipe = build_pipeline(TINY)
    assert isinstance(pipe, MiniPipeline) and "untrained" in pipe.weights_source
    g = torch.Generator().manual_seed(0)
    out = pipe(
        ["a small red circle at the top left", "a large blue square at the center"],
        num_inference_steps=3,
        height=16,
        width=24,
        generator=g,
        output_type="pt",
        progress=False,
    ).images
    assert out.shape == (2, 3, 16, 24)
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    again = pipe(
        ["a small red circle at the top left", "a large blue square at the center"],
        num_inference_steps=3,
        height=16,
        width=24,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        progress=False,
    ).images
    assert torch.equal(out, again)


def test_default_output_is_pil_images_like_a_diffusers_pipeline():
    pipe = build_pipeline(TINY)
    kwargs = {"num_inference_steps": 2, "height": 16, "width": 24, "progress": False}
    pictures = pipe(["a", "b"], generator=torch.Generator().manual_seed(0), **kwargs).images
    tensor = pipe(["a", "b"], generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images
    assert [p.size for p in pictures] == [(24, 16)] * 2 and pictures[0].mode == "RGB"
    expected = (tensor[1].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert (np.asarray(pictures[1]) == expected).all()
    (array,) = pipe(
        ["a", "b"], generator=torch.Generator().manual_seed(0), output_type="np", return_dict=False, **kwargs
    )
    assert array.shape == (2, 16, 24, 3) and np.array_equal(array, tensor.permute(0, 2, 3, 1).numpy())


def test_unknown_output_type_names_the_choices():
    with pytest.raises(ValueError, match="output_type must be one of pil, pt, np; got 'latent'"):
        build_pipeline(TINY)("a", num_inference_steps=1, output_type="latent", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer of at least 1; got 0"),
        ({"num_inference_steps": 2.5}, "num_inference_steps must be an integer of at least 1; got 2.5"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number; got nan"),
        ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number; got inf"),
    ],
)
def test_steps_and_guidance_are_checked_before_sampling(kwargs, message):
    """Dense too (with RAS the sampler refuses them as well): one line naming the argument, no sampled NaNs."""
    pipe = build_pipeline(TINY)
    with pytest.raises(ValueError, match=f"^{message}$"):
        pipe("a", progress=False, **{"num_inference_steps": 2, **kwargs})


def test_zero_steps_with_ras_names_num_inference_steps():
    from rasfw import apply_ras
    from tests.compat_cases import call, quarter, sd3, sd3_txt2img

    pipe = sd3()
    apply_ras(pipe, quarter())
    with pytest.raises(ValueError, match="^num_inference_steps must be at least 1; got 0$"):
        call(pipe, {**sd3_txt2img(), "num_inference_steps": 0})


def test_default_architecture_builds_with_256_tokens():
    pipe = build_pipeline()
    cfg = pipe.transformer.config
    assert (cfg.in_channels, cfg.out_channels, cfg.patch_size, cfg.sample_size) == (3, 3, 2, 32)
    assert (cfg.sample_size // cfg.patch_size) ** 2 == 256


def test_loop_calls_scheduler_step_once_per_timestep():
    pipe = build_pipeline(TINY)
    calls = []
    step = pipe.scheduler.step
    pipe.scheduler.step = lambda *a, **k: calls.append(1) or step(*a, **k)
    pipe(["a"], num_inference_steps=4, guidance_scale=1.0, progress=False)
    assert len(calls) == 4


def test_rejects_sizes_off_the_patch_grid():
    with pytest.raises(ValueError, match=r"^height must be a multiple of 2 \(patch size x latent scale\); got 15$"):
        build_pipeline(TINY)(["a"], num_inference_steps=1, height=15, progress=False)


def test_save_load_roundtrip(tmp_path):
    pipe = build_pipeline(TINY, seed=3)
    path = save_pipeline(tmp_path / "m.safetensors", pipe.transformer, pipe.text_encoder, TINY)
    loaded = load_pipeline(str(path))
    assert loaded.weights_source == str(path)
    assert loaded.transformer.config.num_layers == 1
    for a, b in zip(pipe.transformer.state_dict().values(), loaded.transformer.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    prompts = ["a small red circle at the top left"]
    torch.testing.assert_close(pipe.text_encoder(prompts)[0], loaded.text_encoder(prompts)[0])


def test_missing_weights_raise_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.weights: no such file"):
        load_pipeline(str(tmp_path / "nope.safetensors"))


def test_load_default_works():
    pipe = load_pipeline()
    assert pipe.weights_source.endswith(".safetensors") or "untrained" in pipe.weights_source


# -- called like diffusers' StableDiffusion3Pipeline ----------------------------------------------------------

PROMPTS = ["a small red circle at the top left", "a large blue square at the center"]
CALL = {"num_inference_steps": 3, "height": 16, "width": 24, "output_type": "pt", "progress": False}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_prompt_is_a_keyword_as_in_diffusers_and_positional_still_works():
    pipe = build_pipeline(TINY)
    positional = pipe(PROMPTS, generator=seeded(), **CALL).images
    assert torch.equal(pipe(prompt=PROMPTS, generator=seeded(), **CALL).images, positional)
    one = pipe(prompt=PROMPTS[0], generator=seeded(), **CALL).images  # a string: one image
    torch.testing.assert_close(one, positional[:1], rtol=1e-5, atol=1e-5)  # a batch of 1 rounds a little otherwise


def test_num_images_per_prompt_gives_that_many_images_per_prompt_in_a_row():
    """As diffusers: the batch is prompts x num_images_per_prompt, each prompt's images consecutive."""
    pipe = build_pipeline(TINY)
    images = pipe(PROMPTS, num_images_per_prompt=2, generator=seeded(), **CALL).images
    assert images.shape == (4, 3, 16, 24)
    repeated = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]]
    torch.testing.assert_close(images, pipe(repeated, generator=seeded(), **CALL).images, rtol=1e-5, atol=1e-5)
    assert not torch.equal(images[0], images[1])  # each image its own noise
    assert len(pipe(PROMPTS[0], num_images_per_prompt=3, num_inference_steps=1, progress=False).images) == 3  # PIL


def test_a_list_of_generators_draws_each_image_from_its_own():
    """diffusers' semantics: image i is what generating it alone with generator i gives."""
    pipe = build_pipeline(TINY)
    together = pipe(PROMPTS, generator=[seeded(5), seeded(7)], **CALL).images
    alone = torch.cat(
        [pipe(PROMPTS[0], generator=seeded(5), **CALL).images, pipe(PROMPTS[1], generator=seeded(7), **CALL).images]
    )
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    per_image = pipe(PROMPTS[0], num_images_per_prompt=2, generator=[seeded(5), seeded(7)], **CALL).images
    torch.testing.assert_close(
        per_image[1], pipe(PROMPTS[0], generator=seeded(7), **CALL).images[0], rtol=1e-5, atol=1e-5
    )


def test_negative_prompt_is_the_unconditional_half_of_guidance():
    pipe = build_pipeline(TINY)
    default = pipe(PROMPTS, generator=seeded(), guidance_scale=4.0, **CALL).images
    assert torch.equal(
        pipe(PROMPTS, negative_prompt="", generator=seeded(), guidance_scale=4.0, **CALL).images, default
    )
    negative = pipe(
        PROMPTS, negative_prompt="a large blue square", generator=seeded(), guidance_scale=4.0, **CALL
    ).images
    assert not torch.equal(negative, default)
    listed = ["a large blue square", "a large blue square"]
    assert torch.equal(
        pipe(PROMPTS, negative_prompt=listed, generator=seeded(), guidance_scale=4.0, **CALL).images, negative
    )
    unguided = pipe(PROMPTS, generator=seeded(), guidance_scale=1.0, **CALL).images
    ignored = pipe(
        PROMPTS, negative_prompt="a large blue square", generator=seeded(), guidance_scale=1.0, **CALL
    ).images
    assert torch.equal(ignored, unguided)  # without guidance there is no unconditional half, as in diffusers


def test_callback_on_step_end_sees_every_step_and_can_replace_the_latents():
    pipe = build_pipeline(TINY)
    seen = []

    def callback(called, step, timestep, callback_kwargs):
        seen.append((called, step, float(timestep), sorted(callback_kwargs), callback_kwargs["prompt_embeds"].shape[0]))
        return {"latents": torch.zeros_like(callback_kwargs["latents"])} if step == 2 else {}

    images = pipe(PROMPTS, generator=seeded(), callback_on_step_end=callback,
                  callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], **CALL).images  # fmt: skip
    assert [entry[1] for entry in seen] == [0, 1, 2] and all(entry[0] is pipe for entry in seen)
    assert [entry[2] for entry in seen] == pipe.scheduler.timesteps.tolist()
    assert all(entry[3] == ["latents", "prompt_embeds"] and entry[4] == 4 for entry in seen)  # CFG: both halves
    assert torch.equal(images, torch.full_like(images, 0.5))  # the last step's latents were replaced by zeros
    plain = pipe(PROMPTS, generator=seeded(), callback_on_step_end=lambda *args: {}, **CALL).images
    assert torch.equal(plain, pipe(PROMPTS, generator=seeded(), **CALL).images)  # returning nothing changes nothing


def test_the_latents_keyword_is_the_starting_noise():
    pipe = build_pipeline(TINY)
    noise = torch.randn(2, 3, 16, 24, generator=seeded(3))
    assert torch.equal(pipe(PROMPTS, latents=noise, **CALL).images, pipe(PROMPTS, generator=seeded(3), **CALL).images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": []}, "prompt must be a string or a non-empty list of strings; got an empty list"),
        ({"prompt": None}, "prompt must be a string or a non-empty list of strings; got None"),
        ({"prompt": ["a", 3]}, "prompt must be a string or a non-empty list of strings; got ['a', 3]"),
        ({"generator": [seeded(), seeded(), seeded()]},
         "generator must be one torch.Generator or a list of one per image (2: prompts x num_images_per_prompt); got a list of 3"),
        ({"generator": [seeded()]},
         "generator must be one torch.Generator or a list of one per image (2: prompts x num_images_per_prompt); got a list of 1"),
        ({"generator": 0}, "generator must be a torch.Generator or a list of them; got 0"),
        ({"negative_prompt": ["a"]}, "negative_prompt must be a string or a list of one per prompt (2); got a list of 1"),
        ({"negative_prompt": 3}, "negative_prompt must be a string or a list of strings; got 3"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt must be an integer >= 1; got 0"),
        ({"height": 96, "width": 160}, "height must be at most 64 for this model (its position embedding); got 96"),
        ({"width": 15}, "width must be a multiple of 2 (patch size x latent scale); got 15"),
        ({"height": 0}, "height must be in [1, inf); got 0"),
        ({"callback_on_step_end": 3}, "callback_on_step_end must be callable (pipe, step, timestep, callback_kwargs); got 3"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]},
         "callback_on_step_end_tensor_inputs must be names from latents, prompt_embeds, pooled_prompt_embeds; got 'noise'"),
        ({"callback_on_step_end": lambda *args: None},
         "callback_on_step_end must return a dict (of tensors from latents, prompt_embeds, pooled_prompt_embeds); got NoneType"),
        ({"latents": torch.zeros(1, 3, 16, 24)},
         "latents must be a tensor of shape (2, 3, 16, 24) (images, channels, height, width); got (1, 3, 16, 24)"),
        ({"prompt_embeds": torch.zeros(1)}, "prompt_embeds: not an argument of the embedded pipeline; it takes prompt, "),
    ],
)  # fmt: skip
def test_each_refusal_is_one_line_naming_the_argument(kwargs, message):
    call = {"prompt": PROMPTS, **CALL, "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError) as info:
        build_pipeline(TINY)(**call)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text


def test_a_size_the_model_cannot_sample_is_refused_as_the_cli_refuses_it(tmp_path, capsys):
    """One shared check (`rasfw.sizes.check_image_size`): the pipeline's line is the CLI's."""
    from rasfw.app.cli import main

    with pytest.raises(ValueError) as info:
        load_pipeline()("a", height=96, width=160, num_inference_steps=1, progress=False)
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none", "progress=false", "compare_dense=false"]
    with pytest.raises(SystemExit):
        main([*quiet, "height=96", "width=160", f"hydra.run.dir={tmp_path}"])
    assert capsys.readouterr().err.strip() == f"error: {info.value}"
