"""Hypothesis strategies shared by the kernel tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SIZES = st.sampled_from([1, 16, 63, 100, 781])  # feature sizes: odd, below/above one tile


@st.composite
def problems(draw: st.DrawFn) -> dict:
    """Sizes of one projection call: batch, tokens, active rows, in/out features, options."""
    tokens = draw(st.sampled_from([1, 17, 63, 100, 781]))
    return {
        "batch": draw(st.integers(1, 3)),
        "tokens": tokens,
        "active": draw(st.integers(1, min(tokens, 80))),
        "depth": draw(SIZES),
        "cols": draw(SIZES),
        "bias": draw(st.booleans()),
        "index_dtype": draw(st.sampled_from([torch.int64, torch.int32])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }
