"""The pictures of a run of the main command: each image (or video), the grid beside the dense baseline,
the heat map of how often RAS recomputed each patch, and the per-step selections.

A run with the dense sampler selects nothing: its images are named after dense sampling (`dense_<i>.png`), and
it writes no heat map or selection pictures; a dense baseline beside it (another step count, a step cache) is
`baseline_<i>.png`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rasfw.app import viz
from rasfw.app.files import save_image
from rasfw.sampler import RegionAdaptiveSampler

PICTURES = ("grid", "heatmap", "selection", "selection_strip")
"""Summary keys of the pictures a run writes (besides one PNG per image)."""


@dataclass(frozen=True)
class Columns:
    """What a run's pictures call the method's images and the dense baseline's: file prefixes and grid headers.

    Args:
        method: file prefix of the method's images ("ras", or "dense" for the dense sampler).
        method_header: the grid's column header of the method.
        baseline: file prefix of the dense baseline's images.
        baseline_header: the grid's column header of the baseline.
        selects: whether the method selected tokens (RAS): then the heat map and the selection pictures are written.
    """

    method: str
    method_header: str
    baseline: str
    baseline_header: str
    selects: bool


def columns(dense_sampler: bool, steps: int, full_steps: int, cache: str | None) -> Columns:
    """The names of a run's columns: RAS beside dense, or the dense sampler beside its dense baseline.

    Args:
        dense_sampler: the method is `sampler=dense`.
        steps: the method's steps; `full_steps` the baseline's.
        cache: the step cache's name, None for none.
    """
    if not dense_sampler:
        return Columns("ras", "RAS", "dense", "dense", selects=True)
    header = f"dense, {steps} steps" + (f", cache={cache}" if cache else "")
    return Columns("dense", header, "baseline", f"baseline: dense, {full_steps} steps", selects=False)


def write_pictures(out: Path, images: torch.Tensor, dense_images: torch.Tensor | None, updates: torch.Tensor,
                   selections: list, sampler: RegionAdaptiveSampler, prompts: list[str], names: Columns) -> dict[str, Any]:  # fmt: skip
    """Write every picture of an image run; return their file names by role (the summary's keys).

    Args:
        out: the output folder.
        images: `(B, 3, H, W)` images of the method; `dense_images` the dense baseline's, or None.
        updates: `(B, rows, cols)` how often each patch was recomputed, over all steps.
        selections: per step the `(B, a)` active tokens, None at dense steps.
        sampler: the method's sampler (the step labels of the selection pictures).
        prompts: one per image (the captions).
        names: what the columns are called (`columns`).
    """
    scale = max(1, 256 // max(images.shape[-2:]))
    files: dict[str, Any] = {"images": _save_each(out, images, dense_images, names, scale)}
    shown = [([viz.to_pil(dense_images[i], scale)] if dense_images is not None else []) + [viz.to_pil(images[i], scale)]
             for i in range(images.shape[0])]  # fmt: skip
    headers = ([names.baseline_header] if dense_images is not None else []) + [names.method_header]
    if not names.selects:
        save_image(viz.comparison_grid(shown, headers, prompts), out / "grid.png")
        return {**files, "grid": "grid.png"}
    return {**files, **_write_heat(out, images, shown, headers, updates, selections, prompts, scale),
            **_write_selections(out, images, updates.shape[1:], selections, sampler, prompts, scale)}  # fmt: skip


def _save_each(out: Path, images: torch.Tensor, dense_images: torch.Tensor | None, names: Columns, scale: int) -> list[str]:
    """One PNG per image of the method (and of the baseline, after each); their file names."""
    saved = []
    for i in range(images.shape[0]):
        for prefix, picture in ((names.method, images[i]), (names.baseline, None if dense_images is None else dense_images[i])):
            if picture is not None:
                save_image(viz.to_pil(picture, scale), out / f"{prefix}_{i}.png")
                saved.append(f"{prefix}_{i}.png")
    return saved


def _write_heat(out: Path, images: torch.Tensor, shown: list, headers: list[str], updates: torch.Tensor,
                selections: list, prompts: list[str], scale: int) -> dict[str, str]:  # fmt: skip
    """`heatmap.png` (one column per image) and `grid.png` (the shown images and each one's heat map)."""
    steps, (b, rows, cols) = len(selections), updates.shape
    ras_steps = sum(1 for s in selections if s is not None)
    dense_steps = steps - ras_steps
    share = (updates - dense_steps).float() / ras_steps if ras_steps else torch.zeros(b, rows, cols)  # (B, rows, cols)
    tile = viz.to_pil(images[0], scale).size[::-1]
    heat = [viz.heatmap(share[i], tile) for i in range(b)]
    units = viz.HEAT_UNITS if ras_steps else "no RAS steps in this run: every patch recomputed at every step"
    bar = viz.colour_bar(tile[0], units)
    heat_header = f"heat map ({ras_steps} RAS steps)"
    save_image(viz.comparison_grid([heat], prompts, [heat_header], side=bar), out / "heatmap.png")  # one column per image
    tiles = [[*row, heat[i]] for i, row in enumerate(shown)]
    save_image(viz.comparison_grid(tiles, [*headers, heat_header], prompts, side=bar), out / "grid.png")
    return {"heatmap": "heatmap.png", "grid": "grid.png"}


def _write_selections(out: Path, images: torch.Tensor, grid: tuple[int, int], selections: list,
                      sampler: RegionAdaptiveSampler, prompts: list[str], scale: int) -> dict[str, str]:  # fmt: skip
    """`selection.gif` (a frame per step: the recomputed patches) and `selection.png` (the steps side by side)."""
    rows, cols = grid
    actives = [None if s is None else _active_map(s, rows, cols) for s in selections]
    labels = _step_labels(sampler, selections, rows * cols)
    viz.save_gif(viz.selection_frames(images, actives, labels, max(1, scale // 2)), out / "selection.gif")
    headers = [f"{i}\n{'dense' if s is None else f'{s.shape[1] / (rows * cols):.2f}'}" for i, s in enumerate(selections)]
    save_image(viz.selection_strip(images, actives, headers, prompts, max(1, scale // 4)), out / "selection.png")
    return {"selection": "selection.gif", "selection_strip": "selection.png"}


def _active_map(selected: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`(B, a)` active token indices -> `(B, rows, cols)` boolean map."""
    active = torch.zeros(selected.shape[0], rows * cols, dtype=torch.bool)
    active.scatter_(1, selected, True)
    return active.reshape(-1, rows, cols)


def _step_labels(sampler: RegionAdaptiveSampler, selections: list, tokens: int) -> list[str]:
    """Per step: its number (0-based, as `reset.steps` counts), what kind of step it was, and how many patches ran."""
    steps, labels = len(selections), []
    for i, selected in enumerate(selections):
        if selected is not None:
            a = selected.shape[1]
            labels.append(f"step {i}/{steps - 1}: RAS, ratio {a / tokens:.2f}: {a} of {tokens} patches recomputed (grey: cached)")
        else:
            why = "error reset" if i and sampler.reset.is_dense(i, steps) else "warm-up" if sampler.ratio.ratio(i, steps, tokens) >= 1 or i == 0 else "ratio rounds to every patch"
            labels.append(f"step {i}/{steps - 1}: dense ({why}): all {tokens} patches recomputed")
    return labels


def write_videos(out: Path, videos: torch.Tensor, dense_videos: torch.Tensor | None, updates: torch.Tensor,
                 selections: list, prompts: list[str], names: Columns) -> dict[str, Any]:  # fmt: skip
    """Write the pictures of a video run; return their file names by role.

    Per video `ras_<i>.gif` (and `dense_<i>.gif`), and `heatmap_<i>.gif`: each frame beside the heat map of
    the latent frame it was decoded from; `heatmap.png`: a row per video, a column per latent frame;
    `grid.png`: the middle frame, dense | RAS | heat map. With the dense sampler: `dense_<i>.gif` (and
    `baseline_<i>.gif`) and the grid of middle frames only.

    Args:
        out: the output folder.
        videos: `(B, F, 3, H, W)` videos of the method; `dense_videos` the dense baseline's, or None.
        updates: `(B, latent frames, rows, cols)` how often each token was recomputed, over all steps.
        selections: per step the `(B, a)` active tokens, None at dense steps.
        prompts: one per video (the captions).
        names: what the columns are called (`columns`).
    """
    b, frames, latent = videos.shape[0], videos.shape[1], updates.shape[1]
    scale = max(1, 256 // max(videos.shape[-2:]))
    ras_steps = sum(1 for s in selections if s is not None)
    share = (updates - (len(selections) - ras_steps)).float() / max(ras_steps, 1)  # (B, latent frames, rows, cols)
    ms = 125  # 8 frames per second
    saved = []
    for i in range(b):
        viz.save_gif([viz.to_pil(frame, scale) for frame in videos[i]], out / f"{names.method}_{i}.gif", ms)
        saved.append(f"{names.method}_{i}.gif")
        if dense_videos is not None:
            viz.save_gif([viz.to_pil(frame, scale) for frame in dense_videos[i]], out / f"{names.baseline}_{i}.gif", ms)
            saved.append(f"{names.baseline}_{i}.gif")
        if names.selects:
            viz.save_gif(viz.video_heatmap_frames(videos[i], share[i], scale), out / f"heatmap_{i}.gif", ms)
            saved.append(f"heatmap_{i}.gif")
    middle = frames // 2
    captions = list(prompts)
    tiles = [([viz.to_pil(dense_videos[i, middle], scale)] if dense_videos is not None else [])
             + [viz.to_pil(videos[i, middle], scale)] for i in range(b)]  # fmt: skip
    headers = ([names.baseline_header] if dense_videos is not None else []) + [names.method_header]
    if not names.selects:
        save_image(viz.comparison_grid(tiles, [f"{h}, frame {middle}" for h in headers], captions), out / "grid.png")
        return {"videos": saved, "grid": "grid.png"}
    tile = viz.to_pil(videos[0, 0], scale).size[::-1]
    bar = viz.colour_bar(tile[0], viz.HEAT_UNITS if ras_steps else "no RAS steps in this run")
    strips = [[viz.heatmap(share[i, f], tile) for f in range(latent)] for i in range(b)]
    save_image(viz.comparison_grid(strips, [f"latent frame {f}" for f in range(latent)], captions, side=bar), out / "heatmap.png")
    tiles = [[*row, viz.heatmap(share[i, viz.latent_frame_of(middle, frames, latent)], tile)] for i, row in enumerate(tiles)]
    headers = [*headers, f"heat map ({ras_steps} RAS steps)"]
    save_image(viz.comparison_grid(tiles, [f"{h}, frame {middle}" for h in headers], captions, side=bar), out / "grid.png")
    return {"videos": saved, "heatmap": "heatmap.png", "grid": "grid.png"}
