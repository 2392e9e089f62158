"""The contract every model adapter must meet; each adapter's test class inherits it.

The shipped checker (`rasfw.testing.check_model_adapter`) covers exactness, removal, batches, non-square
latents and the K/V cache switch; this class adds what needs the model's own call (partial forwards), CFG
copies and interleaved pipelines.

A subclass provides:
    make_pipe(patch_size) -> an object with .transformer and .scheduler and
        __call__(batch, height, width, steps, guidance, seed) -> final latents (a standard diffusers loop)
    forward_inputs(transformer, batch, height, width, seed) -> kwargs of one transformer call
    patch_sizes: patch sizes to exercise; size: (height, width) of a non-square latent;
    cfg_copies: transformer-batch rows per image when guidance is on.
"""

from __future__ import annotations

import copy

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rasfw import apply_ras
from rasfw.adapters.partial import PartialForward
from rasfw.attach import find_adapter
from rasfw.backends import TorchBackend
from rasfw.testing import check_model_adapter
from tests.helpers import ras

STEPS = 8


class AdapterContract:
    patch_sizes: tuple[int, ...] = (2,)
    size: tuple[int, int] = (16, 24)
    cfg_copies: int = 2  # transformer rows per image under guidance (1: guidance embedded, as in Flux.1-dev)

    def make_pipe(self, patch_size: int):
        raise NotImplementedError

    def forward_inputs(self, transformer, batch: int, height: int, width: int, seed: int) -> dict:
        raise NotImplementedError

    def run(self, pipe, batch=1, seed=0, guidance=3.0, size=None):
        height, width = size or self.size
        return pipe(batch=batch, height=height, width=width, steps=STEPS, guidance=guidance, seed=seed)

    # -- properties ---------------------------------------------------------------------------

    def test_passes_the_adapter_checker(self):
        """rasfw.testing's checker: ratio 1 bit-exact, remove_ras restores, double apply raises, batch images
        selected independently, non-square latents, K/V cache on and off."""
        height, width = self.size
        size = (height, width) if height != width else (height, width + 4 * max(self.patch_sizes))
        adapter = find_adapter(self.make_pipe(self.patch_sizes[0]).transformer)
        check_model_adapter(adapter, lambda: self.make_pipe(self.patch_sizes[0]), size=size, steps=STEPS)

    def test_zero_skip_ras_step_is_dense(self):
        """A ratio just under 1 rounds to 0 skipped tokens: those steps must be dense."""
        pipe = self.make_pipe(self.patch_sizes[0])
        dense = self.run(pipe)
        state = apply_ras(pipe, ras(value=0.999))
        assert torch.equal(self.run(pipe), dense)
        assert set(state.skips) == {0}

    def test_ras_changes_result_without_nan(self):
        pipe = self.make_pipe(self.patch_sizes[0])
        dense = self.run(pipe)
        state = apply_ras(pipe, ras(0.25))
        out = self.run(pipe)
        assert torch.isfinite(out).all()
        assert not torch.equal(out, dense)
        assert not state.caches and not state.kv  # caches are freed when the generation ends
        n = state.num_tokens
        assert min(state.active_tokens_per_step) == n - int(0.75 * n)

    def test_cfg_halves_share_selection(self):
        pipe = self.make_pipe(self.patch_sizes[0])
        state = apply_ras(pipe, ras(0.25))
        seen = []
        handle = pipe.transformer.register_forward_hook(  # after the call, state.forward is its plan
            lambda module, args, out: seen.append(None if state.forward.index is None else state.forward.index.clone())
        )
        self.run(pipe, batch=2, guidance=3.0)
        handle.remove()
        ras_calls = [index for index in seen if index is not None]
        assert ras_calls
        for index in ras_calls:  # rows [uncond_0, uncond_1, cond_0, cond_1] with two copies
            assert index.shape[0] == 2 * self.cfg_copies
            assert all(torch.equal(index[:2], copy) for copy in index.split(2))
            assert not torch.equal(index[0], index[1]) or index.shape[1] == state.num_tokens

    def test_interleaved_pipelines_match_alone(self):
        a, b = self.make_pipe(self.patch_sizes[0]), self.make_pipe(self.patch_sizes[0])
        apply_ras(a, ras(0.25))
        apply_ras(b, ras(0.5, high_ratio=0.3))
        alone_a, alone_b = self.run(a, seed=1), self.run(b, seed=2)
        # interleave at step granularity: each scheduler.step of `a` runs one whole call of `b`
        original = a.scheduler.step

        def step_then_run_b(*args, **kwargs):
            results.append(self.run(b, seed=2))
            return original(*args, **kwargs)

        results: list[torch.Tensor] = []
        a.scheduler.step = step_then_run_b
        assert torch.equal(self.run(a, seed=1), alone_a)
        assert results and all(torch.equal(r, alone_b) for r in results)

    # differing_executors: this contract is inherited by one test class per adapter on purpose.
    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.differing_executors])
    @given(data=st.data())
    def test_partial_forward_matches_dense_at_active_tokens(self, data):
        patch = data.draw(st.sampled_from(self.patch_sizes), label="patch")
        batch = data.draw(st.integers(1, 2), label="batch")
        rows, cols = data.draw(st.integers(2, 5), label="rows"), data.draw(st.integers(2, 5), label="cols")
        height, width = rows * patch, cols * patch
        seed = data.draw(st.integers(0, 2**16), label="seed")
        kv_cache = True
        transformer = copy.deepcopy(self.make_pipe(patch).transformer)
        inputs = self.forward_inputs(transformer, batch, height, width, seed)
        with torch.no_grad(), PartialForward(transformer, inputs, TorchBackend(), kv_cache) as calls:
            n = calls.num_tokens  # rows x cols, times the frames of a video model
            active = data.draw(st.integers(1, n), label="active")
            gen = torch.Generator().manual_seed(seed)
            index = torch.stack([torch.randperm(n, generator=gen)[:active].sort().values for _ in range(batch)])
            dense = calls.capture()
            partial = calls.ras(index)
            grid = calls.adapter.grid(dense)
        d, p = grid.to_tokens(dense), grid.to_tokens(partial)  # (B, N, P, C)
        take = index[:, :, None, None].expand(-1, -1, *d.shape[2:])
        torch.testing.assert_close(torch.gather(p, 1, take), torch.gather(d, 1, take), rtol=1e-4, atol=1e-5)
