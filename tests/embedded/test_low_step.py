"""+experiment=low_step: the low-step regime as a testbed, on either embedded model."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rasfw.app.job import check_job_settings
from rasfw.app.precheck import precheck
from rasfw.embedded import data
from rasfw.embedded import patterns as pattern_data

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_the_sweep_is_dense_by_steps_ras_against_equal_flops_and_the_ablations():
    names = [p.stem for p in (CONF / "low_step_point").glob("*.yaml")]
    with initialize_config_module(config_module="rasfw.conf", version_base=None):  # the points compose table2's
        points = {name: compose("config", overrides=[f"+low_step_point={name}"]) for name in names}
    assert {n for n in points if n.startswith("dense_") and not n.startswith("dense_matched")} == {
        f"dense_{s:02d}" for s in (3, 4, 5, 6, 7, 8, 10, 14)
    }
    for ras in ("07_025", "10_025", "10_0125"):
        a, b = points[f"ras_{ras}"], points[f"dense_matched_{ras}"]
        assert b.match_flops is True and (a.steps, a.ratio, a.reset) == (b.steps, b.ratio, b.reset)
    ablations = {n for n in points if n.startswith("ras_10_025_")}
    assert len(ablations) == 7 and len(points) == 21
    experiment = OmegaConf.load(CONF / "experiment" / "low_step.yaml")
    assert experiment.eval.baseline_steps == 28 and experiment.timing.repeats == 0


@pytest.mark.parametrize("model", ["default", "patterns"])
def test_every_job_passes_the_checks_on_either_testbed(model):
    precheck(["+experiment=low_step", f"model={model}"])  # composes and checks every job; no model loads


def test_the_prompt_set_follows_the_testbed_the_model_names():
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        shapes = check_job_settings(compose("config", overrides=["eval.prompts=3"]))
        patterns = check_job_settings(compose("config", overrides=["eval.prompts=3", "model=patterns"]))
    assert all(data.parse_prompt(p) is not None for p in shapes["eval_prompt_set"])
    assert all(pattern_data.parse_prompt(p) is not None for p in patterns["eval_prompt_set"])
    assert not any(data.parse_prompt(p) for p in patterns["eval_prompt_set"])
