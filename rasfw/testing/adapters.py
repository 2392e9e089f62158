"""Contract check for a model adapter, driven through a tiny pipeline of the model family."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rasfw.interfaces import ModelAdapter

__all__ = ["check_model_adapter"]


def check_model_adapter(
    adapter_cls: type[ModelAdapter],
    build_tiny_pipeline: Callable[[], Any],
    size: tuple[int, int] = (16, 24),
    steps: int = 8,
    guidance: float = 3.0,
) -> None:
    """Check that `adapter_cls` drives its model family exactly.

    Checks, on pipelines from `build_tiny_pipeline`: `apply_ras` picks `adapter_cls` for the transformer;
    ratio 1 is bit-for-bit the unmodified pipeline; a RAS run is finite and differs from dense, with the
    K/V cache on and off; `remove_ras` restores the pipeline bit for bit (outputs, module attributes,
    scheduler); applying twice raises; the images of a batch are selected independently (image 0 of a
    batch of two matches image 0 alone, and the two images' selections differ); and non-square latents
    map to a `rows != cols` grid, square ones to a square grid.

    Args:
        adapter_cls: the adapter class, registered with `@register("adapter", name)`.
        build_tiny_pipeline: returns a fresh pipeline with `.transformer` and `.scheduler`, called as
            `pipe(batch=, height=, width=, steps=, guidance=, seed=)` and returning the final latents
            (height and width in latent pixels; image i draws its noise and conditioning from seed
            `seed + i` alone). `rasfw.testing.tiny.TinySD3Pipeline` is an example, and that
            module's `SD3Call`, `LuminaNextCall`, `FluxCall` and `WanCall` give diffusers' own pipelines this form.
        size: a non-square `(height, width)` latent size, a multiple of the patch size.
        steps: sampling steps per generation (at least 6: warm-up 2, a reset at step 4).
        guidance: guidance scale the pipeline is called with.

    Raises:
        AssertionError: the adapter breaks the contract; the message says how.
    """
    from rasfw.attach import apply_ras, find_adapter, ras_state, remove_ras

    name = adapter_cls.__name__
    _expect(size[0] != size[1], f"size must be non-square to check non-square latents; got {size}")
    _expect(steps >= 6, f"steps must be at least 6; got {steps}")

    def run(pipe, batch=1, seed=0, at=size):
        return pipe(batch=batch, height=at[0], width=at[1], steps=steps, guidance=guidance, seed=seed)

    pipe = build_tiny_pipeline()
    found = find_adapter(pipe.transformer)
    _expect(found is adapter_cls, f"apply_ras drives {type(pipe.transformer).__name__} with {found.__name__}, "
                                  f"not {name}: register it and make {name}.supports match the class")  # fmt: skip
    dense = run(pipe, batch=2)  # first: a pipeline's own cache_context may give the transformer a hook registry
    before = _attributes(pipe.transformer)

    apply_ras(pipe, _sampler(1.0))
    _expect(torch.equal(run(pipe, batch=2), dense), f"{name}: ratio 1 differs from the unmodified pipeline")
    try:
        apply_ras(pipe, _sampler(0.5))
    except ValueError:
        pass
    else:
        raise AssertionError(f"{name}: applying RAS twice did not raise ValueError")
    remove_ras(pipe)

    for kv_cache in (True, False):
        state = apply_ras(pipe, _sampler(0.25, kv_cache=kv_cache))
        out = run(pipe, batch=2)
        where = f"{name} with ratio 0.25 and kv_cache={kv_cache}"
        _expect(bool(torch.isfinite(out).all()), f"{where}: NaN or infinite values")
        _expect(not torch.equal(out, dense), f"{where}: the result equals dense; the hooks change nothing")
        n = state.num_tokens
        _expect(min(state.active_tokens_per_step) == n - int(0.75 * n), f"{where}: RAS steps ran "
                f"{min(state.active_tokens_per_step)} of {n} tokens; expected {n - int(0.75 * n)}")  # fmt: skip
        remove_ras(pipe)
        _expect(torch.equal(run(pipe, batch=2), dense), f"{name}: after remove_ras (kv_cache={kv_cache}) the pipeline's output differs from before")
    after = _attributes(pipe.transformer)
    _expect(before.keys() == after.keys(), f"{name}: remove_ras left the modules changed: {sorted(before.keys() ^ after.keys())[:3]}")
    for module in before:
        extra = sorted(before[module] ^ after[module])
        _expect(not extra, f"{name}: remove_ras left attributes of module '{module}' changed: {extra[:5]}")
    _expect("step" not in vars(pipe.scheduler) and "set_timesteps" not in vars(pipe.scheduler),
            f"{name}: remove_ras left the scheduler wrapped")  # fmt: skip

    state = apply_ras(pipe, _sampler(0.25))
    pair = run(pipe, batch=2, seed=3)
    updates = ras_state(pipe).update_count.clone()  # (2, N)
    _expect(updates.shape[0] == 2, f"{name}: the pipeline sampled {updates.shape[0]} image(s) when asked for 2")
    _, rows, cols = state.grid_shape  # (frames, rows, cols)
    _expect(rows != cols, f"{name}: a {size[0]}x{size[1]} latent gave a square {rows}x{cols} token grid")
    _expect(not torch.equal(updates[0], updates[1]), f"{name}: two different images got the same selection at every step")
    alone = run(pipe, batch=1, seed=3)
    _expect(torch.equal(updates[:1], ras_state(pipe).update_count), f"{name}: image 0's selection changes when a second image is in the batch")
    _expect(torch.allclose(pair[:1], alone, rtol=1e-4, atol=1e-4), f"{name}: image 0 of a batch of two differs from image 0 alone")
    square = (min(size), min(size))
    _expect(bool(torch.isfinite(run(pipe, at=square)).all()), f"{name}: NaN or infinite values on a square latent")
    _expect(state.grid_shape[1] == state.grid_shape[2], f"{name}: a square latent gave a {state.grid_shape} token grid")
    remove_ras(pipe)


def _sampler(value: float, kv_cache: bool = True):
    from rasfw.sampler import RegionAdaptiveSampler
    from rasfw.strategies.ratios import ConstantRatio
    from rasfw.strategies.resets import FixedReset, NoReset

    reset = NoReset() if value == 1 else FixedReset([4])
    return RegionAdaptiveSampler(ratio=ConstantRatio(value, 2), reset=reset, kv_cache=kv_cache)


def _attributes(model: torch.nn.Module) -> dict[str, set[str]]:
    return {name: set(vars(module)) for name, module in model.named_modules()}


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
