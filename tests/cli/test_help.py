"""`--help` of the commands besides the main one (`python -m rasfw --help` is tested with the CLI)."""

from __future__ import annotations

import re
import subprocess
import sys

from rasfw.app.bench import main as bench
from rasfw.app.study import main as study


def test_study_help_shows_its_usage_and_the_main_commands_settings(capsys):
    study(["--help"])  # returns: exit code 0, no sweep started
    text = capsys.readouterr().out
    assert text.startswith("python -m rasfw.app.study: ") and "usage: python -m rasfw.app.study [+experiment=<name>]" in text
    assert "python -m rasfw.app.study --table <sweep folder>" in text
    assert "ratio.value=0.5  share of tokens updated at a RAS step" in text  # the main command's groups apply


def test_study_help_exits_0_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rasfw.app.study", "--help"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "usage: python -m rasfw.app.study" in result.stdout and not list(tmp_path.iterdir())  # nothing run


def test_bench_help_lists_only_the_groups_the_bench_uses_and_explains_its_keys(capsys):
    bench(["--help"])
    text = capsys.readouterr().out
    groups = [line.split(":")[0] for line in text.splitlines() if re.match(r"^\w+: \w+\*?(, \w+\*?)*$", line)]
    assert sorted(groups) == ["backend", "execution"]  # not model, sampler, metric, ...: the bench has no such groups
    assert "backend: auto, torch*, triton" in text and "execution.compile_backend=inductor" in text
    for key in ("preset", "executions", "compile_backend", "ratios", "kv_dtypes", "repeats", "steps", "warmup", "resets",
                "seed", "presets"):  # fmt: skip
        assert re.search(rf"^  {key} +\S.*\(default ", text, re.M), key
