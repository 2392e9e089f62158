"""Confidence intervals over prompts and paired comparisons (`rasfw.app.stats`), and how the report shows them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rasfw.app import stats
from rasfw.app.report import write_report
from rasfw.app.study import table
from rasfw.embedded.eval import frechet_distance

DIM = 8  # features per prompt: small, so a Frechet distance costs microseconds


def synthetic(n: int, seed: int = 0, accuracy: float = 0.8, psnr: float = 30.0, shift: float = 0.5,
              name: str = "job") -> stats.PromptSample:  # fmt: skip
    """A job's evidence on `n` prompts: alignment hits, PSNR and SSIM per prompt, features beside a reference."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(n, DIM))  # (n, D)
    values = {
        "alignment_accuracy": (rng.random(n) < accuracy).astype(float),
        "dense_alignment_accuracy": (rng.random(n) < 0.8).astype(float),
        "psnr_vs_dense": rng.normal(psnr, 3.0, n),
        "ssim_vs_dense": rng.uniform(0.85, 0.99, n),
    }
    features = {
        "fd": reference + shift + rng.normal(scale=0.5, size=(n, DIM)),
        "dense_fd": reference + rng.normal(scale=0.5, size=(n, DIM)),
        "fd_reference": reference,
    }
    return stats.PromptSample(values, features, ("prompt_set", n, tuple(range(n))), name)


def point(sample: stats.PromptSample, metric: str) -> float:
    return float(stats.statistic(sample, metric)(np.arange(sample.size(metric))))


def test_the_fast_frechet_distance_is_the_evaluators():
    rng = np.random.default_rng(1)
    for n, dim in ((12, 40), (60, 16)):  # fewer prompts than features, and more
        a, b = rng.normal(size=(n, dim)), rng.normal(1.0, 2.0, size=(n, dim))
        assert stats.frechet(a, b) == pytest.approx(frechet_distance(torch.from_numpy(a), torch.from_numpy(b)), rel=1e-6)


def test_every_interval_contains_its_point_estimate():
    for n, seed in ((8, 0), (40, 1), (200, 2)):
        sample = synthetic(n, seed)
        cis = stats.intervals(sample)
        assert set(cis) == {"alignment_accuracy", "dense_alignment_accuracy", "fd", "dense_fd", "psnr_vs_dense", "ssim_vs_dense"}
        for metric, (low, high) in cis.items():
            assert low <= point(sample, metric) <= high, (n, metric, low, high)
            assert low < high, (n, metric)


def test_an_interval_shrinks_with_more_prompts():
    few, many = stats.intervals(synthetic(25, 3)), stats.intervals(synthetic(400, 3))
    for metric in ("alignment_accuracy", "fd", "psnr_vs_dense"):
        width = {k: ci[metric][1] - ci[metric][0] for k, ci in (("few", few), ("many", many))}
        assert width["many"] < 0.5 * width["few"], (metric, width)  # sqrt(16) = 4 times narrower in theory


def test_the_intervals_are_reproducible():
    assert stats.intervals(synthetic(30, 4)) == stats.intervals(synthetic(30, 4))


def test_two_identical_rows_are_not_distinguishable():
    result = stats.compare(synthetic(30, 5, name="a"), synthetic(30, 5, name="b"))
    assert set(result) >= {"alignment_accuracy", "fd", "psnr_vs_dense", "ssim_vs_dense"}
    for metric, c in result.items():
        assert c.difference == 0 and c.ci == (0.0, 0.0) and not c.distinguishable, metric


def test_two_clearly_different_rows_are_distinguishable():
    good = synthetic(60, 6, accuracy=0.95, psnr=34.0, shift=0.0, name="good")
    bad = synthetic(60, 7, accuracy=0.3, psnr=24.0, shift=2.0, name="bad")
    bad = stats.PromptSample(bad.values, bad.features, good.identity, "bad")  # the same prompts and seeds
    result = stats.compare(good, bad)
    for metric in ("alignment_accuracy", "fd", "psnr_vs_dense"):
        assert result[metric].distinguishable, (metric, result[metric])
        assert not result[metric].ci[0] <= 0 <= result[metric].ci[1]
    assert result["fd"].difference < 0 < result["psnr_vs_dense"].difference


def test_the_pairing_detects_a_small_shift_that_overlapping_intervals_hide():
    base = synthetic(50, 8)
    noise = np.random.default_rng(9).normal(0, 0.05, 50)
    shifted = {**base.values, "psnr_vs_dense": base.values["psnr_vs_dense"] + 0.3 + noise}
    other = stats.PromptSample(shifted, base.features, base.identity, "other")
    a, b = stats.intervals(other)["psnr_vs_dense"], stats.intervals(base)["psnr_vs_dense"]
    assert a[0] < b[1]  # the rows' own intervals overlap ...
    assert stats.compare(other, base)["psnr_vs_dense"].distinguishable  # ... the paired difference does not


def test_a_job_is_compared_with_its_dense_baseline():
    same = synthetic(60, 10, shift=0.0)
    far = synthetic(60, 10, shift=3.0)
    assert not stats.vs_dense(same)["fd"].distinguishable
    assert stats.vs_dense(far)["fd"].distinguishable and stats.vs_dense(far)["fd"].difference > 0


def test_rows_on_other_prompts_or_without_per_prompt_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not evaluated on the same prompts and seeds"):
        stats.compare(synthetic(30, 0), synthetic(31, 0))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"sampler": "ras", "prompts": "p", "prompt_count": 4, "fd": 1.0}))
    with pytest.raises(ValueError, match="has no per-prompt data"):
        stats.compare(tmp_path / "a", tmp_path / "b")
    assert stats.main([str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2


def write_job(folder: Path, sample: stats.PromptSample, **fields) -> dict:
    """A job folder as the CLI writes it: summary.json with per-prompt values, CIs and eval_features.npz."""
    folder.mkdir(parents=True)
    n = sample.size("alignment_accuracy")
    summary = {
        "sampler": "ras", "cache": "none", "steps": 6, "full_steps": 6, "prompts": "prompt_set", "prompt_count": n,
        "flops_ratio": 0.6, **{m: point(sample, m) for m in sample.metrics()},
        "per_prompt": {"seeds": list(range(n)), **{k: v.tolist() for k, v in sample.values.items()}}, **fields,
    }  # fmt: skip
    stats.save_features(folder / stats.FEATURES_FILE, sample.features)
    summary.update(stats.annotate(summary, sample.features))
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def test_a_job_folder_round_trips_and_compares(tmp_path, capsys):
    write_job(tmp_path / "a", synthetic(30, 11))
    write_job(tmp_path / "b", synthetic(30, 11, psnr=20.0))
    assert not stats.compare(tmp_path / "a", tmp_path / "a")["fd"].distinguishable
    assert stats.compare(tmp_path / "a", tmp_path / "b")["psnr_vs_dense"].distinguishable
    assert stats.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "psnr_vs_dense: +" in capsys.readouterr().out


def test_the_report_shows_the_intervals_and_the_mark_and_old_summaries_still_report(tmp_path):
    near = write_job(tmp_path / "0", synthetic(40, 12, shift=0.0), overrides=["ratio.value=0.5"])
    far = write_job(tmp_path / "1", synthetic(40, 12, shift=3.0), overrides=["ratio.value=0.25"])
    old = {"sampler": "ras", "cache": "none", "steps": 6, "full_steps": 6, "fd": 812.5, "alignment_accuracy": 0.75,
           "flops_ratio": 0.4, "overrides": ["ratio.value=0.125"]}  # fmt: skip
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "summary.json").write_text(json.dumps(old))
    written = write_report(tmp_path)
    assert {p.name for p in written} >= {"results.csv", "results.md", "pareto_flops.png", "ablation.png"}
    text = (tmp_path / "results.md").read_text()
    assert stats.legend() in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert stats.with_ci(near["fd"], near["ci"]["fd"], same=True) in rows["0"]  # e.g. "4.05 [3.52, 4.81] ≈"
    assert " ≈" in rows["0"] and f"{stats.significant(far['fd'])} [" in rows["1"]
    assert stats.with_ci(far["fd"], far["ci"]["fd"]) + " |" in rows["1"]  # distinguishable: no mark
    assert "| 812.5 |" in rows["2"] and "[" not in rows["2"]  # an old summary: the value alone
    with (tmp_path / "results.csv").open() as f:
        table_rows = {r["job"]: r for r in csv.DictReader(f)}
    assert float(table_rows["0"]["fd_ci_low"]) <= float(table_rows["0"]["fd"]) <= float(table_rows["0"]["fd_ci_high"])
    assert table_rows["0"]["fd_distinguishable"] == "False" and table_rows["1"]["fd_distinguishable"] == "True"
    assert table_rows["2"]["fd_ci_low"] == "" and table_rows["2"]["fd_distinguishable"] == ""
    with (tmp_path / "pareto_flops.csv").open() as f:
        assert "fd_ci_low" in next(csv.reader(f))


def test_a_sweep_of_old_summaries_reports_without_intervals(tmp_path):
    for job in ("0", "1"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "summary.json").write_text(json.dumps({"sampler": "ras", "fd": 700.0 + int(job), "flops_ratio": 0.5,
                                                                  "overrides": [f"seed={job}"]}))  # fmt: skip
    write_report(tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "[low, high]" not in text and "| 700 |" in text
    assert not any(c.endswith(("_ci_low", "_distinguishable")) for c in (tmp_path / "results.csv").read_text().splitlines()[0].split(","))


def test_the_study_table_shows_the_intervals():
    sample = synthetic(40, 13, shift=0.0)
    n = sample.size("fd")
    summary = {
        "weights": "w", "prompt_count": n, "sampler": "ras", "steps": 6, "full_steps": 6, "flops_ratio": 0.6,
        "prompts": "prompt_set", "sfd": 1.0, "dense_sfd": 1.0,
        "settings": {"ratio": {"params": {"value": 0.5}}, "sampler": {"params": {"high_ratio": 0.0}}},
        **{m: point(sample, m) for m in sample.metrics()},
        "per_prompt": {"seeds": list(range(n)), **{k: v.tolist() for k, v in sample.values.items()}},
    }  # fmt: skip
    summary.update(stats.annotate(summary, sample.features))
    text = table([summary])
    assert stats.legend() in text
    dense, ras = (line for line in text.splitlines() if line.startswith("| dense 6") or line.startswith("| RAS"))
    assert stats.with_ci(summary["fd"], summary["ci"]["fd"], ".2f", same=True) in ras
    assert stats.with_ci(summary["dense_fd"], summary["ci"]["dense_fd"], ".2f") + " |" in dense


@pytest.mark.parametrize(
    ("summary", "features", "fragment"),
    [
        ('{"sampler": "ras", "fd": 1', None, "summary.json: not valid JSON"),
        ("[1, 2]", None, "summary.json: a summary is a JSON object; this holds a list"),
        ('{"loss": 0.1}', None, "summary.json: not a rasfw job summary (no sampler)"),
        ('{"sampler": "ras"}', b"not an npz", "eval_features.npz: not a readable evaluator-features file"),
    ],
)
@pytest.mark.filterwarnings("ignore:'rasfw.app.*' found in sys.modules:RuntimeWarning")  # runpy, in-process only
def test_bad_job_files_are_one_line_naming_the_file_with_exit_code_2(summary, features, fragment, tmp_path, capsys):
    """Both commands, through their modules as run with `python -m` (the exit code is the process's)."""
    import runpy

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(summary)
        if features is not None:
            (tmp_path / name / stats.FEATURES_FILE).write_bytes(features)
    assert stats.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err, err
    if features is None:
        from rasfw.app import report

        assert report.main([str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and fragment in err and "\n" not in err, err
    for module, args in (("rasfw.app.stats", [str(tmp_path / "a"), str(tmp_path / "b")]), ("rasfw.app.report", [str(tmp_path)])):
        if module == "rasfw.app.report" and features is not None:
            continue
        import sys

        argv, sys.argv = sys.argv, [module, *args]
        try:
            with pytest.raises(SystemExit) as info:
                runpy.run_module(module, run_name="__main__")
        finally:
            sys.argv = argv
        assert info.value.code == 2, module
