"""The registry: duplicate names, helpful lookups, validation at registration, plugin discovery."""

from __future__ import annotations

import pytest
import torch

from rasfw import REGISTRY, RegionMetric, Registry


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown metric 'nope'; available: l2norm, random, std_noise"):
        _fresh_with_builtins().get("metric", "nope")


def _fresh_with_builtins() -> Registry:
    registry = Registry(entry_point_group="rasfw.tests.none")
    for name, cls in REGISTRY._tables["metric"].items():
        if name in ("l2norm", "random", "std_noise"):
            registry.register("metric", name)(cls)
    return registry


def test_duplicate_name_raises():
    registry = Registry(entry_point_group="rasfw.tests.none")

    @registry.register("metric", "mine")
    class Mine(RegionMetric):
        def score(self, tokens, grid, generator=None):
            return tokens.mean((-1, -2))

    class Other(Mine):
        pass

    with pytest.raises(ValueError, match="metric 'mine' is already registered"):
        registry.register("metric", "mine")(Other)


def test_registration_validates_the_interface():
    registry = Registry(entry_point_group="rasfw.tests.none")
    with pytest.raises(TypeError, match="must subclass RegionMetric"):
        registry.register("metric", "bad")(object)

    class Incomplete(RegionMetric):
        pass

    with pytest.raises(TypeError, match="abstract methods unimplemented: score"):
        registry.register("metric", "incomplete")(Incomplete)


def test_unknown_kind_lists_kinds():
    with pytest.raises(ValueError, match="unknown strategy kind 'colour'"):
        REGISTRY.names("colour")


def test_builtins_are_registered():
    assert {"std_noise", "l2norm", "random"} <= set(REGISTRY.names("metric"))
    assert {"constant", "linear", "reference_dynamic"} <= set(REGISTRY.names("ratio"))
    assert {"exp", "none"} <= set(REGISTRY.names("starvation"))
    assert {"fixed", "periodic", "none"} <= set(REGISTRY.names("reset"))
    assert {"torch", "triton"} <= set(REGISTRY.names("backend"))
    assert "sd3" in REGISTRY.names("adapter")
    assert isinstance(REGISTRY.build("metric", "std_noise").score(torch.zeros(1, 4, 4, 3), None), torch.Tensor)


