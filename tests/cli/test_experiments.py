"""Config-driven experiments: the job settings, the dense baseline store, timing, sweeps that end in
results, the joblib launcher and evaluation split across torchrun processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rasfw.app import job
from rasfw.app.cli import main
from rasfw.app.precheck import precheck
from rasfw.app.report import main as report_main
from tests.markers import needs_step_caches

QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none", "progress=false"]
SMALL = ["steps=6", "ratio.warmup=2", "reset.steps=[4]", "eval.prompts=4", "eval.batch=2"]
EXPERIMENTS = {
    "ablation_metric": 3, "ablation_starvation": 5, "ablation_reset": 3, "ablation_kv_cache": 2,
    "ablation_ratio_schedule": 3, "ablation_selection": 3, "matched_flops": 6, "pareto": 17, "ablation_fill": 9,
    "table2": 32,
}  # fmt: skip
CONF = Path(__file__).resolve().parents[2] / "conf"


def run(tmp_path: Path, name: str, *overrides: str) -> dict:
    out = tmp_path / name
    main([*QUIET, *SMALL, *overrides, f"hydra.run.dir={out}"])
    return json.loads((out / "summary.json").read_text())


def test_every_shipped_experiment_declares_its_sweep_and_every_job_passes_the_checks():
    assert {p.stem for p in (CONF / "experiment").glob("*.yaml")} >= set(EXPERIMENTS)
    from hydra import compose, initialize_config_module

    for name, jobs in EXPERIMENTS.items():
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
        params = cfg.hydra.sweeper.params
        sizes = [len(values.split(",")) if "glob" not in values else len(list((CONF / key.lstrip("+")).glob("*.yaml")))
                 for key, values in params.items()]  # fmt: skip
        assert __import__("math").prod(sizes) == jobs, name
        assert cfg.eval.prompts == 64 and cfg.eval.baseline_store
        precheck([f"+experiment={name}"])  # composes and checks every job of the declared sweep (no model loads)


def test_a_bad_value_in_an_experiment_sweep_is_one_line_naming_the_job(tmp_path, capsys):
    shared = tmp_path / "shared" / "experiment"
    shared.mkdir(parents=True)
    (shared / "bad.yaml").write_text("# @package _global_\nhydra:\n  sweeper:\n    params:\n      ratio.value: 0.5,2.0\n")
    with pytest.raises(SystemExit) as info:
        main(["-m", f"hydra.searchpath=[file://{tmp_path / 'shared'}]", "+experiment=bad", *QUIET])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: ratio.value must be in (0, 1]; got 2.0 (in the sweep job ratio.value=2.0)"


def test_the_summary_records_the_resolved_settings_and_the_overrides(tmp_path):
    s = run(tmp_path, "a", "metric=l2norm", "ratio.value=0.25", "timing.repeats=0")
    assert s["settings"]["metric"] == {"name": "l2norm", "params": {}}
    assert s["settings"]["ratio"] == {"name": "constant", "params": {"value": 0.25, "warmup": 2}}
    assert s["settings"]["sampler"]["params"]["count"] == "exact" and s["settings"]["cache"]["name"] == "none"
    assert s["settings"]["execution"]["name"] == "eager"
    assert (s["steps"], s["guidance"], s["seed"], s["prompt_count"]) == (6, 4.0, 0, 4)
    assert s["prompts"] == "prompt_set(4, seed=1234)" and s["evaluated_images"] == 4
    assert "metric=l2norm" in s["overrides"] and "ratio.value=0.25" in s["overrides"]
    assert s["speedup"] is None and s["speedup_note"] == "timing.repeats=0: not timed"


def test_the_summary_records_per_prompt_values_features_and_intervals(tmp_path):
    from rasfw.app import stats

    s = run(tmp_path, "a", "timing.repeats=0")
    per_prompt = s["per_prompt"]
    assert per_prompt["seeds"] == [0, 0, 2, 2]  # eval.batch=2: a prompt's seed is its call's
    assert {len(v) for v in per_prompt.values()} == {4} and set(per_prompt["alignment_accuracy"]) <= {0, 1}
    for metric in ("alignment_accuracy", "dense_alignment_accuracy", "psnr_vs_dense", "ssim_vs_dense"):
        assert sum(per_prompt[metric]) / 4 == pytest.approx(s[metric], rel=1e-6), metric
    assert set(s["ci"]) == set(stats.METRICS) and set(s["vs_dense"]) == {"alignment_accuracy", "fd", "sfd"}
    for metric, (low, high) in s["ci"].items():
        assert low - 1e-6 <= s[metric] <= high + 1e-6, metric
    sample = stats.load(tmp_path / "a")  # summary.json and eval_features.npz
    assert s["eval_features"] == "eval_features.npz" and sample.features["fd"].shape == (4, 128)
    for metric in ("fd", "dense_fd", "sfd", "dense_sfd"):
        assert stats.frechet(sample.features[metric], sample.features[f"{metric.removeprefix('dense_')}_reference"]) == (
            pytest.approx(s[metric], rel=1e-5)
        )  # fmt: skip
    assert stats.annotate(s, sample.features)["ci"] == s["ci"]  # recomputed from the files: the same


def test_the_dense_baseline_is_computed_once_and_read_from_the_store(tmp_path):
    store = tmp_path / "baselines"
    first = run(tmp_path, "a", f"eval.baseline_store={store}", "timing.repeats=0")
    assert first["dense_baseline"].startswith("computed, stored as ") and len(list(store.glob("*.safetensors"))) == 1
    second = run(tmp_path, "b", f"eval.baseline_store={store}", "metric=random", "timing.repeats=0")
    assert second["dense_baseline"].startswith("read from the store, ")
    assert second["dense_flops"] == first["dense_flops"] and second["dense_fd"] == first["dense_fd"]
    other = run(tmp_path, "c", f"eval.baseline_store={store}", "guidance=3.0", "timing.repeats=0")  # another key
    assert other["dense_baseline"].startswith("computed") and len(list(store.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("damage", ["truncated", "no_metadata", "wrong_count", "wrong_size"])
def test_a_damaged_store_entry_is_recomputed_and_replaced(damage, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    store = tmp_path / "baselines"
    first = run(tmp_path, "a", f"eval.baseline_store={store}", "timing.repeats=0")
    (entry,) = store.glob("*.safetensors")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "no_metadata":
        save_file(load_file(str(entry)), str(entry))
    elif damage == "wrong_count":
        save_file({"images": load_file(str(entry))["images"][:1]}, str(entry), metadata={"baseline": '{"flops": 1}'})
    else:
        save_file({"images": load_file(str(entry))["images"][..., :8, :8].contiguous()}, str(entry),
                  metadata={"baseline": '{"flops": 1}'})  # fmt: skip
    capsys.readouterr()
    second = run(tmp_path, "b", f"eval.baseline_store={store}", "timing.repeats=0")
    out = capsys.readouterr().out
    assert f"note: eval.baseline_store entry {entry.name} is unreadable" in out and "recomputing it" in out
    assert second["dense_baseline"].startswith("computed, stored as ") and second["dense_fd"] == first["dense_fd"]
    third = run(tmp_path, "c", f"eval.baseline_store={store}", "timing.repeats=0")  # the entry was replaced
    assert third["dense_baseline"].startswith("read from the store, ")


def test_a_store_that_cannot_be_written_is_read_around_and_a_file_in_its_place_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    s = run(tmp_path, "a", f"eval.baseline_store={blocker / 'store'}", "timing.repeats=0")  # mkdir fails under a file
    assert f"note: eval.baseline_store={blocker / 'store'} cannot be written" in capsys.readouterr().out
    assert s["dense_baseline"] == "computed" or s["dense_baseline"].startswith("computed")
    with pytest.raises(SystemExit) as info:
        run(tmp_path, "b", f"eval.baseline_store={blocker}")
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and f"eval.baseline_store={blocker}: not a folder" in err and "\n" not in err
    assert not (tmp_path / "b" / "summary.json").exists()


def test_dense_sampling_is_the_baseline_and_runs_once(tmp_path, monkeypatch):
    calls = []
    real = job.generate_all
    monkeypatch.setattr(job, "generate_all", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = run(tmp_path, "a", "sampler=dense")
    assert len(calls) == 1  # no second dense run
    assert s["speedup"] is None and s["speedup_note"] == "sampler=dense: this run is the baseline"
    assert s["dense_baseline"] is None and s["flops_ratio"] is None


def test_timing_reports_medians_of_alternating_runs(tmp_path):
    s = run(tmp_path, "a", "timing.repeats=1", "timing.warmup=0")
    assert s["speedup"] == pytest.approx(s["dense_time_s"] / s["time_s"]) and s["speedup_note"] is None
    assert s["timing"] == {"warmup": 0, "repeats": 1, "order": "alternating", "prompts": 2}


def test_time_alternating_warms_up_then_alternates_the_order():
    order = []
    job.time_alternating(lambda: order.append("a"), lambda: order.append("b"), warmup=1, repeats=3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]


def test_matched_flops_samples_dense_with_fewer_steps(tmp_path):
    ras = run(tmp_path, "ras", "steps=12", "ratio.value=0.25", "reset.steps=[6]", "timing.repeats=0")
    dense = run(tmp_path, "dense", "steps=12", "ratio.value=0.25", "reset.steps=[6]", "sampler=dense",
                "match_flops=true", "timing.repeats=0")  # fmt: skip
    assert dense["full_steps"] == 12 and dense["steps"] == round(12 * ras["flops_ratio"]) < 12
    assert dense["dense_flops"] == ras["dense_flops"]  # compared with the same full-step baseline
    assert dense["flops_ratio"] == pytest.approx(dense["steps"] / 12, rel=0.02)


def test_the_baseline_can_have_its_own_step_count(tmp_path):
    """eval.baseline_steps: RAS and dense with few steps are compared with (and timed against) a longer dense run."""
    ras = run(tmp_path, "ras", "eval.baseline_steps=8", "timing.repeats=0")
    dense = run(tmp_path, "dense", "eval.baseline_steps=8", "sampler=dense", "timing.repeats=0")
    assert (ras["steps"], ras["full_steps"]) == (6, 8) == (dense["steps"], dense["full_steps"])
    assert dense["psnr_vs_dense"] is not None and dense["dense_flops"] == ras["dense_flops"] > dense["flops"]


def test_table2_sweeps_ras_at_few_steps_against_dense_at_equal_flops_and_at_3_to_10_steps():
    """conf/table2_point/: RAS and its FLOPs-matched dense point at 5, 6, 7, 10 steps and ratios 0.25, 0.125 (warm-up 2,
    one reset in the middle of the RAS phase), plain dense at 3 to 10 steps; all against the 28-step dense image."""
    from omegaconf import OmegaConf

    points = {p.stem: OmegaConf.load(p) for p in (CONF / "table2_point").glob("*.yaml")}
    expected = {f"{kind}_{s:02d}_{r}" for kind in ("ras", "dense_matched") for s in (5, 6, 7, 10) for r in ("025", "0125")}
    forecast = {f"ras_{s:02d}_{r}_taylor" for s in (5, 6, 7, 10) for r in ("025", "0125")}
    assert set(points) == expected | forecast | {f"dense_{s:02d}" for s in range(3, 11)}
    for name in expected | forecast:
        point = points[name]
        assert point.ratio.warmup == 2 and point.reset.steps == [(2 + point.steps - 1) // 2]
        assert point.get("match_flops", False) is name.startswith("dense_matched")
        assert ("override /fill" in str(point.defaults)) is name.endswith("_taylor")
    assert OmegaConf.load(CONF / "experiment" / "table2.yaml").eval.baseline_steps == 28


@needs_step_caches
def test_a_step_cache_alone_is_compared_with_dense(tmp_path):
    s = run(tmp_path, "a", "sampler=dense", "cache=first_block", "cache.threshold=0.5", "timing.repeats=0")
    assert s["cache"] == "first_block" and s["settings"]["cache"]["params"] == {"threshold": 0.5}
    assert s["flops_ratio"] < 1 and s["psnr_vs_dense"] is not None


@needs_step_caches
def test_ras_beside_a_step_cache_runs_and_the_cache_saves_on_the_warm_up(tmp_path):
    """`sampler=ras cache=first_block`: both apply; the cache skips blocks at dense warm-up step 1 only (step 0 has
    nothing to compare with, step 2 fills the key/value caches for the first RAS step and runs every block)."""
    ras = run(tmp_path, "ras", "ratio.warmup=3", "timing.repeats=0")
    both = run(tmp_path, "both", "ratio.warmup=3", "cache=first_block", "cache.threshold=100", "timing.repeats=0")
    assert both["sampler"] == "ras" and both["cache"] == "first_block"
    assert both["active_tokens_per_step"] == ras["active_tokens_per_step"]
    assert both["flops_ratio"] < ras["flops_ratio"] and both["psnr_vs_dense"] is not None
    from rasfw.app.report import method_label

    assert method_label(both) == "RAS + cache: first_block" and method_label(ras) == "RAS"


def test_a_sweep_ends_in_results_and_the_report_rebuilds_them(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    main(["-m", *QUIET, *SMALL, "metric=std_noise,random", "timing.repeats=0", f"hydra.sweep.dir={sweep}"])
    with (sweep / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["metric"] for r in rows] == ["std_noise", "random"] and all(r["method"] == "RAS" for r in rows)
    assert all(float(r["flops_ratio"]) < 1 and r["alignment_accuracy"] for r in rows)
    assert "| job | metric | method |" in (sweep / "results.md").read_text()
    assert "[low, high]: 95 % confidence interval" in (sweep / "results.md").read_text() and rows[0]["fd_ci_low"]
    for name in ("pareto_flops", "ablation"):
        assert (sweep / f"{name}.png").stat().st_size > 0 and (sweep / f"{name}.csv").is_file()
    assert not (sweep / "pareto_time.png").exists()  # no timing: no time plane
    written = {p.name: p.read_bytes() for p in sweep.glob("*.csv")}
    for name in written:
        (sweep / name).unlink()
    assert report_main([str(sweep)]) == 0
    assert {p.name: p.read_bytes() for p in sweep.glob("*.csv")} == written
    assert report_main([str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.slow  # two subprocesses with their own imports
def test_the_joblib_launcher_runs_a_two_job_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "rasfw", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMALL,
         "progress=false", "timing.repeats=0", "sampler.kv_cache=true,false", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel" in result.stdout + result.stderr
    with (sweep / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["sampler.kv_cache"].lower() for r in rows) == ["false", "true"]


@pytest.mark.slow  # three subprocesses with their own imports
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun not installed")
def test_two_torchrun_processes_merge_into_the_single_process_summary(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in both runs: the same float sums
    args = [*QUIET, *SMALL, "eval.prompts=6", "timing.repeats=0"]
    for name, launcher in (("two", [torchrun, "--nproc_per_node", "2", "-m", "rasfw"]), ("one", [sys.executable, "-m", "rasfw"])):
        result = subprocess.run([*launcher, *args, f"hydra.run.dir={tmp_path / name}"], capture_output=True, text=True,
                                timeout=600, cwd=tmp_path, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
    two, one = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("two", "one"))
    assert two["processes"] == 2 and one["processes"] == 1
    differ = {k for k in one if one[k] != two.get(k)}
    assert differ == {"processes", "speedup_note"}, {k: (one[k], two.get(k)) for k in differ}
    for image in one["images"]:
        assert (tmp_path / "one" / image).read_bytes() == (tmp_path / "two" / image).read_bytes()


@pytest.mark.parametrize(("option", "plugin", "target"), [
    ("parallel", "hydra_plugins.hydra_joblib_launcher", "JoblibLauncher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher", "SlurmLauncher"),
    ("ray_cluster", "hydra_plugins.hydra_ray_launcher", "RayLocalLauncher"),
])  # fmt: skip
def test_the_shipped_launcher_configs_compose_or_say_how_to_install_the_plugin(option, plugin, target, capsys):
    import importlib.util

    from hydra import compose, initialize_config_module

    if importlib.util.find_spec(plugin) is not None:
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            cfg = compose("config", overrides=[f"hydra/launcher={option}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_.endswith(target)
    else:
        with pytest.raises(SystemExit) as info:
            precheck([f"hydra/launcher={option}"])
        assert info.value.code == 2
        assert 'pip install "rasfw[launchers]"' in capsys.readouterr().err


def test_settings_nested_in_a_launcher_cannot_build_classes(capsys):
    with pytest.raises(SystemExit):
        precheck(["hydra/launcher=parallel", "+hydra.launcher.extra._target_=os.system"])
    assert capsys.readouterr().err.strip() == (
        "error: hydra.launcher.extra: a nested _target_ is not allowed; configs build only registered classes"
    )


def test_starvation_k_zero_is_no_starvation():
    """ablation_starvation sweeps k = 0 as its "none" point: the scores come back unchanged."""
    import torch

    from rasfw.strategies.starvation import ExpStarvation, NoStarvation

    score = torch.rand(3, 50, generator=torch.Generator().manual_seed(0))
    drops = torch.randint(0, 20, (3, 50), generator=torch.Generator().manual_seed(1)).float()
    assert torch.equal(ExpStarvation(0.0).adjust(score, drops), NoStarvation().adjust(score, drops))
    assert not torch.equal(ExpStarvation(0.1).adjust(score, drops), score)


@pytest.mark.parametrize(("testbed", "distinct"), [("shapes", 324), ("patterns", None)])
def test_more_eval_prompts_than_the_prompt_set_holds_is_said_before_the_run(testbed, distinct, capsys):
    from hydra import compose, initialize_config_module

    from rasfw.embedded.testbeds import get_testbed

    attributes = get_testbed(testbed, "model.testbed").module().ATTRIBUTES
    total = 1
    for values in attributes.values():
        total *= len(values)
    assert distinct is None or total == distinct
    model = "default" if testbed == "shapes" else "patterns"
    for count, noted in ((total, False), (total + 1, True)):
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            cfg = compose("config", overrides=[f"model={model}", f"eval.prompts={count}"])
        job.check_job_settings(cfg)
        out = capsys.readouterr().out
        assert (f"note: eval.prompts={count} is more than the {total} distinct prompts" in out) is noted, out


def test_a_long_run_says_so_after_its_first_batch(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rasfw.app.run_steps.LONG_RUN_S", 0.0)  # every run counts as long
    run(tmp_path, "a", "timing.repeats=0")
    out = capsys.readouterr().out
    assert "note: at " in out and "this run takes about " in out and "lower eval.prompts or steps" in out
    monkeypatch.setattr("rasfw.app.run_steps.LONG_RUN_S", 1e9)
    run(tmp_path, "b", "timing.repeats=0")
    assert "this run takes about" not in capsys.readouterr().out


def test_a_size_the_evaluator_does_not_score_says_so(tmp_path, capsys):
    s = run(tmp_path, "a", "model=patterns", "height=32", "width=32", "timing.repeats=0", "compare_dense=false")
    out = capsys.readouterr().out
    assert "note: the patterns evaluator scores 64x64 images; these are 32x32" in out
    assert "prompt grammar" not in out and s["evaluated_images"] == 0
