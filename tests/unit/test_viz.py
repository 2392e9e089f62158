"""Pictures: colours, the heat map and its colour bar, captioned grids, and the selection over time."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from rasfw.app import viz


def test_heat_colours_run_from_dark_blue_to_yellow():
    ends = viz.heat_colours(torch.tensor([0.0, 1.0]))  # (3, 2)
    assert torch.allclose(ends[:, 0] * 255, torch.tensor([68.0, 1.0, 84.0]))
    assert torch.allclose(ends[:, 1] * 255, torch.tensor([253.0, 231.0, 37.0]))
    brightness = viz.heat_colours(torch.linspace(0, 1, 11)).mean(dim=0)
    assert torch.all(brightness[1:] > brightness[:-1])  # more recomputation reads brighter


def test_heatmap_is_one_block_per_patch_and_not_blended():
    share = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    picture = np.asarray(viz.heatmap(share, (8, 8)))
    assert picture.shape == (8, 8, 3)
    assert (picture[:4, :4] == [68, 1, 84]).all() and (picture[:4, 4:] == [253, 231, 37]).all()


def test_colour_bar_has_its_height_and_a_label_beside_it():
    bar = viz.colour_bar(200)
    assert bar.height == 200 and bar.width > 40
    pixels = np.asarray(bar)
    assert (pixels[0, 0] == [253, 231, 37]).all() and (pixels[-1, 0] == [68, 1, 84]).all()  # 100 % on top


def test_grid_has_room_for_headers_and_wrapped_captions():
    tile = Image.new("RGB", (64, 64), "red")
    short = viz.comparison_grid([[tile, tile]], ["dense", "RAS"], ["a cat"])
    long = viz.comparison_grid([[tile, tile]], ["dense", "RAS"], ["a very long prompt " * 6])
    assert short.width == long.width and long.height > short.height  # the caption wraps to the grid's width
    assert short.height > 64 + 2 * 14  # a header line above and a caption line below the tiles
    top = np.asarray(short)[:14]
    assert (top != 255).any()  # the header is drawn


def test_selection_frame_keeps_active_patches_and_greys_cached_ones():
    image = torch.zeros(3, 4, 4)
    image[0] = 1.0  # pure red
    active = torch.tensor([[True, False], [False, True]])
    frame = np.asarray(viz.selection_frame(image, active, scale=1)).astype(int)
    assert (frame[:2, :2] == [255, 0, 0]).all() and (frame[2:, 2:] == [255, 0, 0]).all()
    cached = frame[:2, 2:]
    assert (cached[..., 0] == cached[..., 1]).all()  # grey
    assert (np.asarray(viz.selection_frame(image, None, scale=1)) == [255, 0, 0]).all()  # dense: all in colour


def test_selection_gif_has_one_frame_per_step(tmp_path):
    images = torch.rand(2, 3, 8, 8)
    actives = [None, torch.rand(2, 4, 4) > 0.5, None]
    frames = viz.selection_frames(images, actives, ["step 0", "step 1", "step 2"], scale=2)
    viz.save_gif(frames, tmp_path / "s.gif")
    gif = Image.open(tmp_path / "s.gif")
    assert gif.n_frames == 3 and gif.size == frames[0].size
    strip = viz.selection_strip(images, actives, ["0\ndense", "1\n0.50", "2\ndense"], ["a", "b"], scale=2)
    assert strip.width >= 3 * 16 and strip.height >= 2 * 16


def test_selection_strip_ends_with_a_legend_of_its_colours_and_headers():
    images = torch.rand(2, 3, 8, 8)
    actives = [None, torch.rand(2, 4, 4) > 0.5]
    strip = viz.selection_strip(images, actives, ["0\ndense", "1\n0.50"], ["a", "b"], scale=2)
    legend = viz.selection_legend(strip.width)
    assert legend.width == strip.width
    below = np.asarray(strip)[-legend.height :].astype(int)  # the rows under the grid: the legend
    assert (below == np.asarray(legend)).all()
    line, left = 14 + 4, viz._PAD
    line *= len(viz._wrap(viz.SELECTION_KEY[0], viz._font(), strip.width - 3 * viz._PAD - 3 * 14))
    coloured = below[viz._PAD // 2 : viz._PAD // 2 + 14, left : left + 3 * 14]  # (14, 42, 3): first swatch
    cached = below[viz._PAD // 2 + line : viz._PAD // 2 + line + 14, left : left + 3 * 14]  # the second one
    assert (coloured.max(axis=-1) - coloured.min(axis=-1) > 100).any()  # full colour: recomputed patches
    assert (cached.max(axis=-1) == cached.min(axis=-1)).all() and (cached < 250).all()  # grey, not white: cached
    assert "recomputed" in viz.SELECTION_KEY[0] and "cached" in viz.SELECTION_KEY[1]
    assert "step" in viz.SELECTION_HEADERS and "dense" in viz.SELECTION_HEADERS
