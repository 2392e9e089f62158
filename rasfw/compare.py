"""Comparing a run's images with their dense baseline, in values that JSON can hold."""

from __future__ import annotations

import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean over the batch of per-image PSNR in dB (peak 1.0) between images in [0, 1].

    `None` (JSON null) when any pair is identical: that pair's PSNR, and so the mean, is infinite.

    Args:
        a: `(B, 3, H, W)` or `(3, H, W)` images.
        b: images of the same shape.
    """
    per_image = psnr_per_image(a, b)  # (B,)
    if bool(per_image.isinf().any()):
        return None
    return float(per_image.mean())


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (peak 1.0), float64 `(B,)`; `inf` where a pair is identical.

    Args:
        a: `(B, 3, H, W)` or `(3, H, W)` images in [0, 1] (videos: any shape with the batch first).
        b: images of the same shape.
    """
    a, b = (x.unsqueeze(0) if x.dim() == 3 else x for x in (a, b))
    mse = (a.double() - b.double()).square().flatten(1).mean(1)  # (B,)
    return 10 * torch.log10(1.0 / mse)  # (B,); 1 / 0 = inf for identical pairs
