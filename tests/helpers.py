"""Helpers shared by the test modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rasfw import RegionAdaptiveSampler
from rasfw.interfaces import InactiveFill
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset


def ras(
    value: float = 0.25, warmup: int = 2, resets: Sequence[int] = (5,), fill: InactiveFill | None = None, **kwargs: Any
) -> RegionAdaptiveSampler:
    """A `RegionAdaptiveSampler` for tests: ratio `value` after `warmup` dense steps, dense resets at `resets`,
    `fill` for the inactive tokens (None: reuse, vanilla RAS); other keyword arguments go to the sampler."""
    return RegionAdaptiveSampler(
        ratio=ConstantRatio(value, warmup), reset=FixedReset(list(resets)), fill=fill, **kwargs
    )


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of `a` against `b`: `||a - b|| / ||b||`."""
    return float((a - b).norm() / b.norm())


def kv_cache_off_and_on(pipe: Any, **call: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """`pipe(**call)` under `ras(kv_cache=False)` and under `ras(kv_cache=True)`, RAS removed after each."""
    from rasfw import apply_ras, remove_ras

    out = {}
    for kv_cache in (True, False):
        apply_ras(pipe, ras(kv_cache=kv_cache))
        out[kv_cache] = pipe(**call)
        remove_ras(pipe)
    return out[False], out[True]
