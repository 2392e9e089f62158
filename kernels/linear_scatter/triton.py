"""Triton `linear_scatter`: a matrix multiply whose epilogue scatters its rows into a cache."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from rasfw.kernels._common import (
    SUPPORTED_DTYPES,
    check_index,
    check_linear,
    dot_precision,
    is_interpreted,
    matmul_blocks,
    upcast_operands,
)


@triton.jit
def _linear_scatter_kernel(
    x_ptr, weight_ptr, bias_ptr, index_ptr, dst_ptr,
    rows, depth, cols,
    stride_xb, stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_bias,
    stride_ib, stride_im,
    stride_db, stride_dn, stride_dc,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    """`dst[b, index[b, j], n] = sum_k x[b, j, k] * weight[n, k] + bias[n]`, cast to `dst`'s dtype.

    One program computes a `(BLOCK_M, BLOCK_N)` tile of `Y = X @ W^T + b` for sample `b = program_id(2)`,
    accumulating in fp32, and its epilogue stores tile row `j` straight into row `index[b, j]` of `dst`:
    the scatter is fused into the store, and `Y` is never materialised. Rows of `dst` not named by
    `index` are not touched. Every tensor is addressed through its strides, so views need no copy.
    No q/k normalisation happens here: normalised keys are scattered after the norm (see kernels/README.md).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < rows
    mask_n = offs_n < cols

    x_ptrs = x_ptr + pid_b * stride_xb + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
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

    # Epilogue: the scatter. Row j of the tile goes to cache row index[b, j].
    dst_rows = tl.load(index_ptr + pid_b * stride_ib + offs_m * stride_im, mask=mask_m, other=0).to(tl.int64)
    dst_ptrs = dst_ptr + pid_b * stride_db + dst_rows[:, None] * stride_dn + offs_n[None, :] * stride_dc
    tl.store(dst_ptrs, acc.to(dst_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# Decided once, when the kernel is defined; read outside the call, so torch.compile traces no isinstance of a
# kernel object (dynamo cannot type it).
_INTERPRETED = is_interpreted(_linear_scatter_kernel)


def linear_scatter(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    dst: torch.Tensor,
) -> torch.Tensor:
    """Write `dst[b, index[b, j]] = x[b, j] @ weight.T + bias` in place and return `dst`.

    Same contract as `rasfw.kernels.linear_scatter.reference.linear_scatter`. Indices are not range-checked
    (that would synchronise with the GPU); duplicates leave it unspecified which row wins, as `scatter_`
    does. `dst` (fp32, fp16 or bf16) must not overlap `x` or `weight`.

    Args:
        x: `(B, a, K)` rows of the active tokens, any strides.
        weight: `(Nout, K)`, same dtype as `x`.
        bias: `(Nout,)` or None.
        index: `(B, a)` int64/int32 destination rows.
        dst: `(B, N, Nout)` destination, written in place (a view is fine).
    """
    check_linear(x, weight, bias)
    check_index(index, x.shape[0], x.device)
    batch, rows, depth = x.shape
    cols = weight.shape[0]
    if dst.dim() != 3 or dst.shape[0] != batch or dst.shape[2] != cols:
        raise ValueError(f"dst must have shape (B={batch}, N, Nout={cols}), got {tuple(dst.shape)}")
    if index.shape[1] != rows:
        raise ValueError(f"index has {index.shape[1]} rows per sample, x has {rows}")
    if dst.device != x.device or dst.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dst must be fp32/fp16/bf16 on {x.device}, got {dst.dtype} on {dst.device}")
    if batch == 0 or rows == 0 or cols == 0:
        return dst
    blocks = matmul_blocks(rows, cols, depth, x.dtype)
    grid = (triton.cdiv(rows, blocks["BLOCK_M"]), triton.cdiv(cols, blocks["BLOCK_N"]), batch)
    _linear_scatter_kernel[grid](
        x, weight, bias if bias is not None else weight, index, dst,
        rows, depth, cols,
        *x.stride(),
        *weight.stride(),
        bias.stride(0) if bias is not None else 0,
        *index.stride(),
        *dst.stride(),
        HAS_BIAS=bias is not None,
        UPCAST=upcast_operands(_INTERPRETED, x.dtype),
        INPUT_PRECISION=dot_precision(x.dtype),
        **blocks,
    )  # fmt: skip
    return dst
