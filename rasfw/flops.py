"""FLOP counting: `torch.utils.flop_counter.FlopCounterMode`, with attention counted on every device.

torch's counter knows the CUDA attention kernels but not the CPU one
(`aten._scaled_dot_product_flash_attention_for_cpu`), so on a CPU it counted attention as free: absolute
FLOPs came out too low (ratios between a RAS and a dense call hardly move, since attention shrinks with
the queries as the projections do). `flop_counter()` adds that kernel with torch's own SDPA formula
(`sdpa_flop_count`: the two batched matrix products, `4 · B · H · Sq · Sk · d` for equal head sizes).

Grouped-query attention (`enable_gqa=True`, Lumina-Next: fewer key/value heads than query heads) is
counted as the kernels run it, with the key/value heads broadcast to the query heads. torch's own formula
does so only from 2.12 on; before, it refused the shapes and the count failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

T = TypeVar("T")


# The fused attention kernels' forward ops; each takes (query, key, value, ...) as (B, H, S, d) tensors.
SDPA_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)


def _sdpa_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """FLOPs of one fused attention call: torch's formula, key/value heads broadcast to the query heads."""
    heads = query_shape[1]
    if key_shape[1] != heads and key_shape[1] and heads % key_shape[1] == 0:
        key_shape = (key_shape[0], heads, *key_shape[2:])
        value_shape = (value_shape[0], heads, *value_shape[2:])
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A `FlopCounterMode` (no display) that counts every fused attention kernel, grouped-query ones too."""
    ops = (getattr(torch.ops.aten, name, None) for name in SDPA_OPS)
    return FlopCounterMode(display=False, custom_mapping={op: _sdpa_flop for op in ops if op is not None})


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """`fn()`'s result and the FLOPs it ran."""
    with flop_counter() as counter:
        result = fn()
    return result, int(counter.get_total_flops())
