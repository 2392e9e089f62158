"""The repository's `kernels/` folder must not hide the `kernels` distribution from the repository's root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_diffusers_models_import_from_the_repository_root():
    # `python -m rasfw` run in a checkout puts the root on sys.path, where `kernels/` sits under the name of
    # the distribution that transformers requires and diffusers imports.
    # Without the distribution, `import kernels` there fails as it would anywhere else.
    code = (
        "import importlib.metadata, rasfw.kernels\n"
        "from diffusers import SD3Transformer2DModel\n"
        "assert rasfw.kernels.TOLERANCES, 'rasfw.kernels lost its contents'\n"
        "try:\n"
        "    importlib.metadata.version('kernels')\n"
        "except importlib.metadata.PackageNotFoundError:\n"
        "    try:\n"
        "        import kernels\n"
        "    except ModuleNotFoundError:\n"
        "        raise SystemExit(0)\n"
        "    raise SystemExit('kernels imported with no distribution installed')\n"
        "import kernels\n"
        "print(kernels.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(ROOT / "kernels") not in done.stdout, done.stdout
