"""The benchmark runs and reports every field (smoke tests on very small presets; no timing asserted)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module

from rasfw.app.bench import markdown, measure, results

RUN = ["repeats=1", "steps=6", "ratio.warmup=2", "reset.steps=[4]", "ratios=[0.5]"]
SMALL = {  # per preset: one layer (of each kind), an 8x8 latent (16 image tokens), a short caption
    "cpu": ["preset.layers=1", "preset.latent_side=8"],
    "cpu_lumina": ["preset.layers=1", "preset.latent_side=8", "preset.cfg=true"],
    "cpu_flux": ["preset.layers=1", "preset.single_layers=1", "preset.latent_side=8", "preset.context=16"],
    "cpu_wan": ["preset.layers=1", "preset.latent_height=4", "preset.latent_width=4", "preset.context=16"],  # 12 tokens
}
FIELDS = (
    "preset", "execution", "backend", "ratio", "kv_dtype", "speedup", "flops_ratio", "efficiency", "peak_memory_bytes",
    "memory_overhead", "graphs", "time_s", "dense_time_s", "selection_ms_per_step", "ideal_speedup",
    "dense_peak_memory_bytes", "kv_cache_bytes",
)  # fmt: skip


def config(preset: str = "cpu", *overrides: str):
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        return compose("bench", overrides=[f"preset={preset}", *SMALL.get(preset, []), *RUN, *overrides])


def check_rows(rows: list[dict]) -> None:
    for row in rows:
        assert set(FIELDS) <= set(row)
        assert 0 < row["flops_ratio"] < 1 and row["backend"] == "torch"
        assert row["efficiency"] == pytest.approx(row["speedup"] * row["flops_ratio"])
        assert row["kv_cache_bytes"] > 0 and row["peak_memory_bytes"] is None and row["memory_overhead"] is None


def test_bench_rows_have_every_field_and_the_report_names_the_versions():
    cfg = config("cpu", "ratios=[0.5,0.25]", "kv_dtypes=[model,float8_e4m3fn]")
    result = results(cfg)
    assert {"machine", "torch", "diffusers", "commit", "rows"} <= set(result)
    rows = result["rows"]
    assert [(row["ratio"], row["kv_dtype"]) for row in rows] == [
        (0.5, "model"), (0.5, "float8_e4m3fn"), (0.25, "model"), (0.25, "float8_e4m3fn")
    ]  # fmt: skip
    check_rows(rows)
    assert {row["execution"] for row in rows} == {"eager"} and {row["graphs"] for row in rows} == {0}
    assert rows[2]["flops_ratio"] < rows[0]["flops_ratio"] == rows[1]["flops_ratio"]
    assert rows[1]["kv_cache_bytes"] != rows[0]["kv_cache_bytes"]  # the kv dtype reaches the state
    assert "| eager | 0.25 | float8_e4m3fn | torch | 0 |" in markdown(rows, cfg)


def test_bench_compares_each_execution_mode_with_its_own_dense_baseline():
    rows = measure(config("cpu", "executions=[eager,compile]", "compile_backend=aot_eager"))
    assert [row["execution"] for row in rows] == ["eager", "compile"]
    check_rows(rows)
    eager, compiled = rows
    assert eager["graphs"] == 0 and eager["dense_graphs"] == 0
    assert compiled["graphs"] > 0 and compiled["dense_graphs"] > 0
    assert eager["dense_time_s"] != compiled["dense_time_s"]


@pytest.mark.parametrize("preset", ["cpu_lumina", "cpu_flux", "cpu_wan"])
def test_bench_runs_the_lumina_flux_and_wan_architectures(preset):
    rows = measure(config(preset, "kv_dtypes=[model,float8_e4m3fn]"))
    assert [row["preset"] for row in rows] == [preset, preset]
    check_rows(rows)


def test_a_single_execution_replaces_the_list_with_its_options():
    rows = measure(config("cpu", "executions=[eager]", "execution=compile", "execution.compile_backend=aot_eager"))
    assert [(row["execution"], row["graphs"] > 0) for row in rows] == [("compile", True)]
    with pytest.raises(ValueError, match="execution=cudagraph needs a CUDA device"):
        measure(config("cpu", "executions=[eager]", "execution=cudagraph"))


def test_cudagraph_needs_a_gpu():
    with pytest.raises(ValueError, match="cudagraph"):
        measure(config("cpu", "executions=[cudagraph]"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("executions=[eager,graph]", "executions must be a non-empty list of compile, cudagraph, eager"),
        ("kv_dtypes=[int8]", "kv_dtypes must be a non-empty list of model, bfloat16"),
        ("ratios=[0]", r"ratios must be a non-empty list of numbers in \(0, 1\]"),
        ("repeats=0", "repeats must be an integer >= 1"),
        ("ratio=linear", "ratio=linear has no ratio.value for `ratios` to set; the bench takes ratio=constant or "),
        ("ratio.warmup=-1", r"ratio.warmup must be in \[0, inf\); got -1"),
        ("reset.steps=[9]", r"reset.steps \(FixedReset\(steps=...\)\) must lie in \[0, 6\) for steps=6"),
    ],
)
def test_bad_settings_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        measure(config("cpu", override))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("preset", ["gpu", "gpu_lumina", "gpu_flux"])
def test_bench_rejects_a_gpu_preset_without_a_gpu(preset):
    with pytest.raises(ValueError, match=f"preset={preset} needs a CUDA device"):
        measure(config(preset))


def test_wan_flops_count_both_cfg_calls_of_a_step():
    from rasfw.app.bench import forward_flops, generation_flops
    from rasfw.pipelines.synthetic import build_synthetic
    from rasfw.sampler import DenseSampler

    cfg = config("cpu_wan")
    pipe = build_synthetic(cfg.preset, 0)
    assert pipe.num_tokens == 3 * 2 * 2 and pipe.calls_per_step == 2
    table: dict[int, int] = {}
    assert generation_flops(pipe, DenseSampler(), 3, table) == 3 * 2 * forward_flops(pipe, pipe.num_tokens)
    assert "12 video tokens" in markdown(measure(cfg), cfg)


def test_each_preset_is_a_file_of_the_preset_group_named_as_the_file():
    """`preset=<name>` picks conf/preset/<name>.yaml; its `name` (bench.json's and bench.md's) is the file's."""
    from importlib import resources

    names = sorted(p.name.removesuffix(".yaml") for p in resources.files("rasfw.conf").joinpath("preset").iterdir()
                   if p.name.endswith(".yaml"))  # fmt: skip
    assert names == sorted(["cpu", "cpu_lumina", "cpu_flux", "cpu_wan", "gpu", "gpu_lumina", "gpu_flux", "gpu_wan"])
    for name in names:
        assert config(name).preset.name == name


@pytest.mark.parametrize(
    ("overrides", "schedule"),
    [
        (["ratio.warmup=1", "reset.steps=[3]"], "warm-up 1, resets [3]"),
        (["ratio.warmup=2", "reset=periodic", "reset.every=2", "reset.start=2"], "warm-up 2, resets [4]"),
        (["reset=none"], "warm-up 1, resets []"),  # warm-up null: 4 of 28 scaled to 6 steps
    ],
)
def test_warm_up_and_resets_come_from_the_main_commands_ratio_and_reset_groups(overrides, schedule):
    """`ratio.warmup`, `reset.steps` and `reset=periodic|none` as in the main command; each `ratios` entry is
    the ratio.value of one RAS sampler."""
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        small = ["preset=cpu", *SMALL["cpu"], "repeats=1", "steps=6", "ratios=[0.25]"]
        cfg = compose("bench", overrides=[*small, *overrides])
    rows = measure(cfg)
    assert [row["ratio"] for row in rows] == [0.25]
    check_rows(rows)
    assert f", 6 steps, {schedule}, median of 1;" in markdown(rows, cfg)


def test_an_unknown_group_option_or_key_is_one_line(capsys):
    from rasfw.app.bench import main

    for override, message in [
        ("preset=h100", "error: preset: unknown option 'h100'; available: cpu, cpu_flux, cpu_lumina, cpu_wan, gpu, "),
        ("reset=never", "error: reset: unknown option 'never'; available: fixed, none, periodic"),
        ("warmup=2", "error: warmup: unknown setting; did you mean ratio.warmup?"),
        ("preset.layerz=2", "error: preset.layerz: unknown setting; it takes: layers, "),
    ]:
        with pytest.raises(SystemExit) as info:
            main([override])
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and err.startswith(message) and "\n" not in err, err


@pytest.mark.parametrize("option", ["torch", "triton", "auto"])
def test_bench_backend_is_the_main_commands_backend_group(option):
    """`backend=triton` picks conf/backend/triton.yaml as in the main command (a group, not a plain key)."""
    from rasfw.app.bench import sampler_backend

    assert sampler_backend(config("cpu", f"backend={option}")) == option
    assert sampler_backend(config("cpu")) == "torch"


@pytest.fixture
def restored_logging():
    """Hydra's job logging points the root logger at the run's log file; put it back as it was after the test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def test_the_bench_log_holds_what_the_console_shows(tmp_path, capsys, restored_logging):
    from rasfw.app.bench import main

    main(["preset=cpu", *SMALL["cpu"], *RUN, "hydra/hydra_logging=none", f"hydra.run.dir={tmp_path}"])
    shown = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    log = (tmp_path / "bench.log").read_text()
    assert len(shown) > 5 and "eager dense: " in log and f"wrote {tmp_path / 'bench.json'}" in log
    for line in shown:
        assert line in log, line



def test_the_step_profile_accounts_for_the_step_and_sees_fewer_matrix_products_at_a_lower_ratio():
    from rasfw.app.bench import report

    cfg = config("cpu", "preset.latent_side=16", "ratios=[0.5,0.25]", "profile=true", "profile_step=2")
    result = results(cfg)
    dense, half, quarter = (result["profile"][label] for label in ("dense", "RAS 0.5", "RAS 0.25"))
    for profile in (dense, half, quarter):
        counted = sum(v for k, v in profile.items() if k not in ("wall", "outside operators"))
        assert profile["outside operators"] == pytest.approx(profile["wall"] - counted)
        assert 0 < counted <= profile["wall"] and all(v >= 0 for k, v in profile.items() if k != "outside operators")
    assert dense["selection"] < half["selection"]  # the dense sampler scores and sorts nothing
    assert quarter["matrix products"] < dense["matrix products"]
    text = report(result, cfg)
    assert "| ms per step | dense | RAS 0.5 | RAS 0.25 |" in text and "| row moves (gather / scatter / index) |" in text


@pytest.mark.parametrize("step", [0, 5, "x"])
def test_a_profile_step_outside_the_generation_is_named_before_anything_runs(step):
    with pytest.raises(ValueError, match=r"profile_step must be an integer in \[1, 5\) \(steps=6\)"):
        results(config("cpu", "profile=true", f"profile_step={step}"))
