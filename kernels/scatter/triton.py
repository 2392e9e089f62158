"""Triton `scatter`: write token rows into indexed rows of a destination, in place."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from rasfw.kernels._common import SUPPORTED_DTYPES, block, check_index


@triton.jit
def _scatter_kernel(
    src_ptr, index_ptr, dst_ptr,
    rows, width,
    stride_sb, stride_sm, stride_sd,
    stride_ib, stride_im,
    stride_db, stride_dn, stride_dd,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """`dst[b, index[b, j], d] = src[b, j, d]` (cast to `dst`'s dtype) for one tile of sample `program_id(2)`."""
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (offs_m < rows)[:, None] & (offs_d < width)[None, :]
    values = tl.load(src_ptr + pid_b * stride_sb + offs_m[:, None] * stride_sm + offs_d[None, :] * stride_sd, mask=mask)
    dst_rows = tl.load(index_ptr + pid_b * stride_ib + offs_m * stride_im, mask=offs_m < rows, other=0).to(tl.int64)
    dst_ptrs = dst_ptr + pid_b * stride_db + dst_rows[:, None] * stride_dn + offs_d[None, :] * stride_dd
    tl.store(dst_ptrs, values.to(dst_ptr.dtype.element_ty), mask=mask)


def scatter(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Write `dst[b, index[b, j]] = src[b, j]` in place and return `dst`; same contract as the reference.

    Args:
        dst: `(B, N, D)` fp32/fp16/bf16 destination, written in place (a view is fine).
        index: `(B, a)` int64/int32 destination rows (not range-checked; duplicates: unspecified winner).
        src: `(B, a, D)` fp32/fp16/bf16 rows, must not overlap `dst`.
    """
    if dst.dim() != 3 or src.dim() != 3 or src.shape[0] != dst.shape[0] or src.shape[2] != dst.shape[2]:
        raise ValueError(f"dst (B, N, D) and src (B, a, D) do not match: {tuple(dst.shape)}, {tuple(src.shape)}")
    if dst.dtype not in SUPPORTED_DTYPES or src.dtype not in SUPPORTED_DTYPES or src.device != dst.device:
        raise ValueError(f"dst and src must be fp32/fp16/bf16 on one device: {dst.dtype}, {src.dtype}")
    check_index(index, dst.shape[0], dst.device)
    if index.shape[1] != src.shape[1]:
        raise ValueError(f"index has {index.shape[1]} rows per sample, src has {src.shape[1]}")
    batch, rows, width = src.shape
    if src.numel() == 0:
        return dst
    block_m, block_d = block(rows, 16, 32), block(width, 16, 256)
    grid = (triton.cdiv(rows, block_m), triton.cdiv(width, block_d), batch)
    _scatter_kernel[grid](
        src, index, dst, rows, width, *src.stride(), *index.stride(), *dst.stride(), BLOCK_M=block_m, BLOCK_D=block_d
    )
    return dst
