"""Plugin discovery through a fake distribution's entry point (no install needed)."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata

import pytest

from rasfw import Registry


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    package = tmp_path / "fake_rasfw_plugin"
    (package / "conf" / "metric").mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            import torch
            from rasfw import RegionMetric
            from rasfw.registry import REGISTRY

            REGISTRY_UNDER_TEST = None

            class Centre(RegionMetric):
                def score(self, tokens, grid, generator=None):
                    return -tokens.float().mean((-1, -2)).abs()

            def setup():
                REGISTRY_UNDER_TEST.register("metric", "centre")(Centre)
                return "pkg://fake_rasfw_plugin.conf"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_point = metadata.EntryPoint(name="fake", value="fake_rasfw_plugin:setup", group="rasfw.tests.fake")
    real = metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == "rasfw.tests.fake":
            return metadata.EntryPoints([entry_point])
        return real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    registry = Registry(entry_point_group="rasfw.tests.fake")
    import fake_rasfw_plugin

    fake_rasfw_plugin.REGISTRY_UNDER_TEST = registry
    yield registry
    sys.modules.pop("fake_rasfw_plugin", None)


def test_plugin_is_loaded_lazily_when_its_name_is_asked_for(fake_plugin):
    assert fake_plugin._plugins_loaded is False
    cls = fake_plugin.get("metric", "centre")
    assert cls.__name__ == "Centre" and fake_plugin._plugins_loaded
    assert fake_plugin.load_plugins() == ["pkg://fake_rasfw_plugin.conf"]


def test_plugin_names_appear_in_the_listing(fake_plugin):
    assert "centre" in fake_plugin.names("metric")
