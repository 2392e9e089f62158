"""The testbed tables in the docs come from the raw outputs committed beside them: `benchmarks/testbeds/contrast.md`
is exactly what `benchmarks/testbeds/contrast.py` makes from the committed sweeps (summary.json and
eval_features.npz of every job), one table per sweep."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTBEDS = ROOT / "benchmarks" / "testbeds"


def load_contrast():
    spec = importlib.util.spec_from_file_location("testbed_contrast", TESTBEDS / "contrast.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_contrast_md_is_remade_from_the_committed_outputs(capsys):
    contrast = load_contrast()
    sweeps = sorted(p for p in TESTBEDS.iterdir() if p.is_dir())
    assert {"patterns", "shapes"} <= {p.name for p in sweeps}
    assert contrast.main([str(p) for p in sweeps]) == 0
    made = capsys.readouterr().out
    assert made == (TESTBEDS / "contrast.md").read_text()
    assert len(re.findall(r"\d+ of \d+ comparisons decided", made)) == len(sweeps)
