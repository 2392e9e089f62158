"""Graph safety of the run state: fixed addresses, in-place writes, kv_dtype storage."""

from __future__ import annotations

import pytest
import torch

from rasfw import apply_ras, remove_ras
from rasfw.pipelines.tiny import tiny_sd3_transformer
from rasfw.state import KVCache, RegionState
from rasfw.testing.tiny import TinySD3Pipeline
from tests.helpers import ras


def addresses_per_call(pipe, state: RegionState) -> list[dict[str, int]]:
    """At every transformer call that uses the caches: the address of each buffer it reads or writes."""
    seen: list[dict[str, int]] = []

    def record(module, args, output):  # after the call: state.forward is its plan
        plan = state.forward
        if plan.caches is not None:
            found = {f"kv/{name}": kv.key.data_ptr() for name, kv in plan.caches.kv.items()}
            found["output"] = plan.caches.output.data_ptr()
            if plan.index is not None:
                found[f"index/{tuple(plan.index.shape)}"] = plan.index.data_ptr()
            seen.append(found)

    handle = pipe.transformer.register_forward_hook(record)
    pipe(batch=2)
    handle.remove()
    return seen


def test_buffers_keep_their_addresses_through_a_generation():
    pipe = TinySD3Pipeline(tiny_sd3_transformer(0))
    state = apply_ras(pipe, ras())
    calls = addresses_per_call(pipe, state)
    assert len(calls) == 7  # capture at step 1, RAS 2-4, capture at 5, RAS 6-7
    merged: dict[str, set[int]] = {}
    for call in calls:
        for name, address in call.items():
            merged.setdefault(name, set()).add(address)
    assert all(len(addresses) == 1 for addresses in merged.values()), merged


def test_kept_buffers_survive_the_next_generation():
    """What `execution=cudagraph` relies on: with `keep_buffers` the second generation reuses every buffer."""
    pipe = TinySD3Pipeline(tiny_sd3_transformer(0))
    state = apply_ras(pipe, ras())
    state.keep_buffers = True
    first, second = addresses_per_call(pipe, state), addresses_per_call(pipe, state)
    assert first == second


def test_caches_never_alias_a_module_output():
    pipe = TinySD3Pipeline(tiny_sd3_transformer(0))
    state = apply_ras(pipe, ras())
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, a, out: outputs.append(out)) for m in pipe.transformer.modules()]
    cached: set[int] = set()
    original = pipe.scheduler.step

    def step(*args, **kwargs):
        for caches in state.caches.values():
            cached.update(t.untyped_storage().data_ptr() for kv in caches.kv.values() for t in (kv.key, kv.value))
            cached.add(caches.output.untyped_storage().data_ptr())
        return original(*args, **kwargs)

    pipe.scheduler.step = step
    pipe(batch=1)
    for handle in handles:
        handle.remove()
    produced = {o.untyped_storage().data_ptr() for o in outputs if isinstance(o, torch.Tensor)}
    assert cached and not cached & produced


@pytest.mark.parametrize(("kv_dtype", "tolerance", "bytes_ratio"), [("bfloat16", 2e-3, 0.5), ("float8_e4m3fn", 2e-2, 0.25)])
def test_kv_dtype_stores_fewer_bytes_and_stays_close(kv_dtype, tolerance, bytes_ratio):
    pipe = TinySD3Pipeline(tiny_sd3_transformer(0))
    sizes: dict[str, int] = {}

    def run(name: str) -> torch.Tensor:
        state = apply_ras(pipe, ras(kv_dtype=name))
        original = pipe.scheduler.step

        def step(*args, **kwargs):
            kvs = [kv for caches in state.caches.values() for kv in caches.kv.values()]
            stored = [kv.stored_key if kv.stored_key is not None else kv.key[:, kv.image] for kv in kvs]
            sizes[name] = max(sizes.get(name, 0), sum(t.numel() * t.element_size() for t in stored))
            return original(*args, **kwargs)

        pipe.scheduler.step = step
        out = pipe(batch=2)
        pipe.scheduler.step = original  # remove_ras restores only its own wrapper (it refuses to drop another's)
        remove_ras(pipe)
        return out

    reference, stored = run("model"), run(kv_dtype)
    torch.testing.assert_close(stored, reference, rtol=tolerance, atol=tolerance)
    assert not torch.equal(stored, reference)
    assert sizes[kv_dtype] == sizes["model"] * bytes_ratio


def test_float8_values_saturate_instead_of_overflowing():
    cache = KVCache(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), slice(0, 3),
                    torch.zeros(1, 3, 2, dtype=torch.float8_e4m3fn), torch.zeros(1, 3, 2, dtype=torch.float8_e4m3fn))  # fmt: skip
    cache.write_image("key", torch.tensor([[[1000.0, -1000.0]]]), torch.tensor([[1]]))
    assert cache.stored_key[0, 1].float().tolist() == [448.0, -448.0]
    assert cache.key[0, 1].tolist() == [1000.0, -1000.0]  # the fresh rows are exact in the joint buffer
    assert torch.isfinite(cache.key).all()


def test_recorded_selection_is_each_steps_active_tokens_on_the_cpu():
    pipe = TinySD3Pipeline(tiny_sd3_transformer())
    state = apply_ras(pipe, ras())
    seen = []
    pipe.transformer.register_forward_hook(  # after each call: the plan's index rows of the first image copy
        lambda module, args, out: seen.append(None if state.forward.index is None else state.forward.index[:2].clone())
    )
    pipe(batch=2, steps=8)
    assert state.selections == []  # off by default: no copies
    state.record_selection = True
    seen.clear()
    pipe(batch=2, steps=8)
    assert len(state.selections) == 8
    for step, (recorded, used) in enumerate(zip(state.selections, seen, strict=True)):
        assert (recorded is None) == (used is None) == (step in (0, 1, 5)), step
        if recorded is not None:
            assert recorded.device.type == "cpu" and torch.equal(recorded, used)
