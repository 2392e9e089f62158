"""rasfw against the reference implementation of RAS (microsoft/RAS), side by side on one machine.

    .venv/bin/python benchmarks/reference/side_by_side.py <path to a microsoft/RAS checkout> [repeats] [ratios]
    e.g. .venv/bin/python benchmarks/reference/side_by_side.py ../RAS 3 0.5,0.25,0.125

Both run the bench's CPU preset (an SD3-architecture transformer with random weights: 12 layers, hidden 768,
1024 image tokens, batch 1, no CFG) for whole 28-step generations with the reference's SD3 schedule (warm-up 4,
dense resets at 12 and 20, `std` metric, starvation 0.1): dense, the reference (its `ras_forward`, its joint
attention processor and its scheduler, as its `update_sd3_pipeline` installs them; `enable_index_fusion` off, as
its Triton kernels need a GPU) and rasfw (`apply_ras`, eager, torch backend), each on its own copy of the same
weights. The three alternate within every repeat, so a machine that slows down slows all three; the table gives
the median seconds per generation and the speed-up over dense. Nothing of the reference is copied here: it is
imported from the path given.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from rasfw import RegionAdaptiveSampler, apply_ras
from rasfw.app.bench import machine
from rasfw.pipelines.synthetic import build_synthetic
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset

STEPS, WARMUP, RESETS, PRESET = 28, 4, (12, 20), "cpu"


def _pipeline():
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose("bench", overrides=[f"preset={PRESET}"])
    return build_synthetic(cfg.preset, cfg.seed)


def _reference(path: Path, ratio: float, pipe) -> None:
    """Install the reference on `pipe` (its module-level manager holds the settings of one pipeline at a time)."""
    sys.path.insert(0, str(path / "src"))
    from ras.utils import ras_manager
    from ras.utils.stable_diffusion_3.update_pipeline_sd3 import update_sd3_pipeline

    manager = ras_manager.MANAGER
    side = pipe.latents.shape[-1]
    manager.patch_size, manager.scheduler_start_step, manager.scheduler_end_step = 2, WARMUP, STEPS
    manager.metric, manager.error_reset_steps, manager.sample_ratio = "std", list(RESETS), ratio
    manager.starvation_scale, manager.high_ratio, manager.num_steps = 0.1, 1.0, STEPS
    manager.enable_index_fusion, manager.replace_with_flash_attn = False, False
    manager.skip_num_step, manager.skip_num_step_length = 0, 0
    manager.height = manager.weight = side * manager.vae_size  # pixels: the reference counts tokens from them
    manager.skip_token_num_list = []
    manager.generate_skip_token_list()
    manager.reset_cache()
    update_sd3_pipeline(pipe)


def _rasfw(ratio: float, pipe) -> None:
    sampler = RegionAdaptiveSampler(ratio=ConstantRatio(ratio, warmup=WARMUP), reset=FixedReset(list(RESETS)), high_ratio=1.0)
    apply_ras(pipe, sampler)


def _seconds(pipe) -> float:
    start = time.perf_counter()
    pipe(STEPS)
    return time.perf_counter() - start


def main(reference: str, repeats: int = 3, ratios: str = "0.5,0.25,0.125") -> None:
    path = Path(reference).expanduser()
    if not (path / "src" / "ras" / "utils" / "ras_manager.py").is_file():
        raise SystemExit(f"error: {reference}: not a microsoft/RAS checkout (no src/ras/utils/ras_manager.py)")
    torch.manual_seed(0)
    rows = []
    for ratio in (float(r) for r in ratios.split(",")):
        dense, ref, ours = _pipeline(), _pipeline(), _pipeline()
        _reference(path, ratio, ref)
        _rasfw(ratio, ours)
        times = {"dense": [], "reference": [], "rasfw": []}
        for pipe in (dense, ref, ours):
            pipe(STEPS)  # untimed: first-call costs
        for _ in range(repeats):
            for name, pipe in (("dense", dense), ("reference", ref), ("rasfw", ours)):
                times[name].append(_seconds(pipe))
        median = {name: statistics.median(t) for name, t in times.items()}
        rows.append((ratio, median))
        print(f"ratio {ratio}: " + ", ".join(f"{n} {s:.2f} s" for n, s in median.items()), flush=True)
    print(f"\npreset `{PRESET}`, {STEPS} steps, warm-up {WARMUP}, resets {list(RESETS)}, median of {repeats} "
          f"(alternating); {machine()}\n")  # fmt: skip
    print("| ratio | dense s | reference s | rasfw s | reference speed-up | rasfw speed-up | rasfw / reference speed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ratio, m in rows:
        print(f"| {ratio} | {m['dense']:.2f} | {m['reference']:.2f} | {m['rasfw']:.2f} | {m['dense'] / m['reference']:.2f}x "
              f"| {m['dense'] / m['rasfw']:.2f}x | {m['reference'] / m['rasfw']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if len(sys.argv) > 1 else 2)
    main(sys.argv[1], *[int(a) for a in sys.argv[2:3]], *sys.argv[3:4])
