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
    (array,) = pipe(["a", "b"], generator=torch.Generator().manual_seed(0), output_type="np", return_dict=False, **kwargs)
    assert array.shape == (2, 16, 24, 3) and np.array_equal(array, tensor.permute(0, 2, 3, 1).numpy())


def test_unknown_output_type_names_the_choices():
    with pytest.raises(ValueError, match="output_type must be one of pil, pt, np; got 'latent'"):
        build_pipeline(TINY)("a", num_inference_steps=1, output_type="latent", progress=False)


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
    with pytest.raises(ValueError, match="multiples of the patch size"):
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
