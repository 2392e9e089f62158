"""A built wheel carries conf/, kernels/, rasfw.testing and the shipped weights, and runs from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # builds a wheel and runs the CLI from it


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=600,
    )
    return next(out.glob("rasfw-*.whl"))


def test_wheel_ships_configs_kernels_and_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rasfw/conf/config.yaml" in names and "rasfw/conf/metric/std_noise.yaml" in names
    assert "rasfw/kernels/linear_scatter/triton.py" in names
    assert {"rasfw/testing/__init__.py", "rasfw/testing/strategies.py", "rasfw/testing/adapters.py"} <= names
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert f"rasfw/conf/{path.relative_to(ROOT / 'conf').as_posix()}" in names
    for path in (ROOT / "rasfw" / "embedded" / "models" / "weights").glob("*.safetensors"):
        assert f"rasfw/embedded/models/weights/{path.name}" in names


def test_unpacked_wheel_runs_the_cli_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import rasfw, rasfw.conf, rasfw.kernels, rasfw.testing; print(rasfw.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert probe.stdout.strip().startswith(str(site))
    result = subprocess.run(
        [sys.executable, "-m", "rasfw", "steps=3", "ratio.warmup=1", "reset=none", "compare_dense=false",
         "progress=false", f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "summary.json").exists()


def test_the_installed_scripts_run_the_commands_and_return_their_exit_codes(tmp_path):
    """`rasfw`, `rasfw-bench`, `rasfw-study`, `rasfw-report` and `rasfw-stats`, from the installed entry points."""
    from importlib import metadata

    scripts = {ep.name: ep for ep in metadata.entry_points(group="console_scripts") if ep.dist.name == "rasfw"}
    assert set(scripts) == {"rasfw", "rasfw-bench", "rasfw-study", "rasfw-report", "rasfw-stats"}
    for name, ep in scripts.items():
        assert ep.value == f"rasfw.app.{name.removeprefix('rasfw-') if name != 'rasfw' else 'cli'}:main"
    bin_dir = Path(sys.executable).parent
    missing = subprocess.run([bin_dir / "rasfw-report", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "no such folder" in missing.stderr
    usage = subprocess.run([bin_dir / "rasfw-stats", "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "usage:" in usage.stdout
