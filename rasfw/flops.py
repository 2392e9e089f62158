"""FLOP counting: `torch.utils.flop_counter.FlopCounterMode`, with attention counted on every device.

torch's counter knows the CUDA attention kernels but not the CPU one
(`aten._scaled_dot_product_flash_attention_for_cpu`), so on a CPU it counted attention as free: absolute
FLOPs came out too low (ratios between a RAS and a dense call hardly move, since attention shrinks with
the queries as the projections do). `flop_counter()` adds that kernel with torch's own SDPA formula
(`sdpa_flop_count`: the two batched matrix products, `4 · B · H · Sq · Sk · d` for equal head sizes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

T = TypeVar("T")


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """FLOPs of `_scaled_dot_product_flash_attention_for_cpu` (the same formula torch uses on CUDA)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A `FlopCounterMode` (no display) that also counts the CPU attention kernel."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """`fn()`'s result and the FLOPs it ran."""
    with flop_counter() as counter:
        result = fn()
    return result, int(counter.get_total_flops())
