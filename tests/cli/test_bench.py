"""The benchmark runs and reports every field (a smoke test on a very small preset; no timing asserted)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from rasfw.bench import markdown, measure

TINY = ["presets.cpu.layers=1", "presets.cpu.latent_side=8", "repeats=1", "steps=6", "warmup=2", "resets=[4]"]


def config(*overrides):
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        return compose("bench", overrides=[*TINY, *overrides])


def test_bench_rows_have_every_field():
    cfg = config("ratios=[0.5,0.25]")
    rows = measure(cfg)
    assert [row["ratio"] for row in rows] == [0.5, 0.25]
    for row in rows:
        for key in ("ratio", "backend", "speedup", "flops_ratio", "efficiency", "peak_memory_bytes",
                    "memory_overhead", "selection_ms_per_step"):  # fmt: skip
            assert key in row
        assert 0 < row["flops_ratio"] < 1 and row["backend"] == "torch"
        assert row["efficiency"] == pytest.approx(row["speedup"] * row["flops_ratio"])
    assert rows[1]["flops_ratio"] < rows[0]["flops_ratio"]
    assert "| 0.25 | torch |" in markdown(rows, cfg)


def test_bench_rejects_a_gpu_preset_without_a_gpu():
    with pytest.raises(ValueError, match="preset=gpu needs a CUDA device"):
        measure(config("preset=gpu"))
