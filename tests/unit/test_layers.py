"""The layering of docs/design.md holds: the core, the pipelines and the embedded model never import the
applications in `rasfw.app` (only `rasfw/__main__.py`, `python -m rasfw`, does)."""

from __future__ import annotations

import ast
from pathlib import Path

import rasfw

ROOT = Path(rasfw.__file__).parent
ENTRY_POINTS = {"__main__.py"}  # `python -m rasfw`: it exists to hand on to rasfw.app


def imported_modules(source: str, package: tuple[str, ...]) -> set[str]:
    """Absolute names of the modules a file in `package` imports (relative imports resolved against it)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def layered_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in {"app", "conf", "kernels"}:
            continue
        if len(relative.parts) == 1 and relative.name in ENTRY_POINTS:
            continue
        files.append(path)
    return files


def file_imports(path: Path) -> set[str]:
    return imported_modules(path.read_text(), path.relative_to(ROOT.parent).with_suffix("").parts[:-1])


def test_the_check_sees_every_way_of_importing_the_applications():
    package = ("rasfw", "pipelines")
    for line in ["import rasfw.app.viz", "from rasfw.app import viz", "from ..app import viz", "from ..app.viz import to_pil"]:
        assert any(n.startswith("rasfw.app") for n in imported_modules(line, package)), line
    assert not any(n.startswith("rasfw.app") for n in imported_modules("from . import loop\nimport rasfw.sampler", package))


def test_no_core_pipeline_or_embedded_module_imports_the_applications():
    files = layered_files()
    assert len(files) > 30 and any(p.parent.name == "pipelines" for p in files)
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in file_imports(p) if n == "rasfw.app" or n.startswith("rasfw.app."))
        for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}
