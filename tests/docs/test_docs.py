"""The documentation runs as written: the plugin guide's Python blocks and the README's embedded example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SKIP = "<!-- docs-test: skip"


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order, except those right after a skip marker."""
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].startswith(SKIP):
            continue
        blocks.append(match.group(1))
    return blocks


def run_blocks(blocks: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "blocks.py"
    script.write_text("\n\n".join(blocks))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)


@pytest.mark.slow
def test_the_plugin_guide_runs(tmp_path):
    blocks = python_blocks(ROOT / "docs" / "plugins.md")
    assert len(blocks) >= 8  # validation, six kinds, the adapter in use
    result = run_blocks(blocks, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "active tokens per step:" in result.stdout


@pytest.mark.slow
def test_the_readme_python_example_runs_on_the_embedded_model(tmp_path):
    blocks = python_blocks(ROOT / "README.md")
    assert blocks and "load_pipeline" in blocks[0]  # the embedded model's example comes first
    result = run_blocks(blocks, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "circle.png").stat().st_size > 0


def test_skipped_blocks_say_why():
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))):
        for line in path.read_text().splitlines():
            if line.startswith(SKIP):
                assert re.match(rf"{SKIP} \(.+\) -->$", line), f"{path.name}: {line}"


def test_the_api_reference_covers_every_public_module():
    import pkgutil

    import rasfw

    documented = set(re.findall(r"^::: (\S+)$", (ROOT / "docs" / "api.md").read_text(), re.M))
    public = {"rasfw"} | {
        m.name for m in pkgutil.walk_packages(rasfw.__path__, "rasfw.") if not any(p.startswith("_") for p in m.name.split("."))
    }
    assert public - documented == set()
    assert documented - public == set()  # no page for a module that is gone


def test_the_guides_packaging_example_is_the_example_plugins():
    """The pyproject excerpt in docs/plugins.md says what plugins/rasfw_edge/pyproject.toml does."""
    tomllib = pytest.importorskip("tomllib", reason="the standard library reads TOML from Python 3.11")
    (block,) = re.findall(r"^```toml\n(.*?)^```", (ROOT / "docs" / "plugins.md").read_text(), re.S | re.M)
    shown = tomllib.loads(block)
    real = tomllib.loads((ROOT / "plugins" / "rasfw_edge" / "pyproject.toml").read_text())
    assert shown["project"]["entry-points"] == real["project"]["entry-points"]
    assert shown["tool"]["setuptools"] == real["tool"]["setuptools"]
    assert shown["project"]["name"] == real["project"]["name"]
