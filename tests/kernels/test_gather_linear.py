"""`gather_linear`'s Triton kernel equals its plain-torch reference (run through Triton's interpreter)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rasfw.kernels.gather_linear import gather_linear, gather_linear_reference

from tests.kernels.cases import DTYPES, problems


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=12, deadline=None)
@given(case=problems(), data=st.data())
def test_gather_linear_equals_reference(kernel_case, dtype, case, data):
    layout = st.sampled_from(kernel_case.LAYOUTS)
    g = torch.Generator().manual_seed(case["seed"])
    batch, tokens, active, depth, cols = (case[k] for k in ("batch", "tokens", "active", "depth", "cols"))
    x = torch.randn(batch, tokens, depth, generator=g).to(dtype)  # (B, N, K)
    weight = (torch.randn(cols, depth, generator=g) / depth**0.5).to(dtype)  # (Nout, K)
    bias = torch.randn(cols, generator=g).to(dtype) if case["bias"] else None
    index = kernel_case.active_index(batch, tokens, active, g).to(case["index_dtype"])  # (B, a)

    x_view = kernel_case.relayout(x, data.draw(layout, label="x"))
    weight_view = kernel_case.relayout(weight, data.draw(layout, label="weight"))
    bias_view = kernel_case.relayout(bias[None], data.draw(layout, label="bias"))[0] if bias is not None else None
    index_view = kernel_case.relayout(index, data.draw(layout, label="index"))

    out = gather_linear(x_view, index_view, weight_view, bias_view)
    expected = gather_linear_reference(x, index, weight, bias)  # (B, a, Nout)

    assert out.shape == expected.shape and out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, **kernel_case.tolerance(dtype))


def test_gather_linear_with_no_active_rows_is_empty():
    out = gather_linear(torch.randn(2, 5, 3), torch.empty(2, 0, dtype=torch.long), torch.randn(4, 3), None)
    assert out.shape == (2, 0, 4)


def test_gather_linear_does_not_modify_its_input():
    x = torch.randn(2, 9, 16)
    before = x.clone()
    gather_linear(x, torch.tensor([[1, 4], [8, 0]]), torch.randn(5, 16), torch.randn(5))
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "shapes",
    [
        ((2, 5, 8), (2, 3), (4, 7)),  # K mismatch
        ((2, 5, 8), (1, 3), (4, 8)),  # index batch
        ((2, 5, 8), (2, 3, 1), (4, 8)),  # index rank
    ],
)
def test_gather_linear_rejects_mismatched_shapes(shapes):
    x, i, w = shapes
    with pytest.raises(ValueError):
        gather_linear(torch.randn(x), torch.zeros(i, dtype=torch.long), torch.randn(w), None)
