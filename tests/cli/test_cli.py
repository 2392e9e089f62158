"""The command line: one end-to-end run in a subprocess, and every bad-input case."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from rasfw.app.cli import main

SMALL = ["steps=6", "ratio.warmup=2", "reset.steps=[4]", "progress=false"]
# In-process runs: Hydra's logging would keep writing to pytest's closed capture streams.
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]


@pytest.mark.slow
def test_end_to_end_writes_images_heatmap_and_summary(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rasfw", "sampler=ras", "metric=std_noise", *SMALL, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "model", "sampler", "steps", "height", "width", "tokens", "active_tokens_per_step", "time_s",
        "dense_time_s", "speedup", "flops", "dense_flops", "flops_ratio", "max_abs_diff_vs_dense",
        "psnr_vs_dense", "images", "heatmap",
    ):  # fmt: skip
        assert key in summary, key
    assert summary["steps"] == 6 and summary["sampler"] == "ras" and summary["model"] == "default"
    n = summary["tokens"]
    assert summary["active_tokens_per_step"] == [n, n, n // 2, n // 2, n, n // 2]
    assert 0 < summary["flops_ratio"] < 1 and summary["flops"] < summary["dense_flops"]
    assert summary["max_abs_diff_vs_dense"] > 0
    written = [*summary["images"], summary["heatmap"], summary["grid"], summary["selection"], summary["selection_strip"]]
    for name in written:
        assert (tmp_path / name).stat().st_size > 0
        assert f"\n  {name}\n" in result.stdout  # the console lists every file it wrote
    assert Image.open(tmp_path / "selection.gif").n_frames == 6  # one frame per step
    assert Image.open(tmp_path / "grid.png").width > 3 * 256  # dense | RAS | heat map, and the colour bar
    assert "model: default (" in result.stdout
    log = (tmp_path / "rasfw.log").read_text()
    assert "model: default (" in log and "summary: " in log and "selection.gif" in log


def test_video_model_run_lists_its_gifs(tmp_path, capsys):
    main([*SMALL, *QUIET, "model=wan_tiny", "model.frames=5", "height=32", "width=48", "prompts=[a cat]",
          f"hydra.run.dir={tmp_path}"])  # fmt: skip
    listed = listed_files(capsys.readouterr().out)
    assert listed == [
        "ras_0.gif", "dense_0.gif", "heatmap_0.gif", "grid.png", "heatmap.png", "summary.json"  # no log: QUIET
    ]  # fmt: skip
    assert all((tmp_path / name.strip()).exists() for name in listed)


def listed_files(out: str) -> list[str]:
    """The file names the console listed after "wrote N files to <folder>:"."""
    return [line.strip() for line in out.split("wrote ", 1)[1].splitlines()[1:]]


@pytest.mark.parametrize(
    ("extra", "files"),
    [
        ([], ["dense_0.png", "grid.png", "summary.json", "eval_features.npz"]),  # the run is its own baseline
        (["eval.baseline_steps=4"], ["dense_0.png", "baseline_0.png", "grid.png", "summary.json", "eval_features.npz"]),
        (["model=wan_tiny", "model.frames=5", "height=32", "width=48"], ["dense_0.gif", "grid.png", "summary.json"]),
    ],
)
def test_a_dense_sampler_run_names_its_pictures_after_dense_sampling(extra, files, tmp_path, capsys):
    """sampler=dense selects nothing: no ras_ files, no heat map or selection pictures, the same names everywhere."""
    main([*SMALL, *QUIET, "sampler=dense", "prompts=[a small red circle at the top left]", *extra,
          f"hydra.run.dir={tmp_path}"])  # fmt: skip
    assert listed_files(capsys.readouterr().out) == files
    summary = json.loads((tmp_path / "summary.json").read_text())
    pictures = [*summary.get("images", []), *summary.get("videos", []), summary["grid"]]
    assert pictures == files[: len(pictures)] and not {"heatmap", "selection", "selection_strip"} & set(summary)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(files)


def test_the_grid_columns_name_what_ran():
    from rasfw.app.pictures import columns

    ras = columns(dense_sampler=False, steps=6, full_steps=6, cache=None)
    assert (ras.method, ras.method_header, ras.baseline, ras.baseline_header, ras.selects) == ("ras", "RAS", "dense", "dense", True)
    dense = columns(dense_sampler=True, steps=4, full_steps=28, cache="first_block")
    assert (dense.method, dense.baseline, dense.selects) == ("dense", "baseline", False)
    assert dense.method_header == "dense, 4 steps, cache=first_block"
    assert dense.baseline_header == "baseline: dense, 28 steps"


def test_ratio_one_equals_dense_exactly(tmp_path, capsys):
    main([*SMALL, *QUIET, "ratio.value=1.0", f"hydra.run.dir={tmp_path}"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["max_abs_diff_vs_dense"] == 0 and summary["flops_ratio"] == 1
    assert summary["psnr_vs_dense"] is None  # identical images


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ratio.value=0", r"ratio.value must be in (0, 1]; got 0"),
        ("ratio.value=1.5", r"ratio.value must be in (0, 1]; got 1.5"),
        ("ratio.warmup=-1", r"ratio.warmup must be in [0, inf); got -1"),
        ("metric=nope", "metric: unknown option 'nope'; available: "),
        ("model=nope", "model: unknown option 'nope'; available: "),
        ("reset.steps=[3,40]", "reset.steps (FixedReset(steps=...)) must lie in [0, 28) for steps=28; got [3, 40]"),
        ("sampler.high_ratio=1.2", "sampler.high_ratio must be in [0, 1]; got 1.2"),
        ("steps=0", "steps must be in [1, inf); got 0"),
        ("height=33", "height must be a multiple of 2 (patch size x latent scale); got 33"),
        ("ratio.valu=0.3", "ratio.valu: unknown setting"),
        ("starvation.k=-0.5", "starvation.k must be in [0, 100]; got -0.5"),
        ("execution=cudagraph", "execution=cudagraph needs a CUDA device; the transformer is on cpu"),
        ("execution=warp", "execution: unknown option 'warp'; available: compile, cudagraph, eager"),
        ("execution=compile execution.compile_backend=nope", "execution.compile_backend: unknown torch.compile backend 'nope'"),
        ("sampler.kv_dtype=int8", "sampler.kv_dtype must be one of model, bfloat16, float16, float8_e4m3fn; got 'int8'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(override, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*override.split(), *QUIET, "progress=false", f"hydra.run.dir={tmp_path}"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rasfw", "ratio.value=2"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: ratio.value must be in (0, 1]; got 2"


@pytest.mark.parametrize("model", ["sd3_tiny", "lumina_next_tiny", "flux_tiny"])
def test_tiny_diffusers_models_run_and_ratio_one_is_exact(model, tmp_path):
    main([f"model={model}", *SMALL, *QUIET, "ratio.value=1.0", "prompts=[a red circle]", f"hydra.run.dir={tmp_path}"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == model and summary["max_abs_diff_vs_dense"] == 0


def test_missing_model_path_is_one_line_and_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["model=sd3", "model.path=/no/such/folder", "model.device=cpu", *QUIET, f"hydra.run.dir={tmp_path}"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.path: cannot load '/no/such/folder'") and "\n" not in err


@pytest.mark.slow
def test_compiled_run_reports_its_mode_and_graphs(tmp_path):
    """`execution=compile` (the cheap aot_eager backend here): same images as eager, graphs in the summary."""
    common = [*SMALL, *QUIET, "compare_dense=false", "prompts=[a small red circle at the top left]"]
    main([*common, "execution=compile", "execution.compile_backend=aot_eager", f"hydra.run.dir={tmp_path / 'c'}"])
    main([*common, "sampler.kv_dtype=float8_e4m3fn", f"hydra.run.dir={tmp_path / 'e'}"])
    compiled = json.loads((tmp_path / "c" / "summary.json").read_text())
    eager = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert compiled["execution"] == "compile" and compiled["graphs"] == 3 and compiled["call_shapes"] == 3
    assert eager["execution"] == "eager" and eager["graphs"] == 0 and eager["kv_dtype"] == "float8_e4m3fn"
    assert compiled["flops"] == eager["flops"]  # counted eagerly for both


@pytest.mark.slow
def test_flags_after_overrides_work_with_a_plugin_installed(tmp_path):
    """The plugin's config search path goes next to the user's overrides, so a trailing flag still parses."""
    result = subprocess.run(
        [sys.executable, "-m", "rasfw", "ratio.value=0.25", "metric=edge_energy", "--cfg", "job"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "value: 0.25" in result.stdout and "EdgeEnergy" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "metric=foo"], "metric: unknown option 'foo'; available: "),
        (["--cfg", "job", "foo=1"], "foo: unknown setting"),
        (["-m", "ratio.value=0.25,0.5", "ratio.valu=1"], "ratio.valu: unknown setting"),
        (["ratio.valu=1", "-m", "ratio.value=0.25,0.5"], "ratio.valu: unknown setting"),  # -m after overrides
        (["+hydra.callbacks.x._target_=os.system"], "hydra.callbacks.x._target_: 'os.system' is not a registered callback class"),
        (["-m", "sampler=dense,ras", "cache=first_block", "cache.threshold=0"],
         "cache.threshold must be in (0, inf); got 0 (in the sweep job sampler=dense)"),  # fmt: skip
        (["-m", "ratio.value=0.25,1.5", "reset=fixed,none"],
         "ratio.value must be in (0, 1]; got 1.5 (in the sweep job ratio.value=1.5 reset=fixed)"),  # fmt: skip
    ],
)
def test_overrides_beside_flags_are_checked_too(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main([*args, *QUIET])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_valid_sweep_runs_every_job(tmp_path):
    main(["-m", "ratio.value=0.25,0.5", *SMALL, *QUIET, "compare_dense=false", "prompts=[a red circle]",
          f"hydra.sweep.dir={tmp_path}"])  # fmt: skip
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 2
    assert [json.loads(p.read_text())["active_tokens_per_step"][2] for p in summaries] == [64, 128]


def test_a_rerun_sweep_skips_the_jobs_that_finished_and_rebuilds_the_results(tmp_path, capsys):
    args = ["-m", "ratio.value=0.25,0.5", *SMALL, *QUIET, "compare_dense=false", "prompts=[a red circle]",
            f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    main(args)
    first = {p.parent.name: p.read_text() for p in tmp_path.glob("*/summary.json")}
    (tmp_path / "1" / "summary.json").unlink()  # as if the sweep had been stopped during job 1
    (tmp_path / "results.md").unlink()
    capsys.readouterr()
    main(args)
    out = capsys.readouterr().out
    assert f"{tmp_path / '0'}: finished earlier with the same settings" in out and f"{tmp_path / '1'}: finished" not in out
    assert (tmp_path / "0" / "summary.json").read_text() == first["0"]  # not recomputed
    assert json.loads((tmp_path / "1" / "summary.json").read_text())["active_tokens_per_step"][2] == 128
    rows = [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2  # rebuilt from both jobs' summaries
    main([*args[:1], "ratio.value=0.25", *args[2:], "seed=1"])  # other settings: computed again
    assert "finished earlier" not in capsys.readouterr().out


def test_sigterm_ends_a_run_as_an_interrupt():
    import os
    import signal

    from rasfw.app.cli import _terminate_as_interrupt

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with _terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes of the main thread
                pass
    assert signal.getsignal(signal.SIGTERM) is previous


def test_summary_says_which_backend_ran_and_notes_unscored_prompts(tmp_path, capsys):
    main([*SMALL, *QUIET, "backend=triton", "compare_dense=false", "prompts=[a cat on a mat,a small red circle at the top left]",
          f"hydra.run.dir={tmp_path}"])  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    # On a CPU the Triton kernels run only under Triton's interpreter (set up by the kernel tests when they
    # run first in this process); otherwise the torch reference runs, and the summary says so and why.
    if summary["backend"] == "triton":
        assert summary["backend_note"] is None
    else:
        assert summary["backend"] == "torch" and summary["backend_note"].startswith("triton requested: ")
    assert summary["evaluated_images"] == 1
    assert "note: 1 of 2 prompts are not in the model's prompt grammar" in capsys.readouterr().out


def test_help_lists_plugin_options_and_explains_every_key(capsys):
    main(["--help"])
    text = capsys.readouterr().out
    assert "metric: edge_energy, l2norm, random, std_noise*" in text  # the installed plugin's option too
    assert "ratio.value=0.5  share of tokens updated at a RAS step" in text
    keys = [line.strip() for line in text.splitlines() if re.match(r"^      \w+\.\w+=", line)]
    assert len(keys) > 20
    for line in keys:  # every option key: `group.key=default  what it means`
        assert re.match(r"^\w+\.\w+=\S.*  \S", line), line
    for setting in ("steps", "guidance", "prompts", "compare_dense"):
        assert re.search(rf"^  {setting} +\S.*\(default ", text, re.M), setting


def test_progress_bars_are_labelled(tmp_path, capsys):
    args = [a for a in SMALL if a != "progress=false"]
    main([*args, *QUIET, "prompts=[a small red circle at the top left]", f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert "RAS 0.5: 100%" in err and "dense: 100%" in err
