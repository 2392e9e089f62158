"""`linear_scatter`'s Triton kernel equals its plain-torch reference (run through Triton's interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rasfw.kernels.linear_scatter import linear_scatter, linear_scatter_reference

from tests.kernels.cases import DTYPES, problems


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=12, deadline=None)
@given(case=problems(), data=st.data())
def test_linear_scatter_equals_reference(kernel_case, dtype, case, data):
    """Active rows equal the reference within tolerance; every other element of `dst` is untouched."""
    layout = st.sampled_from(kernel_case.LAYOUTS)
    dst_dtype = data.draw(st.sampled_from(DTYPES), label="dst_dtype")
    g = torch.Generator().manual_seed(case["seed"])
    batch, tokens, active, depth, cols = (case[k] for k in ("batch", "tokens", "active", "depth", "cols"))
    x = torch.randn(batch, active, depth, generator=g).to(dtype)  # (B, a, K)
    weight = (torch.randn(cols, depth, generator=g) / depth**0.5).to(dtype)  # (Nout, K)
    bias = torch.randn(cols, generator=g).to(dtype) if case["bias"] else None
    index = kernel_case.active_index(batch, tokens, active, g).to(case["index_dtype"])  # (B, a)
    cache = torch.randn(batch, tokens, cols, generator=g).to(dst_dtype)  # (B, N, Nout)

    dst_layout = data.draw(layout, label="dst_layout")
    dst = kernel_case.relayout(cache, dst_layout)
    args = [kernel_case.relayout(t, data.draw(layout, label=name)) for t, name in ((x, "x"), (weight, "weight"))]
    bias_view = kernel_case.relayout(bias[None], data.draw(layout, label="bias"))[0] if bias is not None else None
    index_view = kernel_case.relayout(index, data.draw(layout, label="index"))

    out = linear_scatter(*args, bias_view, index_view, dst)
    expected = linear_scatter_reference(x, weight, bias, index, cache.clone())  # (B, N, Nout)

    assert out is dst
    active_rows = torch.zeros(batch, tokens, dtype=torch.bool)
    active_rows.scatter_(1, index.long(), True)
    close = kernel_case.tolerance(dtype, dst_dtype)
    torch.testing.assert_close(dst[active_rows].float(), expected[active_rows].float(), **close)
    assert torch.equal(dst[~active_rows], cache[~active_rows]), "rows outside the index changed"
    if dst_layout == "sliced":  # the NaN gaps of the view's base were not written
        assert dst._base[..., 1::2].isnan().all(), "wrote outside the destination view"


def test_linear_scatter_with_no_active_rows_leaves_dst_alone():
    dst = torch.randn(2, 5, 4)
    before = dst.clone()
    linear_scatter(torch.randn(2, 0, 3), torch.randn(4, 3), None, torch.empty(2, 0, dtype=torch.long), dst)
    assert torch.equal(dst, before)


@pytest.mark.parametrize(
    "shapes",
    [
        ((2, 3, 8), (4, 7), (2, 3), (2, 5, 4)),  # K mismatch
        ((2, 3, 8), (4, 8), (2, 2), (2, 5, 4)),  # index rows != x rows
        ((2, 3, 8), (4, 8), (2, 3), (2, 5, 6)),  # dst features != Nout
        ((2, 3, 8), (4, 8), (1, 3), (2, 5, 4)),  # index batch
    ],
)
def test_linear_scatter_rejects_mismatched_shapes(shapes):
    x, w, i, d = shapes
    with pytest.raises(ValueError):
        linear_scatter(torch.randn(x), torch.randn(w), None, torch.zeros(i, dtype=torch.long), torch.zeros(d))


def test_linear_scatter_rejects_mixed_input_dtypes():
    with pytest.raises(ValueError, match="share one"):
        index = torch.zeros(1, 2, dtype=torch.long)
        linear_scatter(torch.randn(1, 2, 3), torch.randn(4, 3).half(), None, index, torch.zeros(1, 5, 4))


def test_kernel_interprets_when_triton_was_imported_first():
    """diffusers imports triton before tests/kernels/conftest.py sets TRITON_INTERPRET; the kernel still runs."""
    conftest = Path(__file__).with_name("conftest.py")
    code = f"""
import os, runpy
os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
os.environ["TRITON_INTERPRET"] = "1"
runpy.run_path({str(conftest)!r})
from rasfw.kernels.linear_scatter import linear_scatter, linear_scatter_reference
args = (torch.randn(1, 3, 20), torch.randn(7, 20), torch.randn(7), torch.tensor([[4, 0, 2]]))
expected = linear_scatter_reference(*args, torch.zeros(1, 5, 7))
torch.testing.assert_close(linear_scatter(*args, torch.zeros(1, 5, 7)), expected)
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=conftest.parents[2], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
