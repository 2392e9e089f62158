"""RAS on the unmodified diffusers pipelines (SD3, Lumina-Next, Flux, Wan), their runners and model configs."""

from __future__ import annotations

import inspect

import pytest
import torch
from hydra import compose, initialize_config_module

from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
from rasfw.pipelines.runners_diffusers import (
    SD3Runner,
    TinyFluxRunner,
    TinyLuminaNextRunner,
    TinySD3Runner,
    TinyWanRunner,
)
from rasfw.pipelines.tiny import (
    flux_scheduler,
    tiny_flux_pipeline,
    tiny_flux_transformer,
    tiny_lumina_next_pipeline,
    tiny_sd3_pipeline,
    tiny_wan_pipeline,
)
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset, NoReset
from rasfw.testing.tiny import FluxCall, LuminaNextCall, SD3Call, WanCall


def test_scheduler_signature_survives_apply_ras():
    """FluxPipeline passes `sigmas=`, which diffusers only does if `set_timesteps`'s signature shows it."""

    class Pipe:
        transformer, scheduler = tiny_flux_transformer(), flux_scheduler()

    pipe = Pipe()
    apply_ras(pipe, RegionAdaptiveSampler())
    try:
        assert "sigmas" in inspect.signature(pipe.scheduler.set_timesteps).parameters
    finally:
        remove_ras(pipe)


FAMILIES = [
    pytest.param(lambda: SD3Call(tiny_sd3_pipeline()), id="sd3"),
    pytest.param(lambda: LuminaNextCall(tiny_lumina_next_pipeline()), id="lumina_next"),
    pytest.param(lambda: FluxCall(tiny_flux_pipeline()), id="flux"),
    pytest.param(lambda: WanCall(tiny_wan_pipeline()), id="wan"),
    pytest.param(lambda: WanCall(tiny_wan_pipeline(two_stage=True)), id="wan2.2"),
]


def run(call, **kwargs):
    return call(**{"batch": 2, "height": 8, "width": 12, "steps": 6, "guidance": 3.0, "seed": 0, **kwargs})


@pytest.mark.parametrize("make", FAMILIES)
def test_unmodified_pipeline_ratio_one_is_bitwise_and_remove_restores(make):
    call = make()
    pipe = call.pipe  # the diffusers pipeline object itself gets RAS
    dense = run(call)
    pipe_vars = set(vars(pipe))
    apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(1.0, 2), reset=NoReset()))
    assert torch.equal(run(call), dense)
    remove_ras(pipe)
    apply_ras(pipe, RegionAdaptiveSampler(ratio=ConstantRatio(0.25, 2), reset=FixedReset([4])))
    assert "__call__" not in vars(pipe)
    out = run(call)
    assert torch.isfinite(out).all() and not torch.equal(out, dense)
    remove_ras(pipe)
    assert torch.equal(run(call), dense)
    assert set(vars(pipe)) == pipe_vars
    assert "set_timesteps" not in vars(pipe.scheduler) and "step" not in vars(pipe.scheduler)


RUNNERS = [
    pytest.param(TinySD3Runner, id="sd3"),
    pytest.param(TinyLuminaNextRunner, id="lumina_next"),
    pytest.param(TinyFluxRunner, id="flux"),
]


@pytest.mark.parametrize("runner_class", RUNNERS)
def test_tiny_runner_images_are_in_unit_range_and_seeded_per_image(runner_class):
    runner = runner_class()
    settings = {"steps": 3, "guidance": 3.0, "height": 32, "width": 48, "progress": False}
    pair = runner.generate(["a red circle", "a blue square"], seed=5, **settings)
    assert pair.shape == (2, 3, 32, 48) and pair.dtype == torch.float32
    assert 0 <= pair.min() and pair.max() <= 1
    second = runner.generate(["a blue square"], seed=6, **settings)
    torch.testing.assert_close(second[0], pair[1], rtol=1e-4, atol=1e-4)


def test_tiny_wan_runner_makes_videos_seeded_per_video():
    runner = TinyWanRunner(frames=5)
    settings = {"steps": 3, "guidance": 3.0, "height": 32, "width": 48, "progress": False}
    pair = runner.generate(["a red circle", "a blue square"], seed=5, **settings)
    assert pair.shape == (2, 5, 3, 32, 48) and 0 <= pair.min() and pair.max() <= 1
    second = runner.generate(["a blue square"], seed=6, **settings)
    torch.testing.assert_close(second[0], pair[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("frames", [0, 4, 8, "9", True])
def test_wan_frames_must_be_4k_plus_1(frames):
    with pytest.raises(ValueError, match=r"^model.frames must be an integer 4k \+ 1 \(1, 5, 9, ..., 81\); got"):
        TinyWanRunner(frames=frames)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/no/such/folder", r"^model.path: cannot load '/no/such/folder': no such folder"),
        (
            "no-such-org/no-such-model",
            r"^model.path: cannot load 'no-such-org/no-such-model': no such folder and the hub",
        ),
    ],
)
def test_real_runner_with_missing_weights_fails_with_one_line(path, message):
    with pytest.raises(FileNotFoundError, match=message) as info:
        SD3Runner(path=path, device="cpu")
    assert "\n" not in str(info.value)


def test_wan_runner_with_missing_weights_fails_with_one_line_and_names_the_tiny_model():
    from rasfw.pipelines.runners_diffusers import WanRunner

    with pytest.raises(FileNotFoundError, match=r"^model.path: cannot load '/no/such/wan'.*try model=wan_tiny offline$"):
        WanRunner(path="/no/such/wan", device="cpu")
    with pytest.raises(ValueError, match=r"^model.frames must be an integer 4k \+ 1"):
        WanRunner(path="/no/such/wan", frames=80)


def test_real_runner_rejects_a_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(ValueError, match=r"cannot load '.*' as a StableDiffusion3Pipeline: ") as info:
        SD3Runner(path=str(tmp_path), device="cpu")
    assert "\n" not in str(info.value)


def test_real_runner_rejects_an_unknown_dtype():
    with pytest.raises(ValueError, match="model.dtype must be one of float32, float16, bfloat16; got 'float8'"):
        SD3Runner(dtype="float8")


@pytest.mark.parametrize(
    "model", ["sd3", "lumina_next", "flux", "wan", "sd3_tiny", "lumina_next_tiny", "flux_tiny", "wan_tiny"]
)
def test_model_configs_compose(model):
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose("config", overrides=[f"model={model}"])
    assert cfg.model._target_.startswith("rasfw.pipelines.runners_diffusers.")


def test_cli_on_tiny_sd3_ratio_one_matches_dense(tmp_path):
    from rasfw.app.cli import run as run_cli

    overrides = ["model=sd3_tiny", "steps=6", "ratio.warmup=2", "reset.steps=[4]", "height=32", "width=32"]
    overrides += ["prompts=[a red circle]", "progress=false"]
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        ras = compose("config", overrides=overrides + ["ratio.value=0.25"])
        full = compose("config", overrides=overrides + ["ratio.value=1.0"])
    summary = run_cli(ras, tmp_path / "ras")
    assert summary["flops_ratio"] < 1 and summary["max_abs_diff_vs_dense"] > 0
    assert run_cli(full, tmp_path / "full")["max_abs_diff_vs_dense"] == 0


@pytest.mark.parametrize("two_stage", [False, True], ids=["wan2.1", "wan2.2"])
def test_cli_on_tiny_wan_writes_videos_and_ratio_one_matches_dense(tmp_path, two_stage):
    from PIL import Image

    from rasfw.app.cli import run as run_cli

    overrides = ["model=wan_tiny", "model.frames=5", f"model.two_stage={str(two_stage).lower()}", "steps=6"]
    overrides += ["ratio.warmup=2", "reset.steps=[4]", "height=32", "width=48", "prompts=[a red circle,a cat]"]
    overrides += ["progress=false"]
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        ras = compose("config", overrides=overrides + ["ratio.value=0.25"])
        full = compose("config", overrides=overrides + ["ratio.value=1.0"])
    summary = run_cli(ras, tmp_path / "ras")
    assert summary["tokens"] == 2 * 2 * 3  # latent frames (5 frames) x rows (32 / 8 / 2) x cols (48 / 8 / 2)
    assert summary["max_abs_diff_vs_dense"] > 0 and min(summary["active_tokens_per_step"]) == 12 - int(0.75 * 12)
    assert summary["videos"] == [f"{kind}_{i}.gif" for i in range(2) for kind in ("ras", "dense", "heatmap")]
    with Image.open(tmp_path / "ras" / "ras_1.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (48 * 5, 32 * 5)  # enlarged to about 256 pixels
    with Image.open(tmp_path / "ras" / "heatmap.png") as strip:
        assert strip.size[0] > 2 * strip.size[1] / 2  # one column per latent frame, one row per video
    assert run_cli(full, tmp_path / "full")["max_abs_diff_vs_dense"] == 0
