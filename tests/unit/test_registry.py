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


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [
        ("runner", "rasfw.runners.MiniRunner", "rasfw.pipelines.runners.MiniRunner"),
        ("runner", "rasfw.runners_diffusers.TinySD3Runner", "rasfw.pipelines.runners_diffusers.TinySD3Runner"),
        ("callback", "rasfw.report.ResultsCallback", "rasfw.app.report.ResultsCallback"),
    ],
)
def test_a_target_under_a_moved_module_still_finds_its_class_with_a_notice(kind, old, new, capsys, monkeypatch):
    monkeypatch.setattr("rasfw._deprecation._SHOWN", set())  # notices show once per process
    cls = REGISTRY.by_target(kind, old)
    assert f"{cls.__module__}.{cls.__qualname__}" == new
    assert f"deprecated: {kind}._target_: {old} is now {new}" in capsys.readouterr().err


def test_the_old_module_paths_reexport_the_moved_modules():
    import rasfw.bench
    import rasfw.cli
    import rasfw.loop
    import rasfw.report
    import rasfw.runners
    import rasfw.runners_diffusers
    import rasfw.stats
    import rasfw.study
    from rasfw.app import bench, cli, report, stats, study
    from rasfw.pipelines import loop, runners, runners_diffusers

    assert rasfw.runners.MiniRunner is runners.MiniRunner and rasfw.loop.sd3_denoise is loop.sd3_denoise
    assert rasfw.runners_diffusers.SD3Runner is runners_diffusers.SD3Runner and rasfw.cli.main is cli.main
    assert rasfw.report.ResultsCallback is report.ResultsCallback and rasfw.stats.compare is stats.compare
    for old, new in ((rasfw.bench, bench), (rasfw.study, study), (rasfw.report, report), (rasfw.stats, stats)):
        assert old.main is new.main  # `python -m rasfw.<name>` runs it
