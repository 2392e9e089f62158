"""Every config composes and instantiates; the registry and conf/ agree both ways."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import OmegaConf

from rasfw import REGISTRY
from rasfw.app.settings import STRATEGY_GROUPS, build_sampler, check_settings, execution_option
from rasfw.strategies.ratios import warmup_steps

CONF = resources.files("rasfw.conf")


def options(group: str) -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in CONF.joinpath(group).iterdir() if p.name.endswith(".yaml"))


def composed(*overrides: str):
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group", STRATEGY_GROUPS)
def test_registry_and_conf_agree_both_ways(group):
    builtin = {name: cls for name, cls in REGISTRY.items(group) if cls.__module__.startswith("rasfw.")}
    assert sorted(builtin) == options(group)
    for name, cls in builtin.items():
        target = OmegaConf.load(str(CONF.joinpath(group, f"{name}.yaml")))["_target_"]
        assert get_class(target) is cls, f"conf/{group}/{name}.yaml targets {target}, registry has {cls}"


@pytest.mark.parametrize(
    "override",
    [f"{group}={name}" for group in (*STRATEGY_GROUPS, "sampler", "backend") for name in options(group)],
)
def test_every_option_composes_and_builds(override):
    cfg = composed(override)
    check_settings(cfg)
    sampler = build_sampler(cfg)
    sampler.reset.validate(cfg.steps)


def test_backend_options_match_registered_backends():
    """Every backend option names a registered class by _target_ (as every other group does), and back."""
    assert set(options("backend")) == set(REGISTRY.names("backend"))
    for name in options("backend"):
        assert build_sampler(composed(f"backend={name}")).backend == name


def test_execution_options_name_registered_executors_by_target():
    """conf/execution/<name>.yaml targets the executor registered as <name>, and back."""
    assert set(options("execution")) == set(REGISTRY.names("execution"))
    for name in options("execution"):
        mode, settings = execution_option(composed(f"execution={name}").execution)
        assert mode == name and "_target_" not in settings


@pytest.mark.parametrize("name", options("experiment"))
def test_experiments_compose(name):
    cfg = composed(f"+experiment={name}")
    check_settings(cfg)
    build_sampler(cfg).reset.validate(cfg.steps)


def test_every_sweep_lands_in_a_folder_named_after_its_experiment():
    """One source for the sweep folder, conf/experiment_base/sweep.yaml: multirun/<experiment>/<date>_<time>."""
    swept = []
    for name in options("experiment"):
        written = OmegaConf.load(str(CONF.joinpath("experiment", f"{name}.yaml"))).get("hydra") or {}
        assert "dir" not in written.get("sweep", {}), f"conf/experiment/{name}.yaml writes hydra.sweep.dir"
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
        if cfg.hydra.sweeper.get("params"):
            swept.append(name)
            assert re.fullmatch(rf"multirun/{name}/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.sweep.dir), name
    assert {"table2", "low_step", "study", "study_kv_dtype"} <= set(swept)


def test_defaults_follow_the_reference_sd3_example_but_cache_the_lowest_scores():
    cfg = composed()
    sampler = build_sampler(cfg)
    # warm-up and resets are null (scaled to the steps): at 28 steps they are the example's 4 and (12, 20)
    assert cfg.ratio.warmup is None and cfg.reset.steps is None
    assert cfg.steps == 28 and sampler.ratio.value == 0.5 and warmup_steps(sampler.ratio.warmup, 28) == 4
    assert sampler.reset.reset_steps(28) == (12, 20) and sampler.starvation.k == 0.1
    # h = 0 keeps the embedded model within 0.05 of dense alignment; the SD3 example's 0.3 does not
    # (docs/models/embedded.md). The reference preset keeps 0.3.
    assert sampler.high_ratio == 0.0
    assert build_sampler(composed("+experiment=sd3_reference")).high_ratio == 0.3
    assert cfg.compare_dense is True


def test_the_config_and_the_sampler_share_their_defaults():
    """One home per default: conf/sampler/ras.yaml repeats RegionAdaptiveSampler's signature, value for value."""
    import inspect

    from rasfw.sampler import RegionAdaptiveSampler

    ras = OmegaConf.create(CONF.joinpath("sampler", "ras.yaml").read_text())
    signature = inspect.signature(RegionAdaptiveSampler).parameters
    for key, value in ras.items():
        if key != "_target_":
            assert signature[key].default == value, key


def test_the_config_has_a_group_per_strategy_kind():
    from rasfw.registry import STRATEGY_KINDS

    defaults = [next(iter(d)) for d in OmegaConf.create(CONF.joinpath("config.yaml").read_text()).defaults if OmegaConf.is_dict(d)]
    assert set(STRATEGY_KINDS) <= set(defaults)
