"""Triton `gather`: copy indexed token rows into a new tensor."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from rasfw.kernels._common import SUPPORTED_DTYPES, block, check_index


@triton.jit
def _gather_kernel(
    x_ptr, index_ptr, out_ptr,
    rows, width,
    stride_xb, stride_xn, stride_xd,
    stride_ib, stride_im,
    stride_ob, stride_om, stride_od,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """`out[b, j, d] = x[b, index[b, j], d]` for a `(BLOCK_M, BLOCK_D)` tile of sample `b = program_id(2)`."""
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (offs_m < rows)[:, None] & (offs_d < width)[None, :]
    src_rows = tl.load(index_ptr + pid_b * stride_ib + offs_m * stride_im, mask=offs_m < rows, other=0).to(tl.int64)
    values = tl.load(x_ptr + pid_b * stride_xb + src_rows[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=mask)
    out_ptrs = out_ptr + pid_b * stride_ob + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(out_ptrs, values, mask=mask)


def gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Return `x[b, index[b, j]]` as a new `(B, a, D)` tensor; same contract as the reference.

    Args:
        x: `(B, N, D)` fp32/fp16/bf16, any strides.
        index: `(B, a)` int64/int32 rows to read (not range-checked).
    """
    if x.dim() != 3 or x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"x must be a (B, N, D) fp32/fp16/bf16 tensor, got {tuple(x.shape)} {x.dtype}")
    check_index(index, x.shape[0], x.device)
    batch, _, width = x.shape
    rows = index.shape[1]
    out = torch.empty((batch, rows, width), dtype=x.dtype, device=x.device)  # (B, a, D)
    if out.numel() == 0:
        return out
    block_m, block_d = block(rows, 16, 32), block(width, 16, 256)
    grid = (triton.cdiv(rows, block_m), triton.cdiv(width, block_d), batch)
    _gather_kernel[grid](
        x, index, out, rows, width, *x.stride(), *index.stride(), *out.stride(), BLOCK_M=block_m, BLOCK_D=block_d
    )
    return out
