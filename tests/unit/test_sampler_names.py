"""`RegionAdaptiveSampler` takes each strategy by its registered name, as the command line does."""

import pytest

from rasfw import RegionAdaptiveSampler
from rasfw.registry import REGISTRY, STRATEGY_KINDS


@pytest.mark.parametrize("kind", STRATEGY_KINDS)
def test_every_registered_name_builds_its_strategy_with_its_defaults(kind):
    for name, cls in REGISTRY.items(kind):
        if kind == "fill" and getattr(cls(), "order", 0) > 0:
            continue  # a forecasting fill needs a longer warm-up than the default ratio's: built below
        strategy = getattr(RegionAdaptiveSampler(**{kind: name}), kind)
        assert type(strategy) is cls and vars(strategy) == vars(cls())


def test_names_and_instances_mix():
    from rasfw.strategies.ratios import ConstantRatio

    sampler = RegionAdaptiveSampler(metric="l2norm", ratio=ConstantRatio(0.25, 2), starvation="none", reset="none", fill="taylor")
    assert (sampler.ratio.value, REGISTRY.name_of("metric", type(sampler.metric))) == (0.25, "l2norm")
    assert REGISTRY.name_of("fill", type(sampler.fill)) == "taylor"


@pytest.mark.parametrize("kind", STRATEGY_KINDS)
def test_an_unknown_name_is_one_line_listing_the_known_ones(kind):
    with pytest.raises(ValueError) as error:
        RegionAdaptiveSampler(**{kind: "no_such_strategy"})
    message = str(error.value)
    assert "\n" not in message and f"unknown {kind} 'no_such_strategy'" in message
    assert all(name in message for name in REGISTRY.names(kind))


def test_a_value_that_is_neither_is_refused():
    with pytest.raises(TypeError, match="metric must be a RegionMetric or a registered name; got int"):
        RegionAdaptiveSampler(metric=3)
