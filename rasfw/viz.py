"""Pictures: image grids and the per-token update heat map (paper Figure 1 style)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """`(3, H, W)` in [0, 1] -> RGB image, enlarged `scale` times with nearest-neighbour."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array, "RGB")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


def heat_colours(fraction: torch.Tensor) -> torch.Tensor:
    """Map values in [0, 1] to RGB `(3, ...)`: dark blue (rarely updated) -> yellow (every step)."""
    f = fraction.clamp(0, 1)
    return torch.stack([f, 0.2 + 0.7 * f, 0.6 * (1 - f) + 0.1])  # (3, ...)


def heatmap_overlay(image: torch.Tensor, updates: torch.Tensor, steps: int, alpha: float = 0.55) -> torch.Tensor:
    """Blend an `(rows, cols)` update-count map over a `(3, H, W)` image; returns `(3, H, W)`.

    Each token's block is coloured by the fraction of steps in which it was recomputed.
    """
    h, w = image.shape[-2:]
    fraction = updates.float() / max(steps, 1)  # (rows, cols)
    colour = heat_colours(fraction)  # (3, rows, cols)
    colour = torch.nn.functional.interpolate(colour[None], size=(h, w), mode="nearest")[0]  # (3, H, W)
    return (1 - alpha) * image.float().cpu() + alpha * colour


def grid_image(rows: list[list[torch.Tensor]], scale: int = 1, pad: int = 2) -> Image.Image:
    """Tile `(3, H, W)` images into a grid of `len(rows)` rows, white padding between them."""
    tiles = [[to_pil(image, scale) for image in row] for row in rows]
    tile_w = max(t.width for row in tiles for t in row)
    tile_h = max(t.height for row in tiles for t in row)
    columns = max(len(row) for row in tiles)
    canvas = Image.new("RGB", (columns * (tile_w + pad) + pad, len(tiles) * (tile_h + pad) + pad), "white")
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            canvas.paste(tile, (pad + c * (tile_w + pad), pad + r * (tile_h + pad)))
    return canvas
