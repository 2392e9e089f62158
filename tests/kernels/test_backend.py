"""`TritonBackend` equals `TorchBackend` on every token operation, and dispatches or falls back as documented."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import rasfw.kernels
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rasfw.backends import TorchBackend, resolve_backend
from rasfw.backends.triton import TritonBackend
from tests.kernels.cases import DTYPES

ROOT = Path(__file__).resolve().parents[2]


def _tensors(dtype: torch.dtype, seed: int, batch: int, tokens: int, active: int, width: int, cols: int, kernel_case):
    g = torch.Generator().manual_seed(seed)
    return {
        "x_all": torch.randn(batch, tokens, width, generator=g).to(dtype),  # (B, N, K)
        "x_active": torch.randn(batch, active, width, generator=g).to(dtype),  # (B, a, K)
        "weight": (torch.randn(cols, width, generator=g) / width**0.5).to(dtype),  # (Nout, K)
        "bias": torch.randn(cols, generator=g).to(dtype),
        "cache": torch.randn(batch, tokens, cols, generator=g).to(dtype),  # (B, N, Nout)
        "index": kernel_case.active_index(batch, tokens, active, g),  # (B, a)
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    tokens=st.sampled_from([1, 17, 63, 100]),
    width=st.sampled_from([1, 16, 63, 100]),
    cols=st.sampled_from([1, 16, 63, 100]),
    data=st.data(),
)
def test_triton_backend_equals_torch_backend(kernel_case, dtype, seed, batch, tokens, width, cols, data):
    active = data.draw(st.integers(1, tokens), label="active")
    t = _tensors(dtype, seed, batch, tokens, active, width, cols, kernel_case)
    triton, torch_ref = TritonBackend(), TorchBackend()
    close = kernel_case.tolerance(dtype)

    assert torch.equal(triton.gather(t["x_all"], t["index"]), torch_ref.gather(t["x_all"], t["index"]))
    assert triton.last_impl == "triton", triton.describe()
    assert torch.equal(
        triton.scatter(t["x_all"].clone(), t["index"], t["x_active"]),
        torch_ref.scatter(t["x_all"].clone(), t["index"], t["x_active"]),
    )
    assert triton.last_impl == "triton", triton.describe()
    torch.testing.assert_close(
        triton.linear_scatter(t["x_active"], t["weight"], t["bias"], t["index"], t["cache"].clone()),
        torch_ref.linear_scatter(t["x_active"], t["weight"], t["bias"], t["index"], t["cache"].clone()),
        **close,
    )
    assert triton.last_impl == "triton", triton.describe()


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=str)
def test_scatter_casts_to_the_destination_dtype(dtype):
    """fp32 rows written into a half-precision destination equal the reference's cast.

    Under Triton's interpreter a cast to bf16 truncates instead of rounding to nearest even, so there a bf16
    destination may differ by one unit in the last place; compiled kernels, and fp16 everywhere, are exact.
    """
    index = torch.tensor([[3, 0, 5]])
    src = torch.randn(1, 3, 40)
    dst = torch.randn(1, 6, 40).to(dtype)
    expected = TorchBackend().scatter(dst.clone(), index, src)
    backend = TritonBackend()
    out = backend.scatter(dst, index, src)
    assert backend.last_impl == "triton"
    if dtype == torch.bfloat16 and rasfw.kernels.interpreted():
        torch.testing.assert_close(out, expected, rtol=2**-7, atol=0)
    else:
        assert torch.equal(out, expected)


def test_auto_resolves_to_torch_on_cpu():
    assert isinstance(resolve_backend("auto", "cpu"), TorchBackend)


def test_auto_backend_chooses_at_its_first_operation_and_equals_the_reference_on_cpu():
    from rasfw.backends import AutoBackend

    auto, reference = AutoBackend(), TorchBackend()
    assert auto.ran() == ("auto", "")
    x, index = torch.randn(2, 6, 4), torch.tensor([[0, 3], [5, 1]])
    assert torch.equal(auto.gather(x, index), reference.gather(x, index))
    assert auto.ran() == ("torch", "")
    src, weight, bias = torch.randn(2, 2, 4), torch.randn(4, 4), torch.randn(4)
    assert torch.equal(auto.scatter(x.clone(), index, src), reference.scatter(x.clone(), index, src))
    assert torch.equal(auto.linear_scatter(src, weight, bias, index, x.clone()),
                       reference.linear_scatter(src, weight, bias, index, x.clone()))  # fmt: skip


def test_triton_resolves_by_name():
    backend = resolve_backend("triton")
    assert isinstance(backend, TritonBackend)
    assert backend.name == "triton"
    assert backend.describe() == "triton backend: no operation run yet"


def test_unsupported_dtype_falls_back_to_the_reference(caplog):
    backend = TritonBackend()
    x, index = torch.randn(2, 7, 5, dtype=torch.float64), torch.tensor([[0, 6], [3, 2]])
    with caplog.at_level(logging.INFO, logger="rasfw.backends.triton"):
        out = backend.gather(x, index)
        backend.gather(x, index)
    assert torch.equal(out, TorchBackend().gather(x, index))
    assert backend.last_impl == "torch"
    assert "float64" in backend.describe()
    assert len([r for r in caplog.records if "gather" in r.getMessage()]) == 1, "a fallback is logged once"


def test_mixed_input_dtypes_fall_back_to_the_reference():
    backend = TritonBackend()
    x, weight, index, dst = torch.randn(1, 1, 3), torch.randn(2, 3).half(), torch.tensor([[1]]), torch.zeros(1, 4, 2)
    with pytest.raises(RuntimeError):  # the reference's own error for F.linear on mixed dtypes
        backend.linear_scatter(x, weight, None, index, dst)
    assert backend.last_impl == "torch" and "mixed" in backend.last_reason


def test_cpu_tensors_fall_back_without_the_interpreter(monkeypatch):
    monkeypatch.setattr(rasfw.kernels, "interpreted", lambda: False)
    backend = TritonBackend()
    dst = torch.zeros(1, 4, 3)
    backend.linear_scatter(torch.randn(1, 2, 5), torch.randn(3, 5), None, torch.tensor([[2, 0]]), dst)
    assert backend.last_impl == "torch"
    assert "TRITON_INTERPRET" in backend.describe()
    assert dst[0, 1].eq(0).all() and dst[0, 2].ne(0).any()


def test_importing_the_backend_loads_no_triton():
    code = "import sys, rasfw.backends.triton; print('triton' in sys.modules, 'rasfw.kernels' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def _compiled_on_cuda() -> bool:
    return torch.cuda.is_available() and not rasfw.kernels.interpreted()


@pytest.mark.gpu
@pytest.mark.skipif(not _compiled_on_cuda(), reason="needs a CUDA GPU and TRITON_INTERPRET=0")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sizes", [(2, 781, 63, 63, 781), (2, 4096, 1024, 1536, 1536)], ids=["odd", "sd3"])
def test_compiled_kernels_equal_torch_backend_on_gpu(kernel_case, dtype, sizes):
    """The compiled kernels on a GPU equal the reference there (batch, tokens, active, K, Nout)."""
    batch, tokens, active, width, cols = sizes
    t = {k: v.cuda() for k, v in _tensors(dtype, 0, batch, tokens, active, width, cols, kernel_case).items()}
    triton, torch_ref = TritonBackend(), TorchBackend()
    close = kernel_case.tolerance(dtype)
    torch.testing.assert_close(
        triton.linear_scatter(t["x_active"], t["weight"], t["bias"], t["index"], t["cache"].clone()),
        torch_ref.linear_scatter(t["x_active"], t["weight"], t["bias"], t["index"], t["cache"].clone()),
        **close,
    )
    assert triton.last_impl == "triton", triton.describe()
    assert torch.equal(triton.gather(t["x_all"], t["index"]), torch_ref.gather(t["x_all"], t["index"]))
    src = torch.randn(batch, active, cols, device="cuda")  # fp32 rows cast into the destination's dtype
    assert torch.equal(
        triton.scatter(t["cache"].clone(), t["index"], src), torch_ref.scatter(t["cache"].clone(), t["index"], src)
    )
    assert triton.last_impl == "triton", triton.describe()
