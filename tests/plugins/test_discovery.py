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


@pytest.fixture
def store_cleanup():
    """Take the test's strategy configs back out of Hydra's process-wide `ConfigStore`."""
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo
    before = {group: set(repo[group]) for group in ("metric", "ratio") if isinstance(repo.get(group), dict)}
    yield
    for group in ("metric", "ratio"):
        for name in set(repo.get(group) or {}) - before.get(group, set()):
            del repo[group][name]


def test_a_strategy_without_a_config_file_is_usable_by_name_with_its_defaults(fake_plugin, store_cleanup):
    from hydra import compose, initialize_config_module

    fake_plugin._default_configs = True  # as the process-wide REGISTRY does
    fake_plugin.load_plugins()
    assert fake_plugin.default_configs() == {("metric", "centre"): {"_target_": "fake_rasfw_plugin.Centre"}}
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose("config", overrides=["metric=centre"])
    assert fake_plugin.by_target("metric", cfg.metric._target_).__name__ == "Centre"


def test_a_config_holds_the_constructor_defaults_and_a_shipped_file_wins(fake_plugin, store_cleanup, tmp_path):
    from hydra import compose, initialize_config_module

    from rasfw.interfaces import RatioSchedule

    class Stepped(RatioSchedule):
        def __init__(self, value: float = 0.5, steps: tuple = (3, 5), device: object = object(), name: str | None = None) -> None:
            self.value = value

        def ratio(self, step, num_steps, num_tokens=None):
            return 1.0 if step < 2 else self.value

    fake_plugin.register("ratio", "stepped")(Stepped)
    (tmp_path / "fake_rasfw_plugin" / "conf" / "metric" / "centre.yaml").write_text("_target_: fake_rasfw_plugin.Centre\n")
    fake_plugin._default_configs = True
    fake_plugin.load_plugins()
    node = {"_target_": f"{Stepped.__module__}.{Stepped.__qualname__}", "value": 0.5, "steps": [3, 5], "name": None}
    assert fake_plugin.default_configs() == {("ratio", "stepped"): node}  # centre ships its file
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose("config", overrides=["ratio=stepped", "ratio.value=0.25"])
    assert cfg.ratio.value == 0.25 and list(cfg.ratio.steps) == [3, 5]


@pytest.mark.slow  # a run of the CLI in its own interpreter
def test_the_cli_runs_an_installed_strategy_that_ships_no_config_file(tmp_path):
    """A real distribution on the path (a `.dist-info` with its entry point), whose metric has no YAML."""
    import json
    import os
    import subprocess

    (tmp_path / "configless").mkdir()
    (tmp_path / "configless" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from rasfw import RegionMetric, register

            @register("metric", "configless_centre")
            class Centre(RegionMetric):
                def __init__(self, power: float = 1.0) -> None:
                    if isinstance(power, bool) or not isinstance(power, (int, float)):
                        raise ValueError(f"metric.power must be a number; got {power!r}")
                    self.power = power

                def score(self, tokens, grid, generator=None):
                    return -tokens.float().mean((-1, -2)).abs() ** self.power

            def setup():
                return None
            """
        )
    )
    info = tmp_path / "configless-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: configless\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rasfw.plugins]\nconfigless = configless:setup\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "rasfw", "metric=configless_centre", "metric.power=2", "steps=6", "ratio.warmup=2",
         "reset.steps=[4]", "prompts=[a red circle]", "progress=false", f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    settings = json.loads((tmp_path / "out" / "summary.json").read_text())["settings"]
    assert settings["metric"] == {"name": "configless_centre", "params": {"power": 2}}
