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
    assert sorted(groups) == ["backend", "execution", "preset", "ratio", "reset"]  # not model, sampler, metric, ...
    assert "backend: auto, torch*, triton" in text and "execution.compile_backend=inductor" in text
    assert "preset: cpu*, cpu_flux, cpu_lumina, cpu_wan, gpu, gpu_flux, gpu_lumina, gpu_wan" in text
    assert "      ratio.warmup=null  leading dense steps" in text and "      reset.steps=null  dense error-reset steps" in text
    for key in ("executions", "compile_backend", "ratios", "kv_dtypes", "repeats", "steps", "seed"):
        assert re.search(rf"^  {key} +\S.*\(default ", text, re.M), key
