"""Run the Triton kernels on the CPU through Triton's interpreter.

Triton reads `TRITON_INTERPRET` when a kernel is defined, so it is set here, before any test module
imports the kernels. `setdefault` leaves an explicit `TRITON_INTERPRET=0` (compiled kernels on a GPU) alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")

_KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def _map_source_kernels() -> None:
    """In a source checkout that is not installed, serve the top-level `kernels/` as `rasfw.kernels`.

    An install maps the folder through setuptools' package-dir; this does the same for a bare checkout.
    """
    import rasfw

    if importlib.util.find_spec("rasfw.kernels") is not None or not (_KERNELS / "__init__.py").exists():
        return
    spec = importlib.util.spec_from_file_location(
        "rasfw.kernels", _KERNELS / "__init__.py", submodule_search_locations=[str(_KERNELS)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["rasfw.kernels"] = module
    spec.loader.exec_module(module)
    rasfw.kernels = module


_map_source_kernels()


LAYOUTS = ("contiguous", "transposed", "sliced")
"""Memory layouts the kernels must accept: row-major, last two dimensions swapped, every other element."""


def relayout(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """A view with `tensor`'s values and the given memory layout (a copy, so `tensor` is never aliased).

    `"sliced"` places the values at every other position of a larger base filled with NaN, so a kernel that
    writes outside the view, or reads past it, shows up.
    """
    if layout == "contiguous":
        return tensor.clone()
    if layout == "transposed":
        return tensor.transpose(-1, -2).contiguous().transpose(-1, -2)
    fill = float("nan") if tensor.is_floating_point() else -1
    base = torch.full((*tensor.shape[:-1], 2 * tensor.shape[-1]), fill, dtype=tensor.dtype)
    base[..., ::2] = tensor
    return base[..., ::2]


def active_index(batch: int, tokens: int, active: int, generator: torch.Generator) -> torch.Tensor:
    """`(B, a)` int64 indices: for each sample a random selection of `active` distinct tokens."""
    return torch.stack([torch.randperm(tokens, generator=generator)[:active] for _ in range(batch)])


def tolerance(*dtypes: torch.dtype) -> dict[str, float]:
    """`assert_close` keyword arguments: the kernels' stated tolerance for the loosest of `dtypes`."""
    from rasfw.kernels import TOLERANCES

    rtol, atol = max(TOLERANCES[str(d).removeprefix("torch.")] for d in dtypes)
    return {"rtol": rtol, "atol": atol}


@pytest.fixture(scope="session")
def kernel_case() -> SimpleNamespace:
    """The helpers above (`relayout`, `active_index`, `tolerance`, `LAYOUTS`) for the kernel tests."""
    return SimpleNamespace(relayout=relayout, active_index=active_index, tolerance=tolerance, LAYOUTS=LAYOUTS)
