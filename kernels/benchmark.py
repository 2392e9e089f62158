"""Time the fused projection against the torch reference on a GPU: `python -m rasfw.kernels.benchmark`.

Shapes follow one SD3-medium attention projection at 1024x1024 with CFG: batch 2, 4096 tokens, hidden 1536,
and a quarter of the tokens active (RAS sample ratio 0.25).
"""

from __future__ import annotations

import argparse

import torch
import triton.testing
from rasfw.kernels.linear_scatter import linear_scatter, linear_scatter_reference


def _time(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100)  # milliseconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--active", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=1536)
    args = parser.parse_args()
    b, n, a, k = args.batch, args.tokens, args.active, args.hidden
    print(f"{torch.cuda.get_device_name()}  B={b} N={n} a={a} K=Nout={k}")
    print(f"{'op':<16}{'dtype':<10}{'torch ms':>10}{'triton ms':>11}{'speed-up':>10}")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(b, a, k, device="cuda", dtype=dtype)  # (B, a, K)
        weight = torch.randn(k, k, device="cuda", dtype=dtype) / k**0.5  # (Nout, K)
        bias = torch.randn(k, device="cuda", dtype=dtype)
        index = torch.stack([torch.randperm(n, device="cuda")[:a] for _ in range(b)])  # (B, a)
        cache = torch.empty(b, n, k, device="cuda", dtype=dtype)  # (B, N, Nout)
        rows = {
            "linear_scatter": (
                lambda: linear_scatter_reference(x, weight, bias, index, cache),
                lambda: linear_scatter(x, weight, bias, index, cache),
            ),
        }
        for op, (reference, fused) in rows.items():
            t_ref, t_fused = _time(reference), _time(fused)
            name = str(dtype).removeprefix("torch.")
            print(f"{op:<16}{name:<10}{t_ref:>10.4f}{t_fused:>11.4f}{t_ref / t_fused:>9.2f}x")


if __name__ == "__main__":
    main()
