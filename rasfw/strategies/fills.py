"""Inactive-token fills: what an inactive token's output is at a RAS step (its last one, or a forecast)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rasfw.checks import integer
from rasfw.interfaces import InactiveFill
from rasfw.registry import register

MAX_ORDER = 2
"""The highest Taylor order built in: each order keeps one more output per token."""


@register("fill", "reuse")
class ReuseFill(InactiveFill):
    """The last computed output, unchanged: vanilla RAS (the paper's and the reference implementation's)."""

    order = 0
    forecasts = False  # the RAS calls keep their plain path; `forecast` is what that path computes

    def forecast(self, outputs: Sequence[torch.Tensor], steps: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        return outputs[0].clone()


@register("fill", "taylor")
class TaylorFill(InactiveFill):
    """Per-token Taylor extrapolation over the steps since each token was computed.

    With the outputs `y0, y1, y2` a token got at steps `t0 > t1 > t2` (its latest computations), the
    forecast at step `s` is Newton's interpolating polynomial through them, evaluated ahead:

        order 1:  y0 + (s - t0) * [y0, y1]
        order 2:  y0 + (s - t0) * [y0, y1] + (s - t0) * (s - t1) * [y0, y1, y2]

    where `[y0, y1] = (y0 - y1) / (t0 - t1)` and `[y0, y1, y2] = ([y0, y1] - [y1, y2]) / (t0 - t2)` are
    divided differences: the first and second derivatives of a Taylor expansion at `t0`, estimated from
    the token's own history, with the uneven gaps RAS leaves between a token's computations. Each token
    has its own `t0, t1, t2`. Computed in float32 whatever the model's dtype.

    Args:
        order: 1 (first order, a line through the last two outputs) or 2 (a parabola through three).
    """

    def __init__(self, order: int = 1) -> None:
        self.order = integer("fill.order", order, f"[1, {MAX_ORDER}]", lambda v: 1 <= v <= MAX_ORDER)

    def forecast(self, outputs: Sequence[torch.Tensor], steps: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        y = [o.float() for o in outputs[: self.order + 1]]  # each (Bt, N, F)
        t = steps[: self.order + 1].unsqueeze(-1)  # (order + 1, Bt, N, 1)
        ahead = now - t[0]  # (Bt, N, 1)
        slope = (y[0] - y[1]) / (t[0] - t[1])  # (Bt, N, F)
        result = y[0] + ahead * slope
        if self.order == 2:
            curvature = (slope - (y[1] - y[2]) / (t[1] - t[2])) / (t[0] - t[2])  # (Bt, N, F)
            result = result + ahead * (now - t[1]) * curvature
        return result.to(outputs[0].dtype)
