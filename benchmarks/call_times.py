"""Time one transformer call of a bench preset, dense and with a share of its tokens active.

    .venv/bin/python benchmarks/call_times.py [preset] [repeats]     (default: cpu_wan 10)

A whole generation mixes dense, capture and RAS calls with the scheduler; this isolates one call: the
original dense forward, a capture call (the RAS processors with every token, filling the caches) and RAS
calls with 1, 1/2, 1/4 and 1/8 of the tokens active (the caches filled, random active tokens). Prints a
markdown table of milliseconds per call (mean of `repeats` after one warm-up call).
"""

from __future__ import annotations

import sys
import time

import torch
from hydra import compose, initialize_config_module

from rasfw.adapters.partial import PartialForward
from rasfw.app.bench import machine
from rasfw.pipelines.synthetic import build_synthetic


def _ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


@torch.no_grad()
def main(preset: str = "cpu_wan", repeats: int = 10) -> None:
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose("bench", overrides=[f"preset={preset}"])
    pipe = build_synthetic(cfg.preset, cfg.seed)
    transformer, n = pipe.transformer, pipe.num_tokens
    inputs = pipe.call_inputs(pipe.latents, torch.tensor(500.0, device=pipe.device), pipe.guidance)
    call = lambda: transformer(**inputs, return_dict=False)  # noqa: E731
    rows = [("dense (original forward)", n, _ms(call, repeats))]
    with PartialForward(transformer, inputs) as calls:
        calls.capture()
        rows.append(("capture (fills the caches)", n, _ms(calls.call, repeats)))
        batch = inputs["hidden_states"].shape[0]
        gen = torch.Generator().manual_seed(0)
        for active in (n, n // 2, n // 4, n // 8):
            calls.ras(torch.stack([torch.randperm(n, generator=gen)[:active].sort().values for _ in range(batch)]))
            rows.append((f"RAS, {active} of {n} tokens", active, _ms(calls.call, repeats)))
    print(f"preset `{preset}`, one call, mean of {repeats}; {machine()}\n")
    print("| call | tokens computed | ms | vs dense |\n| --- | --- | --- | --- |")
    for name, computed, ms in rows:
        print(f"| {name} | {computed} | {ms:.1f} | {ms / rows[0][2]:.2f} |")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["cpu_wan"]), *[int(a) for a in sys.argv[2:3]])
