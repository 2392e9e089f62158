"""Pictures that explain themselves: image grids with headers and captions, the update heat map with a
colour bar, and the selection over time.

Every helper here works on one image and a 2-D per-image map (`(rows, cols)`); callers with more axes
(a batch, video frames) loop over them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Viridis at five stops: dark blue (0) -> teal -> yellow (1); readable in grey and by colour-blind readers.
_VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
_PAD = 6
_TEXT = (20, 20, 20)
HEAT_UNITS = "share of RAS steps in which each patch was recomputed"


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """`(3, H, W)` in [0, 1] -> RGB image, enlarged `scale` times with nearest-neighbour."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array, "RGB")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


def heat_colours(fraction: torch.Tensor) -> torch.Tensor:
    """Map values in [0, 1] to RGB `(3, ...)` in [0, 1] on the viridis scale (0 dark blue, 1 yellow)."""
    stops = torch.tensor(_VIRIDIS, dtype=torch.float32) / 255  # (5, 3)
    f = fraction.float().clamp(0, 1) * (len(_VIRIDIS) - 1)
    low = f.floor().long().clamp(max=len(_VIRIDIS) - 2)
    t = (f - low)[..., None]
    colour = stops[low] * (1 - t) + stops[low + 1] * t  # (..., 3)
    return colour.movedim(-1, 0)  # (3, ...)


def heatmap(share: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """The `(rows, cols)` share map (values in [0, 1]) as a `size = (height, width)` picture, one block per patch."""
    colour = heat_colours(share.cpu())  # (3, rows, cols)
    colour = torch.nn.functional.interpolate(colour[None], size=size, mode="nearest")[0]  # (3, H, W)
    return to_pil(colour)


def colour_bar(height: int, label: str = HEAT_UNITS, width: int = 16) -> Image.Image:
    """A vertical viridis bar, 100 % at the top, with ticks at 0, 50 and 100 % and `label` beside it."""
    font = _font()
    ramp = torch.linspace(1, 0, height)[:, None].expand(height, width)  # (H, w): 1 at the top
    bar = to_pil(heat_colours(ramp))
    tick_w = int(max(_text_width(t, font) for t in ("100 %", "50 %", "0 %"))) + 8
    caption = _vertical_text(label, font, height)
    canvas = Image.new("RGB", (width + tick_w + caption.width + 2 * _PAD, height), "white")
    canvas.paste(bar, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for text, y in (("100 %", 0), ("50 %", height // 2), ("0 %", height - 1)):
        draw.line([(width, y), (width + 4, y)], fill=_TEXT)
        top = min(max(y - font.size // 2, 0), height - font.size - 2)
        draw.text((width + 6, top), text, fill=_TEXT, font=font)
    canvas.paste(caption, (width + tick_w + _PAD, 0))
    return canvas


def comparison_grid(
    rows: Sequence[Sequence[Image.Image]], headers: Sequence[str], captions: Sequence[str], side: Image.Image | None = None
) -> Image.Image:
    """Tiles in a grid with a header above each column and a caption under each row.

    Args:
        rows: equal-sized pictures per row (e.g. dense, RAS, heat map).
        headers: one per column, wrapped to the column's width (a newline starts a new line).
        captions: one per row (the prompt), wrapped to the row's width.
        side: a picture placed right of the grid, e.g. the heat map's colour bar.
    """
    font = _font()
    tile_w, tile_h = rows[0][0].size
    columns = len(headers)
    grid_w = columns * tile_w + (columns + 1) * _PAD
    lines = [_wrap(caption, font, grid_w - 2 * _PAD) for caption in captions]
    line_h = font.size + 4
    header_lines = [[line for part in h.split("\n") for line in _wrap(part, font, tile_w)] for h in headers]
    header_h = max(len(h) for h in header_lines) * line_h + _PAD
    heights = [tile_h + _PAD + len(text) * line_h + _PAD for text in lines]
    side_w = 0 if side is None else side.width + _PAD
    canvas = Image.new("RGB", (grid_w + side_w, header_h + sum(heights) + _PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for c, header in enumerate(header_lines):
        for i, line in enumerate(header):
            x = _PAD + c * (tile_w + _PAD) + (tile_w - _text_width(line, font)) // 2
            draw.text((x, _PAD // 2 + i * line_h), line, fill=_TEXT, font=font)
    y = header_h
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas.paste(tile, (_PAD + c * (tile_w + _PAD), y))
        for i, text in enumerate(lines[r]):
            draw.text((_PAD, y + tile_h + _PAD // 2 + i * line_h), text, fill=_TEXT, font=font)
        y += heights[r]
    if side is not None:
        canvas.paste(side, (grid_w, header_h))
    return canvas


def selection_frame(image: torch.Tensor, active: torch.Tensor | None, scale: int) -> Image.Image:
    """`image` `(3, H, W)` with the patches of the `(rows, cols)` boolean `active` map in full colour and
    the cached ones faded to grey (all in colour at a dense step, `active` None)."""
    picture = image.detach().float().cpu().clamp(0, 1)  # (3, H, W)
    if active is not None:
        mask = torch.nn.functional.interpolate(active[None, None].float(), size=picture.shape[-2:], mode="nearest")[0]
        faded = 0.35 + 0.3 * picture.mean(dim=0, keepdim=True).expand_as(picture)  # light grey, keeps the shape
        picture = mask * picture + (1 - mask) * faded
    return to_pil(picture, scale)


def selection_frames(
    images: torch.Tensor, actives: Sequence[torch.Tensor | None], labels: Sequence[str], scale: int
) -> list[Image.Image]:
    """One frame per step: every image side by side with its active patches, `labels[step]` above.

    Args:
        images: `(B, 3, H, W)` pictures to show the patches on (the final RAS images).
        actives: per step a `(B, rows, cols)` boolean map of recomputed patches, or None (dense step).
        labels: per step, e.g. "step 5 of 28 · RAS, ratio 0.50 · 128 of 256 patches recomputed".
        scale: enlargement of each image.
    """
    font = _font()
    frames = []
    for step, active in enumerate(actives):
        tiles = [selection_frame(image, None if active is None else active[i], scale) for i, image in enumerate(images)]
        text = _wrap(labels[step], font, max(sum(t.width + _PAD for t in tiles) - _PAD, 1))
        top = _PAD + len(text) * (font.size + 4)
        frame = Image.new("RGB", (sum(t.width + _PAD for t in tiles) + _PAD, top + tiles[0].height + _PAD), "white")
        draw = ImageDraw.Draw(frame)
        for i, line in enumerate(text):
            draw.text((_PAD, _PAD // 2 + i * (font.size + 4)), line, fill=_TEXT, font=font)
        for i, tile in enumerate(tiles):
            frame.paste(tile, (_PAD + i * (tile.width + _PAD), top))
        frames.append(frame)
    return frames


def save_gif(frames: Sequence[Image.Image], path: str | Path, ms_per_frame: int = 600) -> None:
    """Write `frames` as a looping animated GIF (the last frame held three times as long)."""
    from rasfw.app.files import save_image

    durations = [ms_per_frame] * (len(frames) - 1) + [3 * ms_per_frame]
    save_image(frames[0], path, save_all=True, append_images=list(frames[1:]), duration=durations, loop=0, optimize=False)


def selection_strip(
    images: torch.Tensor, actives: Sequence[torch.Tensor | None], headers: Sequence[str], captions: Sequence[str], scale: int
) -> Image.Image:
    """The selection over time on one page: a row per image (captioned), a column per step (headed), and a
    legend under it saying what the colours and the headers mean (`selection_legend`).

    Args:
        images: `(B, 3, H, W)` pictures to show the patches on.
        actives: per step a `(B, rows, cols)` boolean map of recomputed patches, or None (dense step).
        headers: per step, e.g. "4\\n0.50" (step 4, half the patches) or "0\\ndense".
        captions: per image (the prompt).
        scale: enlargement of each image.
    """
    rows = [[selection_frame(image, None if a is None else a[i], scale) for a in actives] for i, image in enumerate(images)]
    grid = comparison_grid(rows, headers, captions)
    legend = selection_legend(grid.width)
    page = Image.new("RGB", (grid.width, grid.height + legend.height), "white")
    page.paste(grid, (0, 0))
    page.paste(legend, (0, grid.height))
    return page


SELECTION_KEY = (
    "recomputed at that step (full colour)",
    "cached: the previous output reused (grey)",
)
"""What the two swatches of the selection pictures' legend stand for, in `selection_legend`'s order."""
SELECTION_HEADERS = "Column header: the step, then the share of patches recomputed; 'dense': every patch recomputed."
"""What `selection_strip`'s column headers say, as its legend explains them."""


def selection_legend(width: int, swatch: int = 14) -> Image.Image:
    """The key under `selection_strip`: a swatch per patch state (the same ramp as `selection_frame` draws
    it: in full colour when recomputed, faded to grey when cached) and what the column headers mean.

    Args:
        width: the legend's width in pixels (the strip's).
        swatch: the swatches' height in pixels.
    """
    font = _font()
    ramp = heat_colours(torch.linspace(0, 1, 3 * swatch)[None].expand(swatch, 3 * swatch))  # (3, s, 3s)
    samples = (selection_frame(ramp, None, 1), selection_frame(ramp, torch.zeros(1, 1, dtype=torch.bool), 1))
    line_h = max(font.size, swatch) + 4
    keys = [_wrap(text, font, max(width - 3 * _PAD - samples[0].width, 1)) for text in SELECTION_KEY]
    notes = _wrap(SELECTION_HEADERS, font, max(width - 2 * _PAD, 1))
    legend = Image.new("RGB", (width, _PAD + (sum(map(len, keys)) + len(notes)) * line_h), "white")
    draw = ImageDraw.Draw(legend)
    y = _PAD // 2
    for sample, lines in zip(samples, keys, strict=True):
        legend.paste(sample, (_PAD, y))
        for line in lines:
            draw.text((2 * _PAD + sample.width, y), line, fill=_TEXT, font=font)
            y += line_h
    for line in notes:
        draw.text((_PAD, y), line, fill=_TEXT, font=font)
        y += line_h
    return legend


# -- text -----------------------------------------------------------------------------------------


def _font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _text_width(text: str, font) -> int:
    return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font))


def _wrap(text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels (a single over-long word keeps its own line)."""
    average = max(_text_width("abcdefghijklmnopqrstuvwxyz", font) / 26, 1)
    columns = max(int(width / average), 8)
    lines = textwrap.wrap(text, columns) or [""]
    while columns > 8 and any(_text_width(line, font) > width for line in lines):
        columns -= 1
        lines = textwrap.wrap(text, columns)
    return lines


def _vertical_text(text: str, font, height: int) -> Image.Image:
    """`text` rotated to read bottom-up, wrapped to `height` pixels."""
    lines = _wrap(text, font, height)
    line_h = font.size + 4
    horizontal = Image.new("RGB", (height, len(lines) * line_h), "white")
    draw = ImageDraw.Draw(horizontal)
    for i, line in enumerate(lines):
        draw.text(((height - _text_width(line, font)) // 2, i * line_h), line, fill=_TEXT, font=font)
    return horizontal.rotate(90, expand=True)
def latent_frame_of(frame: int, video_frames: int, latent_frames: int) -> int:
    """The latent frame a decoded video frame comes from.

    A causal video VAE with temporal stride 4 (Wan) decodes latent frame 0 to video frame 0 and each later
    latent frame to the next 4 video frames; other frame counts are mapped proportionally.
    """
    if video_frames == 4 * (latent_frames - 1) + 1:
        return (frame + 3) // 4
    return min(frame * latent_frames // max(video_frames, 1), latent_frames - 1)


def video_heatmap_frames(video: torch.Tensor, share: torch.Tensor, scale: int) -> list[Image.Image]:
    """Per video frame: the frame, and beside it the heat map of the latent frame it was decoded from.

    Args:
        video: `(F, 3, H, W)` frames in [0, 1].
        share: `(latent frames, rows, cols)` per patch the share of RAS steps it was recomputed in.
        scale: enlargement of each frame.
    """
    latent = share.shape[0]
    size = to_pil(video[0], scale).size[::-1]  # (height, width)
    heats = [heatmap(share[f], size) for f in range(latent)]
    frames = []
    for t, frame in enumerate(video):
        picture, heat = to_pil(frame, scale), heats[latent_frame_of(t, len(video), latent)]
        canvas = Image.new("RGB", (2 * picture.width + 3 * _PAD, picture.height + 2 * _PAD), "white")
        canvas.paste(picture, (_PAD, _PAD))
        canvas.paste(heat, (2 * _PAD + picture.width, _PAD))
        frames.append(canvas)
    return frames


