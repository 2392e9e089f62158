"""Measured time of every `table2` point on the embedded model, round-robin, for the equal-time pairs of pairs.py.

A sweep's own `time_s` is measured inside each job while other jobs (and anything else on the machine) may run,
so points timed minutes apart are not comparable. This times every point of `conf/table2_point/` in one process,
in rounds (each round runs every point once, in a shuffled order), on the same prompts, and writes the median.
Dense points run the plain pipeline (nothing attached); RAS points run through `apply_ras` (eager). The
`dense_matched_*` points are left out: each samples as one of the `dense_<steps>` points.

Usage (from the repository root, on a quiet machine):
    OMP_NUM_THREADS=1 python benchmarks/experiments/table2_times.py [rounds] [prompts]
writes benchmarks/experiments/table2/times.json (point -> median seconds of one call of `prompts` prompts).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from rasfw import apply_ras, remove_ras
from rasfw.app.bench import machine
from rasfw.app.cli import build_sampler
from rasfw.embedded.data import prompt_set
from rasfw.embedded.models import load_pipeline
from rasfw.sampler import DenseSampler

HERE = Path(__file__).resolve().parent
CONF = HERE.parents[1] / "conf"


def points() -> dict[str, tuple[int, float, object]]:
    """point name -> (steps, guidance, sampler); a dense point's sampler is None (the plain pipeline)."""
    found = {}
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        for path in sorted((CONF / "table2_point").glob("*.yaml")):
            if path.stem.startswith("dense_matched"):
                continue  # its step count is chosen at run time (match_flops); it is one of the dense_<steps> points
            cfg = compose("config", overrides=[f"+table2_point={path.stem}"])
            sampler = build_sampler(cfg)
            found[path.stem] = (int(cfg.steps), float(cfg.guidance), None if isinstance(sampler, DenseSampler) else sampler)
    return found


@torch.no_grad()
def main(rounds: int = 5, count: int = 8) -> None:
    pipe = load_pipeline()
    prompts = prompt_set(count)[0]
    table = points()
    times: dict[str, list[float]] = {name: [] for name in table}
    order = random.Random(0)
    for _ in range(rounds + 1):  # the first round warms up and is not kept
        names = list(table)
        order.shuffle(names)
        for name in names:
            steps, guidance, sampler = table[name]
            if sampler is not None:
                apply_ras(pipe, sampler)
            start = time.perf_counter()
            pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(0),
                 output_type="pt", progress=False)  # fmt: skip
            times[name].append(time.perf_counter() - start)
            if sampler is not None:
                remove_ras(pipe)
    medians = {name: statistics.median(values[1:]) for name, values in times.items()}
    out = HERE / "table2" / "times.json"
    out.write_text(json.dumps({"machine": machine(), "rounds": rounds, "prompts": count, "seconds": medians}, indent=2) + "\n")
    for name, seconds in sorted(medians.items(), key=lambda item: item[1]):
        print(f"{name:24s} {seconds:.3f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:3]])
