"""`python -m rasfw.app.study` is the `study` experiment plus the study's table (figures are not asserted)."""

from __future__ import annotations

import json

import pytest

from rasfw.app.study import main

pytestmark = pytest.mark.slow  # end to end: sweeps on the embedded model

TINY = [
    "eval.prompts=4", "eval.batch=4", "steps=6", "ratio.warmup=2", "reset.steps=[4]",
    "hydra/job_logging=none", "hydra/hydra_logging=none",
]  # fmt: skip


def test_the_study_is_the_experiment_and_ends_in_its_table(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    main([*TINY, "ratio.value=0.5", "+study_point=ras_h1,ras_h0,dense_matched",
          f"eval.baseline_store={tmp_path / 'baselines'}", f"hydra.sweep.dir={sweep}"])  # fmt: skip
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert len(summaries) == 3 and {s["prompt_count"] for s in summaries} == {4}
    assert (sweep / "results.csv").exists() and (sweep / "results.md").exists()  # as every sweep ends
    text = (sweep / "study.md").read_text()
    assert text in capsys.readouterr().out
    methods = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| ")][2:]
    assert methods[:3] == ["dense 6 steps", "RAS 0.5, h=1.0", "RAS 0.5, h=0.0"]
    assert methods[3].startswith("dense ") and methods[3].endswith("(FLOPs of RAS 0.5)") and len(methods) == 4
    ras = next(s for s in summaries if s["sampler"] == "ras")
    assert 0 < ras["flops_ratio"] < 1 and ras["sfd"] is not None and 0 < ras["ssim_vs_dense"] <= 1
    assert ras["shape_accuracy"] >= ras["alignment_accuracy"] and ras["dense_sfd"] is not None
    (sweep / "study.md").unlink()
    main(["--table", str(sweep)])
    assert (sweep / "study.md").read_text() == text


def test_another_experiment_through_the_alias_has_a_row_per_kv_dtype(tmp_path):
    sweep = tmp_path / "sweep"
    main(["+experiment=study_kv_dtype", *TINY, "ratio.value=0.5", "sampler.kv_dtype=model,float8_e4m3fn",
          f"eval.baseline_store={tmp_path / 'baselines'}", f"hydra.sweep.dir={sweep}"])  # fmt: skip
    text = (sweep / "study.md").read_text()
    assert "| RAS 0.5, h=0.0 | 6 |" in text and "| RAS 0.5, h=0.0, K/V float8_e4m3fn | 6 |" in text


def test_the_table_of_a_folder_without_summaries_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--table", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: the sweep folder holds no job summaries (<folder>/<job>/summary.json)"
