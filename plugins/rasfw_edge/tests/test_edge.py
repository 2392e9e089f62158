"""Tests of the edge-energy plugin, through the installed distribution's entry point."""

from __future__ import annotations

import torch
from rasfw_edge import EdgeEnergy

from rasfw import REGISTRY, TokenGrid
from rasfw.testing import check_region_metric


def test_entry_point_registers_the_metric():
    assert REGISTRY.get("metric", "edge_energy") is EdgeEnergy
    assert any(path == "pkg://rasfw_edge.conf" for path in REGISTRY.load_plugins())


def test_passes_the_metric_checker():
    """rasfw's own contract for metrics: shapes, dtypes, determinism, both latent layouts, a tiny generation."""
    check_region_metric(EdgeEnergy)


def test_smooth_patches_score_below_a_sharp_one():
    grid = TokenGrid(rows=2, cols=2, patch=4, channels=3)
    latent = torch.zeros(1, 3, 8, 8)
    latent[:, :, 1, 5] = 5.0  # a spike inside the top-right patch
    score = EdgeEnergy().score(grid.to_tokens(latent), grid)
    assert score.shape == (1, 4)
    assert int(score.argmax()) == 1
    assert torch.all(score[0, [2, 3]] == 0)


def test_a_linear_ramp_has_no_edge_energy_away_from_the_border():
    grid = TokenGrid(rows=1, cols=3, patch=4, channels=2)
    ramp = torch.arange(12.0).expand(1, 2, 4, 12).contiguous()  # a constant slope along x
    score = EdgeEnergy().score(grid.to_tokens(ramp), grid)
    assert score[0, 1] == 0  # the middle patch has no curvature
    assert score[0, 0] > 0 and score[0, 2] > 0  # replicate padding bends the ramp at the borders
