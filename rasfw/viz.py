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


def latent_frame_of(frame: int, video_frames: int, latent_frames: int) -> int:
    """The latent frame a decoded video frame comes from.

    A causal video VAE with temporal stride 4 (Wan) decodes latent frame 0 to video frame 0 and each later
    latent frame to the next 4 video frames; other frame counts are mapped proportionally.
    """
    if video_frames == 4 * (latent_frames - 1) + 1:
        return (frame + 3) // 4
    return min(frame * latent_frames // max(video_frames, 1), latent_frames - 1)


def save_gif(frames: list[torch.Tensor], path, scale: int = 1, fps: int = 8) -> None:
    """Write `(3, H, W)` frames in [0, 1] as a looping animated GIF (Pillow)."""
    pictures = [to_pil(frame, scale) for frame in frames]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=int(1000 / fps), loop=0)


def video_heatmap(video: torch.Tensor, updates: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Per video frame `(3, H, W)`, the update heat map of its latent frame blended over it.

    Args:
        video: `(F, 3, H, W)` frames in [0, 1].
        updates: `(latent frames, rows, cols)` how often each token was recomputed.
        steps: the steps the counts are out of.
    """
    latent = updates.shape[0]
    return [heatmap_overlay(frame, updates[latent_frame_of(t, len(video), latent)], steps) for t, frame in enumerate(video)]
