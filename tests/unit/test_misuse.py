"""API misuse: shared parts are refused, interrupted generations free their caches, removal is complete."""

from __future__ import annotations

import pytest
import torch

from rasfw import apply_ras, ras_state, remove_ras
from rasfw.pipelines.tiny import tiny_sd3_transformer
from rasfw.strategies.metrics import StdNoise
from rasfw.testing.tiny import TinySD3Pipeline
from tests.helpers import ras


def test_a_scheduler_shared_by_two_pipelines_is_refused():
    first = TinySD3Pipeline(tiny_sd3_transformer(0))
    second = TinySD3Pipeline(tiny_sd3_transformer(1))
    second.scheduler = first.scheduler
    apply_ras(first, ras())
    with pytest.raises(ValueError, match="already applied to this scheduler"):
        apply_ras(second, ras())
    assert not hasattr(second.transformer, "_diffusers_hook")  # nothing half-applied


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_transformer_call_frees_the_caches(error):
    pipe = TinySD3Pipeline(tiny_sd3_transformer(0))
    state = apply_ras(pipe, ras())
    calls = {"n": 0}

    def interrupt(module, args, output):
        calls["n"] += 1
        if calls["n"] == 4:  # step 3: a RAS call, after step 1 captured the caches
            raise error("stop")

    pipe.transformer.transformer_blocks[0].register_forward_hook(interrupt)
    with pytest.raises(error):
        pipe(batch=1)
    assert calls["n"] == 4 and not state.caches and state.forward.caches is None


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_selection_frees_the_caches(error):
    class Failing(StdNoise):
        def score(self, tokens, grid, generator=None):
            raise error("stop")

    pipe = TinySD3Pipeline(tiny_sd3_transformer(0))
    state = apply_ras(pipe, ras(metric=Failing()))
    with pytest.raises(error):
        pipe(batch=1)  # fails in scheduler.step after step 1, whose call filled the caches
    assert state.step == 1 and not state.caches


def test_remove_restores_the_objects_it_changed_even_if_the_pipeline_was_edited():
    pipe = TinySD3Pipeline(tiny_sd3_transformer(0))
    dense = pipe(batch=1)
    original = pipe.transformer
    apply_ras(pipe, ras())
    pipe.transformer = tiny_sd3_transformer(1)  # the user swapped the transformer after apply_ras
    remove_ras(pipe)
    pipe.transformer = original
    assert torch.equal(pipe(batch=1), dense)
    assert not hasattr(original, "_diffusers_hook")
    with pytest.raises(ValueError, match="not applied"):
        ras_state(pipe)
