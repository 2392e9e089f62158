"""Launch helpers shared by the kernels: block sizes, dot precision, argument checks."""

from __future__ import annotations

import torch
import triton

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def is_interpreted(kernel: object) -> bool:
    """Whether `kernel` was defined under `TRITON_INTERPRET=1` (an interpreted, not a compiled, function)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def block(size: int, low: int, high: int) -> int:
    """The power of two covering `size`, clamped to `[low, high]` (`tl.dot` needs at least 16)."""
    return max(low, min(high, triton.next_power_of_2(max(size, 1))))


def matmul_blocks(rows: int, cols: int, depth: int, dtype: torch.dtype) -> dict[str, int]:
    """Tile sizes and launch options for a `(rows, depth) @ (depth, cols)` product in `dtype`.

    Chosen by a sweep on an H200 (B=2, a=1024 of N=4096 tokens, K=Nout=1536): 16-bit inputs run fastest
    with 64x128x64 tiles, fp32 (CUDA-core FMA, as TF32 is off by default) with 128x128x32; 4 warps and
    3 stages in both cases.
    """
    wide = dtype == torch.float32
    return {
        "BLOCK_M": block(rows, 16, 128 if wide else 64),
        "BLOCK_N": block(cols, 16, 128),
        "BLOCK_K": block(depth, 16, 32 if wide else 64),
        "num_warps": 4,
        "num_stages": 3,
    }


def dot_precision(dtype: torch.dtype) -> str:
    """`tl.dot` input precision matching what `F.linear` does for `dtype` on the GPU.

    fp32 products use TF32 only when torch allows it (`torch.backends.cuda.matmul.allow_tf32`, off by
    default), so by default the kernel is as exact as the reference; fp16/bf16 ignore the setting.
    """
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def upcast_operands(interpreted: bool, dtype: torch.dtype) -> bool:
    """Whether to cast `tl.dot` operands to fp32 in a kernel (`interpreted`: defined for Triton's interpreter).

    Triton's interpreter stores bf16 as raw uint16 and its `tl.dot` multiplies those integers, so under the
    interpreter bf16 tiles are cast to fp32 first. bf16 x bf16 products are exact in fp32, so the result is
    the same as the compiled kernel's bf16 tensor-core product with fp32 accumulation.
    """
    return dtype == torch.bfloat16 and interpreted


def check_index(index: torch.Tensor, batch: int, device: torch.device) -> None:
    """`index` must be a `(B, a)` integer tensor on the data's device."""
    if index.dim() != 2 or index.shape[0] != batch:
        raise ValueError(f"index must have shape (B={batch}, a), got {tuple(index.shape)}")
    if index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"index must be int64 or int32, got {index.dtype}")
    if index.device != device:
        raise ValueError(f"index is on {index.device}, the data on {device}")


def check_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """`x` is `(B, rows, K)`, `weight` `(Nout, K)`, `bias` `(Nout,)`, all of one supported dtype and device."""
    if x.dim() != 3 or weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x (B, rows, K) and weight (Nout, K) do not match: {tuple(x.shape)}, {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    tensors = [x, weight] + ([bias] if bias is not None else [])
    if any(t.dtype != x.dtype for t in tensors) or x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"x, weight and bias must share one of {SUPPORTED_DTYPES}: {[t.dtype for t in tensors]}")
    if any(t.device != x.device for t in tensors):
        raise ValueError(f"x, weight and bias must be on one device: {[str(t.device) for t in tensors]}")
