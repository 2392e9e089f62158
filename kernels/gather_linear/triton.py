"""Triton `gather_linear`: a matrix multiply whose prologue gathers its input rows."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from rasfw.kernels._common import check_index, check_linear, dot_precision, matmul_blocks, upcast_operands


@triton.jit
def _gather_linear_kernel(
    x_ptr, index_ptr, weight_ptr, bias_ptr, out_ptr,
    rows, depth, cols,
    stride_xb, stride_xn, stride_xk,
    stride_ib, stride_im,
    stride_wn, stride_wk,
    stride_bias,
    stride_ob, stride_om, stride_oc,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    """`out[b, j, n] = sum_k x[b, index[b, j], k] * weight[n, k] + bias[n]`, cast to `out`'s dtype.

    The prologue reads `index[b, j]` for the tile's rows once and loads the K-tiles of `x` from those rows
    directly, so the gathered `(B, a, K)` copy is never materialised. fp32 accumulation; every tensor is
    addressed through its strides. Sample `b = program_id(2)`.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < rows
    mask_n = offs_n < cols

    # Prologue: the gather. Tile row j reads token row index[b, j] of x.
    src_rows = tl.load(index_ptr + pid_b * stride_ib + offs_m * stride_im, mask=mask_m, other=0).to(tl.int64)
    x_ptrs = x_ptr + pid_b * stride_xb + src_rows[:, None] * stride_xn + offs_k[None, :] * stride_xk
    w_ptrs = weight_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn  # W^T tile
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)  # not tl.zeros: see kernels/README.md
    for k0 in range(0, depth, BLOCK_K):
        mask_k = offs_k < depth - k0
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if UPCAST:
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(x, w, acc, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n * stride_bias, mask=mask_n, other=0.0)
        acc += bias.to(tl.float32)[None, :]

    out_ptrs = out_ptr + pid_b * stride_ob + offs_m[:, None] * stride_om + offs_n[None, :] * stride_oc
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def gather_linear(
    x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Return `x[b, index[b, j]] @ weight.T + bias` as a new `(B, a, Nout)` tensor of `x`'s dtype.

    Same contract as `rasfw.kernels.gather_linear.reference.gather_linear`; indices are not range-checked.

    Args:
        x: `(B, N, K)` all tokens, any strides.
        index: `(B, a)` int64/int32 rows to project.
        weight: `(Nout, K)`, same dtype as `x`.
        bias: `(Nout,)` or None.
    """
    check_linear(x, weight, bias)
    check_index(index, x.shape[0], x.device)
    batch, _, depth = x.shape
    rows, cols = index.shape[1], weight.shape[0]
    out = torch.empty((batch, rows, cols), dtype=x.dtype, device=x.device)  # (B, a, Nout)
    if out.numel() == 0:
        return out
    blocks = matmul_blocks(rows, cols, depth, x.dtype)
    grid = (triton.cdiv(rows, blocks["BLOCK_M"]), triton.cdiv(cols, blocks["BLOCK_N"]), batch)
    _gather_linear_kernel[grid](
        x, index, weight, bias if bias is not None else weight, out,
        rows, depth, cols,
        *x.stride(),
        *index.stride(),
        *weight.stride(),
        bias.stride(0) if bias is not None else 0,
        *out.stride(),
        HAS_BIAS=bias is not None,
        UPCAST=upcast_operands(_gather_linear_kernel, x.dtype),
        INPUT_PRECISION=dot_precision(x.dtype),
        **blocks,
    )  # fmt: skip
    return out
