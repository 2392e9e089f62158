"""The quality study runs end to end on a handful of prompts (figures are not asserted)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from rasfw.study import markdown, run_study

pytestmark = pytest.mark.slow  # end to end: whole studies on the embedded model


def test_study_rows_cover_dense_ras_and_matched_dense():
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose(
            "study",
            overrides=["prompts=4", "batch=4", "steps=6", "warmup=2", "resets=[4]", "ratios=[0.5]", "high_ratios=[1.0,0.0]"],
        )
    result = run_study(cfg, log=lambda line: None)
    methods = [row["method"] for row in result["rows"]]
    assert methods[0] == "dense 6 steps" and methods[1:3] == ["RAS 0.5, h=1.0", "RAS 0.5, h=0.0"]
    assert methods[3].startswith("dense ") and "(FLOPs of RAS 0.5)" in methods[3]
    ras = result["rows"][1]
    assert 0 < ras["flops_ratio"] < 1 and ras["psnr_vs_dense"] is not None
    assert 0 <= ras["object_update_share"] <= 1 and 0 < ras["object_area_share"] < 1
    assert result["rows"][3]["steps"] < 6
    assert "| RAS 0.5, h=0.0 | 6 |" in markdown(result)


def test_study_has_a_row_per_kv_dtype():
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose(
            "study",
            overrides=["prompts=4", "batch=4", "steps=6", "warmup=2", "resets=[4]", "ratios=[0.5]", "high_ratios=[0.0]",
                       "kv_dtypes=[model,float8_e4m3fn]"],  # fmt: skip
        )
    result = run_study(cfg, log=lambda line: None)
    methods = [row["method"] for row in result["rows"]]
    assert methods[1:3] == ["RAS 0.5, h=0.0", "RAS 0.5, h=0.0, K/V float8_e4m3fn"]
    model, fp8 = result["rows"][1], result["rows"][2]
    assert fp8["flops_ratio"] == model["flops_ratio"] and fp8["psnr_vs_dense"] != model["psnr_vs_dense"]
